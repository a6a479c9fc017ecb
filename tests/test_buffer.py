"""The buffer: commit, seal, deliver, prune within the quota; envelopes verify independently."""

import base64
import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.canonical import canonical
from buffer.envelope import GENESIS_PREV
from buffer.keys import SigningKeyError, load_or_create
from buffer.store import Buffer, BufferFormatError
from buffer.verify import verify
from drivers.snapshot import Snapshot
from tests.support.keys import make_signer


def records(n: int, start: int = 0) -> list[bytes]:
    return [
        canonical(
            Snapshot(f"m{i % 3}", 1_700_000_000_000 + i, "ok", {"active_power_w": i * 1.5}).record()
        )
        for i in range(start, start + n)
    ]


def open_buffer(tmp_path: Path, **kw: int) -> Buffer:
    return Buffer(tmp_path / "buffer.db", gateway="gw-1", site="site-a", **kw)


def test_sealed_envelopes_verify_with_a_stock_jcs_library_and_ed25519(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    buffer = open_buffer(tmp_path, envelope_max_records=4)
    buffer.commit("readings", records(10))
    sealed = buffer.seal_pending(signer, 1_700_000_001_000)
    assert [e.seq for e in sealed] == [1, 2, 3]
    public = Ed25519PublicKey.from_public_bytes(
        base64.b64decode((tmp_path / "signing.pub").read_text())
    )
    prev = GENESIS_PREV
    for body in buffer.envelopes():
        envelope = json.loads(body)
        sig = envelope.pop("sig")
        signed = rfc8785.dumps(envelope)  # independent of the code that signed
        public.verify(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), signed)
        assert envelope["prev"] == prev
        prev = hashlib.sha256(signed).hexdigest()
    assert sum(len(json.loads(b)["records"]) for b in buffer.envelopes()) == 10


def test_seq_and_chain_continue_across_reopen(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    buffer = open_buffer(tmp_path)
    buffer.commit("readings", records(3))
    buffer.seal_pending(signer, 1)
    buffer.close()
    buffer = open_buffer(tmp_path)
    buffer.commit("readings", records(3, 3))
    assert buffer.pending_records == 3
    buffer.seal_pending(signer, 2)
    report = verify(buffer.envelopes(), {signer.kid: signer.public})
    assert not report.problems and not report.gaps
    assert report.gateways["gw-1"].last_seq == 2


def test_undelivered_and_mark_delivered(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    buffer = open_buffer(tmp_path, envelope_max_records=1)
    buffer.commit("readings", records(5))
    buffer.seal_pending(signer, 1)
    assert [o.seq for o in buffer.undelivered(0, None, 10)] == [1, 2, 3, 4, 5]
    assert [o.seq for o in buffer.undelivered(1, 3, 10)] == [2, 3]
    buffer.mark_delivered([2, 4], 99)
    assert [o.seq for o in buffer.undelivered(0, None, 10)] == [1, 3, 5]
    stats = buffer.stats()
    assert (stats.backlog_envelopes, stats.backlog_records, stats.last_delivered_ms) == (3, 3, 99)


def test_prune_drops_delivered_first_then_oldest_undelivered_and_counts_it(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    buffer = open_buffer(tmp_path, envelope_max_records=50, quota_bytes=10 * 1024 * 1024)
    for _ in range(40):
        buffer.commit("readings", records(200))
        buffer.seal_pending(signer, 1)
    delivered = list(range(1, 41))
    buffer.mark_delivered(delivered, 1000)
    assert buffer.prune(now_ms=2000, retention_ms=10_000) == (0, 0)  # within retention and quota
    assert buffer.prune(now_ms=20_000, retention_ms=10_000)[0] == len(delivered)
    for _ in range(40):
        buffer.commit("readings", records(200))
        buffer.seal_pending(signer, 1)
    buffer.quota_bytes = buffer.used_bytes() // 2
    _pruned, dropped = buffer.prune(now_ms=20_000, retention_ms=10_000)
    stats = buffer.stats()
    assert (
        dropped > 0 and stats.dropped_envelopes == dropped and stats.dropped_records == dropped * 50
    )
    assert stats.used_bytes <= buffer.quota_bytes
    count = "SELECT (SELECT count(*) FROM envelopes), (SELECT count(*) FROM bodies)"
    envelopes, bodies = buffer.db.execute(count).fetchone()
    assert envelopes == bodies  # a pruned or dropped envelope takes its body with it
    remaining = [o.seq for o in buffer.undelivered(0, None, 10_000)]
    assert remaining == list(range(remaining[0], buffer.last_seq + 1))  # the oldest went first


def test_disk_full_drops_the_batch_counts_it_and_keeps_going(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path)
    buffer.commit("readings", records(10))
    pages = buffer.db.execute("PRAGMA page_count").fetchone()[0]
    buffer.db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: as a full disk
    assert buffer.commit("readings", records(5000)) is False
    assert buffer.stats().dropped_records == 5000
    assert buffer.pending_records == 10


def test_tampering_with_the_database_is_detected(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    buffer = open_buffer(tmp_path, envelope_max_records=2)
    buffer.commit("readings", records(6))
    buffer.seal_pending(signer, 1)
    buffer.db.execute(
        "UPDATE bodies SET body = replace(body, '\"active_power_w\":3', '\"active_power_w\":4') WHERE seq = 2"
    )
    report = verify(buffer.envelopes(), {signer.kid: signer.public})
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "bad_signature")]


def test_signing_key_is_private_and_unsafe_modes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"
    signer, created = load_or_create(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created = load_or_create(path)
    assert not created and again.kid == signer.kid
    os.chmod(path, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_or_create(path)


def test_synchronous_full_and_wal(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path)
    assert buffer.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert buffer.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (
        sqlite3.connect(tmp_path / "buffer.db").execute("PRAGMA integrity_check").fetchone()[0]
        == "ok"
    )


def test_a_buffer_in_another_layout_is_refused_by_name_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE envelopes (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    old.execute("INSERT INTO envelopes VALUES (1, x'7b7d')")
    old.commit()
    old.close()
    with pytest.raises(BufferFormatError, match=str(path)):
        Buffer(path, gateway="gw", site="s")
    assert sqlite3.connect(path).execute("SELECT count(*) FROM envelopes").fetchone() == (1,)
    fresh = Buffer(tmp_path / "new.db", gateway="gw", site="s")
    assert fresh.db.execute("PRAGMA user_version").fetchone() == (1,)
    fresh.close()
    Buffer(tmp_path / "new.db", gateway="gw", site="s").close()  # its own layout opens again
