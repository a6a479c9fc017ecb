"""Property: whatever the interleaving of commits, seals, deliveries and reopenings (a crash between
any two of them), every committed reading ends up exactly once, in order, in a verifying chain."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from buffer.canonical import canonical
from buffer.store import Buffer
from buffer.verify import verify
from tests.support.keys import make_signer

operations = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.integers(1, 30)),
        st.tuples(st.just("seal"), st.just(0)),
        st.tuples(st.just("deliver"), st.integers(1, 5)),
        st.tuples(st.just("reopen"), st.just(0)),
        st.tuples(st.just("prune"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations, st.integers(1, 7))
def test_every_committed_reading_is_sealed_once_in_order(
    ops: list[tuple[str, int]], max_records: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        signer = make_signer(tmp)

        def open_buffer() -> Buffer:
            return Buffer(tmp / "b.db", gateway="gw", site="s", envelope_max_records=max_records)

        buffer = open_buffer()
        committed: list[int] = []
        for op, n in ops:
            if op in ("commit", "commit_sealing"):
                batch = list(range(len(committed), len(committed) + n))
                records = [canonical({"device": "m", "ts": i, "values": {}}) for i in batch]
                seal_with = (signer, 1) if op == "commit_sealing" else None
                assert buffer.commit("readings", records, seal_with=seal_with)
                committed += batch
            elif op == "seal":
                buffer.seal_pending(signer, 1)
            elif op == "deliver":
                buffer.mark_delivered([o.seq for o in buffer.undelivered(0, None, n)], 5)
            elif op == "prune":
                buffer.prune(now_ms=10, retention_ms=1_000)  # within retention: nothing may go
            else:
                buffer.close()
                buffer = open_buffer()
        buffer.seal_pending(signer, 2)
        bodies = list(buffer.envelopes())
        report = verify(bodies, {signer.kid: signer.public})
        assert not report.problems and not report.gaps
        sealed = [r["ts"] for b in bodies for r in json.loads(b)["records"]]
        assert sealed == committed
        assert all(len(json.loads(b)["records"]) <= max_records for b in bodies)
        assert buffer.stats().pending_records == 0
        buffer.close()
