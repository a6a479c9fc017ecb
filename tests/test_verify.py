"""The verifier detects every tampered byte, dropped, replayed and foreign envelope."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer.canonical import canonical
from buffer.keys import load_or_create
from buffer.store import Buffer
from buffer.verify import verify
from drivers.snapshot import Snapshot


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], dict]:
    tmp = tmp_path_factory.mktemp("chain")
    signer, _ = load_or_create(tmp / "signing.key")
    buffer = Buffer(tmp / "buffer.db", gateway="gw-1", site="s", envelope_max_records=3)
    buffer.commit(
        "readings",
        [
            canonical(
                Snapshot("m1", 1_700_000_000_000 + i, "ok", {"voltage_l1_v": 230.1 + i}).record()
            )
            for i in range(15)
        ],
    )
    buffer.seal_pending(signer, 1_700_000_001_000)
    return list(buffer.envelopes()), {signer.kid: signer.public}


def test_an_intact_chain_verifies(chain: tuple[list[bytes], dict]) -> None:
    bodies, keys = chain
    report = verify(bodies, keys)
    gw = report.gateways["gw-1"]
    assert not report.problems and not report.gaps
    assert (gw.envelopes, gw.records, gw.first_seq, gw.last_seq, gw.completeness) == (
        5,
        15,
        1,
        5,
        1.0,
    )


@settings(max_examples=300)
@given(st.data())
def test_any_changed_byte_is_detected(chain: tuple[list[bytes], dict], data: st.DataObject) -> None:
    bodies, keys = chain
    which = data.draw(st.integers(0, len(bodies) - 1))
    body = bytearray(bodies[which])
    position = data.draw(st.integers(0, len(body) - 1))
    body[position] = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]))
    tampered = [*bodies[:which], bytes(body), *bodies[which + 1 :]]
    report = verify(tampered, keys)
    assert report.problems or report.gaps


def test_a_dropped_envelope_is_a_gap(chain: tuple[list[bytes], dict]) -> None:
    bodies, keys = chain
    report = verify(bodies[:2] + bodies[3:], keys)
    assert report.gateways["gw-1"].missing == [(3, 3)]
    assert report.gateways["gw-1"].completeness == 0.8


def test_a_replayed_envelope_is_counted_and_a_conflicting_one_flagged(
    chain: tuple[list[bytes], dict],
) -> None:
    bodies, keys = chain
    report = verify([*bodies, bodies[1]], keys)
    assert report.gateways["gw-1"].duplicates == 1 and not report.problems
    report = verify([*bodies, bodies[1].replace(b'"seq":2', b'"seq":3')], keys)
    assert report.problems  # re-signed content cannot be forged, so a changed copy fails


def test_an_unknown_key_is_refused(chain: tuple[list[bytes], dict], tmp_path: Path) -> None:
    bodies, _ = chain
    stranger, _ = load_or_create(tmp_path / "other.key")
    report = verify(bodies, {stranger.kid: stranger.public})
    assert {p.kind for p in report.problems} == {"unknown_key"}


def test_reordered_envelopes_from_another_chain_break_it(
    tmp_path: Path, chain: tuple[list[bytes], dict]
) -> None:
    bodies, keys = chain
    signer, _ = load_or_create(tmp_path / "signing.key")
    other = Buffer(tmp_path / "b.db", gateway="gw-1", site="s", envelope_max_records=3)
    other.commit("readings", [canonical(Snapshot("m1", 1, "ok", {}).record())] * 9)
    other.seal_pending(signer, 1)
    spliced = [*bodies[:2], list(other.envelopes())[2]]
    report = verify(spliced, {**keys, signer.kid: signer.public})
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "chain_break")]
