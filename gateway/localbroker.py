"""Start a private Mosquitto on a free loopback port (for `cgw demo` and the tests)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class LocalBroker:
    """A Mosquitto process listening on 127.0.0.1; `extra` lines go into its config."""

    def __init__(
        self,
        port: int | None = None,
        extra: str = "",
        workdir: Path | None = None,
        persistence: bool = False,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="cgw-mosquitto-"))
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + ("" if "allow_anonymous" in self.extra else "allow_anonymous true\n")
            + (
                f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 0\n"
                if self.persistence
                else "persistence false\n"
            )
            # Started by root, mosquitto would drop to user `mosquitto`, who cannot read our files.
            + f"user {getpass.getuser()}\n"
            + "log_dest stderr\n"
            "log_type error\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            f"{self.extra}\n",
            encoding="utf-8",
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: see {self.workdir / 'mosquitto.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
