"""Where edges come from: the `PulseSource` protocol and the emulated source for tests and CI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

NS_PER_S = 1_000_000_000


class PulseSourceError(Exception):
    """The source cannot deliver edges; the message says why in words for the log and records."""


class PulseSource(Protocol):
    def wait(self, timeout_s: float) -> list[int]:
        """Edges seen since the last call (monotonic ns, oldest first), waiting at most
        `timeout_s` for the first. Raises PulseSourceError if the source has failed."""
        ...

    def close(self) -> None: ...


class EmulatedPulseSource:
    """Edges at a steady `rate_hz` from its creation (0: none), plus bursts that tests `inject`.

    The schedule is computed from the start time in integer nanoseconds, so the number of edges
    by any moment is exact whatever the wait timeouts.
    """

    def __init__(self, rate_hz: float, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.period_ns = round(NS_PER_S / rate_hz) if rate_hz > 0 else None
        self._next_ns = clock() + (self.period_ns or 0)
        self._injected: list[int] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False

    def inject(self, count: int, spacing_ns: int = 0) -> None:
        """`count` extra edges from now, `spacing_ns` apart (0: all at once, like a burst)."""
        now = self.clock()
        with self._lock:
            self._injected.extend(now + i * spacing_ns for i in range(count))
        self._wake.set()

    def wait(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._closed:
                raise PulseSourceError("pulse source closed")
            edges = self._due(self.clock())
            remaining = deadline - time.monotonic()
            if edges or remaining <= 0:
                return edges
            until_next = (self._next_ns - self.clock()) / NS_PER_S if self.period_ns else remaining
            self._wake.wait(max(0.0, min(remaining, until_next)))
            self._wake.clear()

    def _due(self, now: int) -> list[int]:
        edges: list[int] = []
        if self.period_ns is not None:
            while self._next_ns <= now:
                edges.append(self._next_ns)
                self._next_ns += self.period_ns
        with self._lock:
            injected = [t for t in self._injected if t <= now]
            self._injected = [t for t in self._injected if t > now]
        return sorted(edges + injected)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
