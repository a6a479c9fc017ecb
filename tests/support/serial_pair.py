"""A pair of connected ptys made by socat, standing in for two ends of an RS-485 line."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SocatPair:
    """`a` and `b` are symlinks to the two ptys; stop() and start() again keep the same paths,
    as a USB adapter that is unplugged and plugged back in keeps its /dev name."""

    def __init__(self, directory: Path) -> None:
        self.a = directory / "ttyA"
        self.b = directory / "ttyB"
        self._log = directory / "socat.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed")
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    socat,
                    "-d",
                    "-d",
                    f"pty,raw,echo=0,link={self.a}",
                    f"pty,raw,echo=0,link={self.b}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while not (self.a.exists() and self.b.exists()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"socat did not create {self.a} and {self.b}: "
                    f"{self._log.read_text(errors='replace')[-500:]}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # socat removes its links on a clean exit; make sure a later start() sees them vanish.
        for link in (self.a, self.b):
            if link.is_symlink():
                link.unlink()


@contextmanager
def serial_pair() -> Iterator[SocatPair]:
    """Start socat with two linked ptys in a fresh temporary folder; stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="cgw-socat-") as folder:
        pair = SocatPair(Path(folder))
        pair.start()
        try:
            yield pair
        finally:
            pair.stop()
