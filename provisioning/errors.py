"""Why provisioning stopped: one message for IT and a distinct exit status per kind of refusal."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit statuses of `cgw provision` (docs/PROVISIONING.md lists them with their fixes)."""

    OK = 0
    USAGE = 2  # argparse's own; also options the inventory row needs but were not given
    SERIAL_UNKNOWN = 3  # this board's serial is not in the inventory (or cannot be read)
    INVENTORY = 4  # the inventory or a site template cannot be read or is malformed
    CONFIG_INVALID = 5  # the config made from the inventory and template does not validate
    UNSAFE_KEY = 6  # a private key is readable by others, or unusable
    OTHER_GATEWAY = 7  # the device holds the config or certificate of another gateway id
    PLAINTEXT = 8  # the broker URL has no TLS and --allow-plaintext was not given
    BAD_BUNDLE = 9  # the certificate bundle (or an installed certificate) is not valid for the key
    SYSTEM = 10  # a system step failed: not root, useradd, a file that cannot be written


class ProvisionError(Exception):
    """A state provisioning refuses or cannot fix; `status` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = int(status)
