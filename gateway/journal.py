"""Where log lines go: journald, with structured fields, when systemd connected stderr to the
journal; stderr otherwise.

A log call names what it is about with `extra={"device": ..., "bus": ..., "seq": ...}`; in the
journal these become the fields DEVICE, BUS and SEQ (`journalctl -u cgw DEVICE=incomer`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

IDENTIFIER = "cgw"
FIELDS = {"device": "DEVICE", "bus": "BUS", "seq": "SEQ"}
STDERR_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def stderr_is_journal(environ: Mapping[str, str] = os.environ, stderr: TextIO = sys.stderr) -> bool:
    """systemd sets JOURNAL_STREAM to the device:inode of the stream it connected to journald
    (systemd.exec(5)). Comparing it with stderr's tells a service whose output goes to the journal
    from one whose output was redirected (StandardError=file:...) or a shell started from it."""
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        status = os.fstat(stderr.fileno())
    except (ValueError, OSError):
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


def send_fields(message: str, /, **fields: object) -> None:
    """JournalHandler's sender: it passes every LogRecord attribute along (`message` among them),
    of which the journal keeps only upper-case names. Keep those; the known extras become fields."""
    from systemd import journal

    kept = {k: v for k, v in fields.items() if k.isupper() and k != "EXCEPTION_INFO"}
    kept.update((FIELDS[k], v) for k, v in fields.items() if k in FIELDS and v is not None)
    journal.send(message, **kept)


def journal_handler() -> logging.Handler:
    from systemd.journal import JournalHandler

    handler: logging.Handler = JournalHandler(
        sender_function=send_fields, SYSLOG_IDENTIFIER=IDENTIFIER
    )
    return handler


def configure(level: int) -> None:
    """Log to the journal when running as a systemd service, else to stderr."""
    if stderr_is_journal():
        logging.basicConfig(level=level, format="%(message)s", handlers=[journal_handler()])
    else:
        logging.basicConfig(level=level, format=STDERR_FORMAT, stream=sys.stderr)
