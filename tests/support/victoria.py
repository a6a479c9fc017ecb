"""A real VictoriaMetrics (Debian's `victoria-metrics`) as the InfluxDB v2 write API to test against,
with what it stored read back through its export API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from gateway.localbroker import free_port

Labels = tuple[tuple[str, str], ...]  # sorted (name, value), the metric name as `__name__`
Sample = tuple[Labels, int]  # a series and a timestamp (ms)


def victoria_binary() -> str | None:
    return shutil.which("victoria-metrics") or (
        "/usr/bin/victoria-metrics" if Path("/usr/bin/victoria-metrics").exists() else None
    )


class VictoriaMetrics:
    """One single-node VictoriaMetrics on a free loopback port, its data kept across restarts.

    Without `dedup` every sample written is kept, duplicates included: what the tests count.
    With it (-dedup.minScrapeInterval=1ms) samples of one series with one timestamp are merged,
    as a production server should be run (docs/INFLUXDB.md)."""

    def __init__(self, workdir: Path, dedup: bool = False) -> None:
        binary = victoria_binary()
        if binary is None:
            raise FileNotFoundError(
                "victoria-metrics is not installed: ./dev test installs it (Debian package)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.dedup = dedup
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> VictoriaMetrics:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]
        if self.dedup:
            command.append("-dedup.minScrapeInterval=1ms")
        log = (self.workdir / "victoria.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited: see {self.workdir / 'victoria.log'}")
            try:
                if self._get("/health") == b"OK":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"victoria-metrics did not answer on port {self.port}")

    def stop(self) -> None:
        """A clean stop: what it accepted is flushed to disk first."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> VictoriaMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str, **params: str) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            return bytes(response.read())

    def export(self, match: str = '{__name__=~"cgw_.*"}') -> dict[Labels, list[tuple[int, float]]]:
        """Every stored sample of the matching series, after making fresh data searchable."""
        self._get("/internal/force_flush")
        series: dict[Labels, list[tuple[int, float]]] = {}
        for row in self._get("/api/v1/export", **{"match[]": match}).splitlines():
            item = json.loads(row)
            labels = tuple(sorted(item["metric"].items()))
            points = series.setdefault(labels, [])
            points.extend(zip(item["timestamps"], item["values"], strict=True))
        return series

    def samples(self, metric: str) -> Counter[Sample]:
        """How many times each (series, timestamp) of `metric` is stored."""
        return Counter(
            (labels, ts)
            for labels, points in self.export(f'{{__name__="{metric}"}}').items()
            for ts, _ in points
        )


def labels(metric: str, **tags: object) -> Labels:
    return tuple(sorted({"__name__": metric, **{k: str(v) for k, v in tags.items()}}.items()))
