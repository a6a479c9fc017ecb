"""The InfluxDB sink: envelopes written as line protocol to an InfluxDB 2.x write API, alongside
MQTT and independent of it (docs/INFLUXDB.md).

Its cursor is the highest envelope seq written, every lower one included; it lives in the
buffer's `state` as `influx_seq`, apart from MQTT's acknowledgements, so either uplink can be down
without holding up the other. Envelopes are written in seq order, whole, and the cursor is
committed after the server answered 204 and before the next batch goes out: a restart resumes at
the cursor. A crash between the answer and the commit writes that one batch again, which InfluxDB
takes as the same points (same series and timestamp: overwritten, not doubled).

Threads: as with MQTT, only the main thread touches the database. `pump` (main thread) commits the
cursor of a finished batch and hands the next batch of stored bodies to the sink's thread, which
encodes them and does the HTTP, retrying with backoff until it succeeds. The main loop never waits
for the network.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass

from buffer.store import Buffer, is_disk_full
from gateway.config import InfluxConfig
from gateway.influxhttp import HttpWriter, WriteError, Writer
from gateway.lineprotocol import envelope_lines

log = logging.getLogger("cgw.influx")

NAME = "influx"  # the buffer's cursor is `influx_seq`, its drop counters `influx_dropped_*`
CHUNK_LINES = 5000  # points per HTTP request
LOG_EVERY_S = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Batch:
    after: int  # the cursor it was read above
    last_seq: int
    bodies: list[bytes]
    more: bool  # more envelopes were stored above it when it was read


@dataclass(frozen=True)
class Outcome:
    batch: Batch
    points: int
    rejected: int  # points the server refused for good (HTTP 400, 422): not sent again
    refusal: str | None  # the server's answer when it refused some


@dataclass
class SinkState:
    """Written by the sink's thread, read for the status file."""

    last_write_ms: int | None = None
    last_error: str | None = None
    failing_since_ms: int | None = None
    failed_attempts: int = 0
    points_written: int = 0
    rejected_points: int = 0
    skipped_records: int = 0


class InfluxSink:
    def __init__(
        self, settings: InfluxConfig, buffer: Buffer, writer: Writer | None = None
    ) -> None:
        self.settings = settings
        self.cursor = buffer.track(NAME)
        self.writer = writer or HttpWriter(settings)
        self.state = SinkState()
        self._todo: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._outstanding: Batch | None = None
        self._next_batch = 0.0
        self._draining = False  # shutting down: no waiting for `flush_interval_s`
        self._stopping = threading.Event()
        self._next_log = 0.0
        self._thread = threading.Thread(target=self._run, name="influx", daemon=True)

    # -- main thread ----------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "writing to InfluxDB %s bucket %s from seq %d",
            self.settings.url,
            self.settings.bucket,
            self.cursor + 1,
        )
        self._thread.start()

    def pump(self, buffer: Buffer) -> int:
        """Commit the cursor of a written batch, hand over the next. Returns envelopes written."""
        written = 0
        while True:
            try:
                outcome = self._done.get_nowait()
            except queue.Empty:
                break
            written += self._finished(buffer, outcome)
        now = time.monotonic()
        if (
            self._outstanding is None
            and buffer.last_seq > self.cursor
            and (now >= self._next_batch or self._draining)
        ):
            self._next_batch = now + self.settings.flush_interval_s
            self._hand_over(buffer)
        return written

    def _finished(self, buffer: Buffer, outcome: Outcome) -> int:
        batch = outcome.batch
        self.cursor = batch.last_seq
        self._outstanding = None
        if batch.more:
            self._next_batch = 0.0  # a backlog: the next batch at once
        try:
            buffer.set_cursor(NAME, batch.last_seq)
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                raise
            # Kept in memory and saved with a later batch; a crash before re-sends (harmless).
        if outcome.rejected:
            log.error(
                "InfluxDB refused %d points of seq %d-%d for good (%s); they are not sent again",
                outcome.rejected,
                batch.after + 1,
                batch.last_seq,
                outcome.refusal,
            )
        return len(batch.bodies)

    def _hand_over(self, buffer: Buffer) -> None:
        items = buffer.after(self.cursor, self.settings.batch_records)
        first = items[0].seq if items else buffer.last_seq + 1
        if first > self.cursor + 1:
            log.warning(
                "envelopes seq %d-%d left the buffer (quota or full disk) before they were written "
                "to InfluxDB",
                self.cursor + 1,
                first - 1,
            )
        if not items:
            buffer.set_cursor(NAME, buffer.last_seq)
            self.cursor = buffer.last_seq
            return
        last = items[-1].seq
        batch = Batch(self.cursor, last, [i.body for i in items], more=last < buffer.last_seq)
        self._outstanding = batch
        self._todo.put(batch)

    def flush(self, buffer: Buffer, timeout_s: float) -> None:
        """At shutdown: write what is stored while InfluxDB answers, for at most `timeout_s`."""
        self._draining = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.state.failing_since_ms is None:
            self.pump(buffer)
            if self._outstanding is None and self.cursor >= buffer.last_seq:
                return
            time.sleep(0.02)

    def stop(self, buffer: Buffer, timeout_s: float = 5.0) -> None:
        """Stop the thread, keeping the cursor of a batch it finished meanwhile; a batch not
        yet written is written again after the restart."""
        self._stopping.set()
        self._todo.put(None)
        self._thread.join(timeout_s)
        while True:
            try:
                self._finished(buffer, self._done.get_nowait())
            except queue.Empty:
                break
        self.writer.close()

    def status(self, buffer: Buffer) -> dict[str, object]:
        envelopes, records = buffer.backlog_after(self.cursor)
        state = self.state
        return {
            "url": self.settings.url,
            "bucket": self.settings.bucket,
            "cursor_seq": self.cursor,
            "backlog_envelopes": envelopes,
            "backlog_records": records,
            "last_write_ms": state.last_write_ms,
            "last_error": state.last_error,
            "failing_since_ms": state.failing_since_ms,
            "failed_attempts": state.failed_attempts,
            "points_written": state.points_written,
            "rejected_points": state.rejected_points,
            "skipped_records": state.skipped_records,
            "dropped_envelopes": buffer.state_int(f"{NAME}_dropped_envelopes"),
            "dropped_records": buffer.state_int(f"{NAME}_dropped_records"),
        }

    # -- the sink's thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._todo.get()
            if batch is None:
                return
            outcome = self._deliver(batch)
            if outcome is None:
                return
            self._done.put(outcome)

    def _deliver(self, batch: Batch) -> Outcome | None:
        """Write a batch in chunks until all are written or refused; None when stopping first.
        A failed chunk is tried again alone: the chunks before it are not sent twice."""
        lines: list[bytes] = []
        skipped = 0
        for body in batch.bodies:
            points, not_written = envelope_lines(body)
            lines.extend(points)
            skipped += not_written
        if skipped:
            self.state.skipped_records += skipped
            log.warning(
                "%d records of seq %d-%d have no line protocol form: not written to InfluxDB",
                skipped,
                batch.after + 1,
                batch.last_seq,
            )
        sent = rejected = 0
        refusal = None
        chunk = CHUNK_LINES
        delay = self.settings.retry_min_s
        while sent < len(lines):
            part = lines[sent : sent + chunk]
            try:
                self.writer.write(part)
            except WriteError as exc:
                if exc.too_large and chunk > 1:
                    chunk = max(1, chunk // 2)
                    continue
                if not exc.retry:
                    refusal = str(exc)
                    rejected += len(part)
                    self.state.rejected_points += len(part)
                    sent += len(part)
                    continue
                self._failed(str(exc))
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            sent += len(part)
            self._succeeded(len(part))
        return Outcome(batch, len(lines) - rejected, rejected, refusal)

    def _failed(self, message: str) -> None:
        state = self.state
        state.failed_attempts += 1
        state.last_error = message
        now = time.monotonic()
        if state.failing_since_ms is None:
            state.failing_since_ms = now_ms()
            self._next_log = now + LOG_EVERY_S
            log.error("InfluxDB write failed: %s; retrying, data stays buffered", message)
        elif now >= self._next_log:
            self._next_log = now + LOG_EVERY_S
            log.error(
                "InfluxDB writes failing for %d s (%d attempts): %s",
                (now_ms() - state.failing_since_ms) // 1000,
                state.failed_attempts,
                message,
            )

    def _succeeded(self, points: int) -> None:
        state = self.state
        if state.failing_since_ms is not None:
            log.info(
                "InfluxDB writes resumed after %d s",
                (now_ms() - state.failing_since_ms) // 1000,
            )
            state.failing_since_ms = None
            state.last_error = None
        state.points_written += points
        state.last_write_ms = now_ms()
