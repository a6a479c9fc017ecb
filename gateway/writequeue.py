"""Records stamped and accounted, waiting in memory for their transaction while the database is
locked by another process. Bounded: past the limit the oldest writes are dropped (and counted by
the caller), so a database that stays locked cannot exhaust the gateway's memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Write:
    stream: str
    records: list[bytes]
    totals: dict[str, int] = field(default_factory=dict)  # pulse totals saved with the records


class WriteQueue:
    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.records = 0  # records waiting, over all writes
        self._writes: deque[Write] = deque()

    def __bool__(self) -> bool:
        return bool(self._writes)

    def put(self, write: Write) -> int:
        """Queue a write; returns the records dropped to stay within the bound (oldest first, the
        newest write is always kept)."""
        self._writes.append(write)
        self.records += len(write.records)
        dropped = 0
        while self.records > self.max_records and len(self._writes) > 1:
            dropped += self._remove()
        return dropped

    def first(self) -> Write:
        return self._writes[0]

    def done(self) -> None:
        """The first write was committed."""
        self._remove()

    def _remove(self) -> int:
        removed = len(self._writes.popleft().records)
        self.records -= removed
        return removed
