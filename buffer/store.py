"""The local buffer: SQLite in WAL mode holding committed readings and sealed envelopes.

Durability: `synchronous=FULL`. In WAL mode NORMAL already survives a crash of the process (kill -9),
but a power cut may lose the last commits; FULL syncs the WAL on every commit, so a reading that was
committed survives a power cut too. It costs one fsync per commit, and the daemon commits once per
`commit_interval_s` (default 1 s), whatever the number of meters.

Rows move pending -> envelopes (sealed, signed, chained) -> delivered -> pruned. Delivered
envelopes are pruned after the retention; undelivered ones only when the quota is still exceeded,
oldest first, and every such drop is counted in `state` and reported.

A second consumer with its own cursor (the InfluxDB sink, `track`) keeps what it has not taken yet
through pruning: only envelopes both delivered and at or below its cursor are done. Over the quota
the oldest data still goes first, whoever needs it, and is counted for each consumer that did.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from buffer.envelope import GENESIS_PREV, Sealed, seal
from buffer.keys import Signer
from buffer.space import SpaceGuard

log = logging.getLogger("cgw.buffer")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    record BLOB NOT NULL
);
-- The body lives apart from the row that is updated on delivery: marking an envelope delivered
-- then rewrites a few bytes, not the whole (often 100 KB+) body. Less to write on an SD card.
CREATE TABLE IF NOT EXISTS envelopes (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    delivered_ms INTEGER
);
CREATE TABLE IF NOT EXISTS bodies (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS envelope_gone AFTER DELETE ON envelopes
BEGIN
    DELETE FROM bodies WHERE seq = old.seq;
END;
CREATE INDEX IF NOT EXISTS envelopes_undelivered ON envelopes (seq) WHERE delivered_ms IS NULL;
CREATE INDEX IF NOT EXISTS envelopes_delivered ON envelopes (delivered_ms) WHERE delivered_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value
);
"""

# PRAGMA user_version of a buffer in this layout (bodies apart from envelopes).
FORMAT = 1
WAL_CHECKPOINT_PAGES = 256
WAL_LIMIT_BYTES = 1024 * 1024
_COUNTERS = ("dropped_records", "dropped_envelopes", "failed_commits")


@dataclass(frozen=True)
class Outgoing:
    seq: int
    stream: str
    body: bytes


@dataclass(frozen=True)
class Stats:
    last_seq: int
    pending_records: int
    backlog_envelopes: int
    backlog_records: int
    oldest_undelivered_ms: int | None
    last_delivered_ms: int | None
    dropped_records: int
    dropped_envelopes: int
    failed_commits: int
    used_bytes: int
    quota_bytes: int


class BufferFormatError(Exception):
    """The database file holds a buffer in a layout this version does not read."""


def is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


class Buffer:
    def __init__(
        self,
        path: Path,
        *,
        gateway: str,
        site: str,
        envelope_max_records: int = 500,
        quota_bytes: int = 1 << 30,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.gateway = gateway
        self.site = site
        self.envelope_max_records = envelope_max_records
        self.quota_bytes = quota_bytes
        self.space = SpaceGuard(path)
        if read_only:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            # A short WAL, truncated after each checkpoint: bounded disk, and room to recover.
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self._check_format()
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version={FORMAT}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.last_seq = self._counter("last_seq")
        self.last_hash = str(self._state("last_hash", GENESIS_PREV))
        self.pending_records = self.db.execute("SELECT count(*) FROM pending").fetchone()[0]
        self._unsaved: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.tracked: str | None = None  # a second consumer's name: its cursor is `{name}_seq`

    def _check_format(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(envelopes)")}
        # Version 0 with envelopes that keep their body is the layout of early development builds.
        if version > FORMAT or (version == 0 and "body" in columns):
            raise BufferFormatError(
                f"{self.path} holds a buffer in another layout (format {version}, this cgw "
                f"reads {FORMAT}); move it aside to start a new buffer (sqlite3 still reads it)"
            )

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:  # SQLite has already rolled back after e.g. SQLITE_FULL
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _state(self, key: str, default: object) -> object:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def _counter(self, key: str) -> int:
        return int(self._state(key, 0))  # type: ignore[call-overload]

    def _set_state(self, db: sqlite3.Connection, **values: object) -> None:
        db.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            values.items(),
        )

    def _add_counter(self, db: sqlite3.Connection, key: str, amount: int) -> None:
        db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (key, amount),
        )

    def state_int(self, key: str) -> int:
        """An integer saved in `state` by `commit` (0 if never saved)."""
        return self._counter(key)

    def track(self, name: str) -> int:
        """Keep envelopes above the cursor `{name}_seq` through pruning (a second consumer, e.g.
        the InfluxDB sink). A new cursor starts below the oldest envelope still stored: what was
        pruned before the consumer existed is not its loss. Returns the cursor."""
        key = f"{name}_seq"
        if self._state(key, None) is None:
            oldest = self.db.execute("SELECT min(seq) FROM envelopes").fetchone()[0]
            with self._transaction() as db:
                self._set_state(db, **{key: self.last_seq if oldest is None else oldest - 1})
        self.tracked = name
        return self._counter(key)

    def set_cursor(self, name: str, seq: int) -> None:
        """Save a consumer's cursor: every envelope up to `seq` is taken."""
        with self._transaction() as db:
            self._set_state(db, **{f"{name}_seq": seq})

    def after(self, seq: int, max_records: int) -> list[Outgoing]:
        """Stored envelopes above `seq`, delivered or not, in seq order: whole envelopes of at most
        `max_records` records together, but at least one."""
        rows = self.db.execute(
            "SELECT seq, records FROM envelopes WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, max(1, max_records)),
        ).fetchall()
        if not rows:
            return []
        last, total = rows[0][0], 0
        for row_seq, records in rows:
            total += records
            if total > max_records and row_seq != rows[0][0]:
                break
            last = row_seq
        found = self.db.execute(
            "SELECT seq, stream, body FROM envelopes JOIN bodies USING (seq) "
            "WHERE seq > ? AND seq <= ? ORDER BY seq",
            (seq, last),
        ).fetchall()
        return [Outgoing(s, stream, bytes(body)) for s, stream, body in found]

    def backlog_after(self, seq: int) -> tuple[int, int]:
        """(envelopes, records) stored above `seq`."""
        envelopes, records = self.db.execute(
            "SELECT count(*), coalesce(sum(records), 0) FROM envelopes WHERE seq > ?", (seq,)
        ).fetchone()
        return int(envelopes), int(records)

    def _done(self) -> str:
        """SQL condition of envelopes no consumer needs any more."""
        if self.tracked is None:
            return "delivered_ms IS NOT NULL"
        cursor = self._counter(f"{self.tracked}_seq")
        return f"delivered_ms IS NOT NULL AND seq <= {cursor:d}"

    def count_lost(self, records: int) -> None:
        """Count records that never reached the buffer (the daemon had to drop them from memory):
        reported as dropped_records, saved with the next transaction."""
        self._unsaved["dropped_records"] += records

    def commit(
        self,
        stream: str,
        records: Sequence[bytes],
        state: Mapping[str, int] | None = None,
        seal_with: tuple[Signer, int] | None = None,
    ) -> bool:
        """Commit canonical records in one transaction, with `state` values that must be saved
        exactly when the records are (pulse totals). On a full disk neither is saved: the batch is
        counted as dropped and False returned; polling goes on, and `make_room` frees space.

        With `seal_with` (signer, now_ms) and nothing pending, whole envelopes' worth of records
        are sealed in the same transaction instead of passing through `pending`: half the writes
        for large poll cycles. The rest waits in `pending` as usual."""
        if not records:
            return True
        size = self.envelope_max_records
        direct = len(records) // size * size if seal_with and self.pending_records == 0 else 0
        sealed: list[Sealed] = []
        try:
            with self._transaction() as db:
                if seal_with and direct:
                    chunks = ((stream, list(records[i : i + size])) for i in range(0, direct, size))
                    sealed = self._seal(db, chunks, *seal_with)
                db.executemany(
                    "INSERT INTO pending (stream, record) VALUES (?, ?)",
                    ((stream, r) for r in records[direct:]),
                )
                if state:
                    self._set_state(db, **state)
                unsaved = dict(self._unsaved)
                for key, amount in unsaved.items():
                    self._add_counter(db, key, amount)
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                raise
            # Counted in memory until a transaction can carry the count to disk again.
            self._unsaved["dropped_records"] += len(records)
            self._unsaved["failed_commits"] += 1
            return False
        for key, amount in unsaved.items():
            self._unsaved[key] -= amount
        self._chain_to(sealed)
        self.pending_records += len(records) - direct
        return True

    def commit_with(
        self, work: Callable[[sqlite3.Connection], Mapping[str, Sequence[bytes]]]
    ) -> bool:
        """Run `work` in a transaction and commit the records it returns (stream -> records) in
        the same one: derived results and the state they were derived from are saved together or
        not at all. On a full disk nothing is saved and False is returned."""
        try:
            with self._transaction() as db:
                streams = work(db)
                db.executemany(
                    "INSERT INTO pending (stream, record) VALUES (?, ?)",
                    ((stream, r) for stream, records in streams.items() for r in records),
                )
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                raise
            self._unsaved["failed_commits"] += 1
            return False
        self.pending_records += sum(len(records) for records in streams.values())
        return True

    def make_room(self) -> int:
        """The disk is full: give the WAL's space back and drop the oldest undelivered data until
        a tenth of the buffer is free for new readings. Returns envelopes dropped."""
        self.space.release()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with self._transaction() as db:
            db.execute(f"DELETE FROM envelopes WHERE {self._done()}")
        return self._drop_oldest_until(self.used_bytes() * 9 // 10, "on a full disk")

    def seal_pending(self, signer: Signer, now_ms: int) -> list[Sealed]:
        """Seal every pending record into signed envelopes of at most `envelope_max_records`."""
        if self.pending_records == 0:
            return []
        with self._transaction() as db:
            rows = db.execute("SELECT id, stream, record FROM pending ORDER BY id").fetchall()
            sealed = self._seal(db, _batches(rows, self.envelope_max_records), signer, now_ms)
            db.execute("DELETE FROM pending WHERE id <= ?", (rows[-1][0],))
        self._chain_to(sealed)
        self.pending_records = 0
        return sealed

    def _seal(
        self,
        db: sqlite3.Connection,
        batches: Iterable[tuple[str, list[bytes]]],
        signer: Signer,
        now_ms: int,
    ) -> list[Sealed]:
        """Sign `batches` into envelopes continuing the chain, inside the caller's transaction."""
        seq, prev = self.last_seq, self.last_hash
        sealed: list[Sealed] = []
        rows = []
        for stream, records in batches:
            seq += 1
            envelope = seal(
                signer,
                gateway=self.gateway,
                site=self.site,
                stream=stream,
                seq=seq,
                prev=prev,
                created_ms=now_ms,
                records=records,
            )
            prev = envelope.chain_hash
            sealed.append(envelope)
            rows.append((seq, stream, now_ms, len(records)))
        db.executemany(
            "INSERT INTO envelopes (seq, stream, created_ms, records) VALUES (?, ?, ?, ?)", rows
        )
        db.executemany(
            "INSERT INTO bodies (seq, body) VALUES (?, ?)", ((e.seq, e.body) for e in sealed)
        )
        if sealed:
            self._set_state(db, last_seq=seq, last_hash=prev)
        return sealed

    def _chain_to(self, sealed: list[Sealed]) -> None:
        """After the transaction that stored `sealed` committed: they are the chain's end."""
        if sealed:
            self.last_seq, self.last_hash = sealed[-1].seq, sealed[-1].chain_hash

    def undelivered(self, after_seq: int, up_to_seq: int | None, limit: int) -> list[Outgoing]:
        """Undelivered envelopes with after_seq < seq <= up_to_seq (no upper bound if None)."""
        rows = self.db.execute(
            "SELECT seq, stream, body FROM envelopes JOIN bodies USING (seq) "
            "WHERE delivered_ms IS NULL AND seq > ? "
            "AND seq <= ? ORDER BY seq LIMIT ?",
            (after_seq, self.last_seq if up_to_seq is None else up_to_seq, limit),
        ).fetchall()
        return [Outgoing(seq, stream, bytes(body)) for seq, stream, body in rows]

    def mark_delivered(self, seqs: Iterable[int], now_ms: int) -> None:
        batch = [(now_ms, s) for s in seqs]
        if not batch:
            return
        with self._transaction() as db:
            db.executemany("UPDATE envelopes SET delivered_ms = ? WHERE seq = ?", batch)
            self._set_state(db, last_delivered_ms=now_ms)

    def mark_undelivered(self, first_seq: int, last_seq: int) -> list[int]:
        """Send these envelopes again (the platform asks to fill a gap): the stored ones in the
        range are marked undelivered. Returns the seqs still stored in the range."""
        with self._transaction() as db:
            db.execute(
                "UPDATE envelopes SET delivered_ms = NULL WHERE seq BETWEEN ? AND ?",
                (first_seq, last_seq),
            )
            rows = db.execute(
                "SELECT seq FROM envelopes WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (first_seq, last_seq),
            ).fetchall()
        return [seq for (seq,) in rows]

    def used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def prune(self, now_ms: int, retention_ms: int) -> tuple[int, int]:
        """Delete delivered envelopes past retention, then, while over quota, the oldest
        undelivered ones. Returns (delivered pruned, undelivered envelopes dropped)."""
        with self._transaction() as db:
            pruned = db.execute(
                f"DELETE FROM envelopes WHERE {self._done()} AND delivered_ms < ?",
                (now_ms - retention_ms,),
            ).rowcount
        # The filesystem may hold less than the quota: keep a reserve's worth free beside it.
        room = self.used_bytes() + self.space.free_bytes() - self.space.reserve_bytes
        limit = min(self.quota_bytes, max(room, 0))
        if self.used_bytes() <= limit:
            self.space.ensure_reserve()
            return pruned, 0
        # Over quota even so: delivered data goes first whatever its age, then the oldest backlog.
        with self._transaction() as db:
            pruned += db.execute(f"DELETE FROM envelopes WHERE {self._done()}").rowcount
        why = (
            f"over its quota of {self.quota_bytes} bytes"
            if limit == self.quota_bytes
            else "short of disk space"
        )
        dropped = self._drop_oldest_until(limit, why)
        self.space.ensure_reserve()
        return pruned, dropped

    def _drop_oldest_until(self, limit_bytes: int, why: str) -> int:
        """Drop the oldest envelopes some consumer still needs (the `_done` ones are gone by
        now), counting for each consumer what it lost. Returns the envelopes MQTT lost."""
        dropped = 0
        tracked = self.tracked
        cursor = 0 if tracked is None else self._counter(f"{tracked}_seq")
        which = "delivered_ms IS NULL" if tracked is None else f"NOT ({self._done()})"
        while self.used_bytes() > limit_bytes:
            with self._transaction() as db:
                rows = db.execute(
                    f"SELECT seq, records, delivered_ms IS NULL FROM envelopes WHERE {which} "
                    "ORDER BY seq LIMIT 64"
                ).fetchall()
                if not rows:
                    break
                db.execute(f"DELETE FROM envelopes WHERE {which} AND seq <= ?", (rows[-1][0],))
                lost = [n for _, n, undelivered in rows if undelivered]
                self._add_counter(db, "dropped_envelopes", len(lost))
                self._add_counter(db, "dropped_records", sum(lost))
                self._set_state(db, last_dropped_seq=rows[-1][0])
                missed = [n for seq, n, _ in rows if seq > cursor]
                if tracked is not None:
                    self._add_counter(db, f"{tracked}_dropped_envelopes", len(missed))
                    self._add_counter(db, f"{tracked}_dropped_records", sum(missed))
            dropped += len(lost)
            span = (why, rows[0][0], rows[-1][0])
            if tracked is None:
                log.warning("buffer %s: dropped undelivered envelopes seq %d-%d", *span)
            else:
                log.warning(
                    "buffer %s: dropped envelopes seq %d-%d (%d undelivered over MQTT, "
                    "%d not yet taken by %s)",
                    *span,
                    len(lost),
                    len(missed),
                    tracked,
                )
        return dropped

    def stats(self) -> Stats:
        backlog, records, oldest = self.db.execute(
            "SELECT count(*), coalesce(sum(records), 0), min(created_ms) FROM envelopes "
            "WHERE delivered_ms IS NULL"
        ).fetchone()
        pending = self.db.execute("SELECT count(*) FROM pending").fetchone()[0]
        return Stats(
            last_seq=self._counter("last_seq"),
            pending_records=pending,
            backlog_envelopes=backlog,
            backlog_records=records,
            oldest_undelivered_ms=oldest,
            last_delivered_ms=self._counter("last_delivered_ms") or None,
            used_bytes=self.used_bytes(),
            quota_bytes=self.quota_bytes,
            **{k: self._counter(k) + self._unsaved[k] for k in _COUNTERS},
        )

    def envelopes(self) -> Iterator[bytes]:
        """Every stored envelope body in seq order (for `cgw verify`)."""
        for (body,) in self.db.execute("SELECT body FROM bodies ORDER BY seq"):
            yield body.encode() if isinstance(body, str) else bytes(body)


def _batches(rows: list[tuple[int, str, bytes]], size: int) -> Iterator[tuple[str, list[bytes]]]:
    """Consecutive runs of one stream, cut at `size` records."""
    stream: str | None = None
    batch: list[bytes] = []
    for _, row_stream, record in rows:
        if batch and (row_stream != stream or len(batch) >= size):
            assert stream is not None
            yield stream, batch
            batch = []
        stream = row_stream
        batch.append(bytes(record))
    if batch and stream is not None:
        yield stream, batch
