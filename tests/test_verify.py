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


def test_an_envelope_on_another_gateways_topic_is_refused(chain: tuple[list[bytes], dict]) -> None:
    from buffer.verify import Verifier

    bodies, keys = chain
    verifier = Verifier(keys)
    assert verifier.add(bodies[0], "cgw/v1/s/gw-1/readings") is None
    problem = verifier.add(bodies[1], "cgw/v1/s/gw-2/readings")
    assert problem is not None and problem.kind == "wrong_topic"
    assert verifier.add(bodies[2], "cgw/v1/s/gw-1/alarms").kind == "wrong_topic"  # type: ignore[union-attr]


def test_a_key_vouches_only_for_the_gateway_it_is_registered_for(
    chain: tuple[list[bytes], dict],
) -> None:
    from buffer.verify import Verifier

    bodies, keys = chain
    (kid,) = keys
    assert Verifier(keys, {kid: "gw-1"}).add(bodies[0]) is None
    problem = Verifier(keys, {kid: "gw-2"}).add(bodies[0])
    assert problem is not None and problem.kind == "wrong_key"


def test_devices_are_counted_against_their_poll_interval(chain: tuple[list[bytes], dict]) -> None:
    from buffer.verify import Verifier

    bodies, keys = chain
    verifier = Verifier(keys)
    for body in bodies[:2] + bodies[3:]:  # 12 of the 15 readings, one a millisecond
        verifier.add(body)
    device = verifier.report().gateways["gw-1"].devices["m1"]
    assert (device.readings, device.ok, device.expected) == (12, 12, None)
    verifier.add_meta(b'{"gateway":"gw-1","devices":[{"id":"m1","interval_s":0.001}]}')
    device = verifier.report().gateways["gw-1"].devices["m1"]
    assert (device.expected, device.completeness) == (15, 0.8)
    assert device.as_dict()["meets_required"] is False


def test_an_envelope_with_a_member_added_within_v1_still_verifies(tmp_path: Path) -> None:
    """A later v1 gateway may add top-level members, even one sorting between `sig` and `site`."""
    import base64
    import json

    from buffer.verify import Verifier

    signer, _ = load_or_create(tmp_path / "signing.key")
    unsigned = {
        "v": 1, "gateway": "gw-1", "site": "s", "stream": "readings", "seq": 1,
        "prev": "0" * 64, "kid": signer.kid, "created": 1, "signer_hint": "tpm",
        "records": [{"device": "m1", "quality": "ok", "ts": 1, "values": {}}],
    }  # fmt: skip
    sig = base64.urlsafe_b64encode(signer.sign(canonical(unsigned))).decode().rstrip("=")
    body = canonical({**unsigned, "sig": sig})
    assert body.index(b'"sig"') < body.index(b'"signer_hint"') < body.index(b'"site"')
    verifier = Verifier({signer.kid: signer.public})
    assert verifier.add(body) is None
    respaced = json.dumps(json.loads(body)).encode()  # same content, not JCS
    assert verifier.add(respaced).kind == "not_canonical"  # type: ignore[union-attr]


def test_another_spelling_of_the_signature_is_refused(chain: tuple[list[bytes], dict]) -> None:
    """base64url's last character carries two unused bits: a decoder that ignores them would take
    other bytes for the same envelope (found by hil_tests/test_fuzz_inputs.py)."""
    import json

    from buffer.canonical import canonical as jcs

    bodies, keys = chain
    envelope = json.loads(bodies[0])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(envelope["sig"][-1])
    respelt = envelope["sig"][:-1] + alphabet[last ^ 1]  # the same 64 bytes, decoded loosely
    problems = verify([jcs({**envelope, "sig": respelt})], keys).problems
    assert [p.kind for p in problems] == ["bad_signature"]
