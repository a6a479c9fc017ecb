"""Fuzzing what arrives from people and the network: the config and profile loaders, the downlink
command parser, the envelope verifier. Every outcome is either accepted or refused with a reason
a person can act on (a key, a reason code, a problem kind); no other exception escapes."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buffer.canonical import canonical
from buffer.command import Command, Rejection, check_command, sign_command
from buffer.envelope import GENESIS_PREV, seal
from buffer.keys import Signer, load_or_create
from buffer.verify import Verifier
from drivers.profile import ProfileError, profile_from_mapping, shipped_profiles
from drivers.snapshot import Snapshot
from gateway.config import ConfigError, loads
from hil_tests.conftest import size

EXAMPLE = Path(__file__).resolve().parent.parent / "gateway" / "examples" / "gateway.toml"
PROFILES = Path(__file__).resolve().parent.parent / "drivers" / "profiles"
REASONS = {
    "malformed", "unsigned", "wrong_target", "unknown_key", "bad_signature", "expired",
    "not_yet_valid",
}  # fmt: skip
PROBLEMS = {
    "malformed", "not_canonical", "unknown_key", "wrong_key", "bad_signature", "wrong_topic",
    "conflict",
}  # fmt: skip
VALUES = ["", "0", "-1", "1e999", "true", '"x"', "[]", "{}", '"/dev/null"', "300", '"ü"']


def mangle_toml(rng: random.Random, text: str) -> str:
    """Delete, duplicate or rewrite a line's value: what a hurried edit does to a file."""
    lines = text.splitlines()
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(lines))
        line = lines[at]
        kind = rng.randrange(4)
        if kind == 0:
            del lines[at]
        elif kind == 1:
            lines.insert(at, line)
        elif kind == 2 and "=" in line and not line.lstrip().startswith("#"):
            lines[at] = line.split("=", 1)[0] + "= " + rng.choice(VALUES)
        else:
            lines[at] = line[: rng.randrange(len(line) + 1)]
    return "\n".join(lines) + "\n"


def test_the_config_loader_refuses_with_a_key(tmp_path: Path, record: Callable[..., None]) -> None:
    rng = random.Random(78)
    text = EXAMPLE.read_text()
    rounds = size(300, 20_000)
    accepted = refused = 0
    for _ in range(rounds):
        try:
            loads(mangle_toml(rng, text), EXAMPLE)
        except ConfigError as exc:
            refused += 1
            assert exc.message and str(exc).startswith(str(EXAMPLE))
        else:
            accepted += 1
    record("fuzz_config", files=rounds, accepted=accepted, refused=refused)


def test_the_profile_loader_refuses_with_a_reason(record: Callable[..., None]) -> None:
    import tomllib

    rng = random.Random(20)
    names = shipped_profiles()
    rounds = size(300, 20_000)
    accepted = refused = not_toml = 0
    for _ in range(rounds):
        name = rng.choice(names)
        text = mangle_toml(rng, (PROFILES / f"{name}.toml").read_text())
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            not_toml += 1  # the loader's caller says so with the file's name
            continue
        try:
            profile_from_mapping(name, data, f"{name}.toml")
        except ProfileError as exc:
            refused += 1
            assert str(exc).strip()
        else:
            accepted += 1
    record("fuzz_profiles", files=rounds, accepted=accepted, refused=refused, not_toml=not_toml)


_SIGNER: list[Signer] = []
COMMANDS_SEEN: dict[str, int] = {}


def signer(tmp: Path) -> Signer:
    if not _SIGNER:
        _SIGNER.append(load_or_create(tmp / "platform.key")[0])
    return _SIGNER[0]


@settings(
    max_examples=size(300, 20_000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_the_command_parser_accepts_only_the_intact_command(
    tmp_path: Path, data: st.DataObject
) -> None:
    key = signer(tmp_path)
    payload = sign_command(
        key, name="resend", gateway="gw", site="s", args={"from_seq": 1, "to_seq": 9},
        issued_ms=1_796_000_000_000,
    )  # fmt: skip
    changed = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.builds(
                lambda at, value: payload[:at] + bytes([value]) + payload[at + 1 :],
                st.integers(0, len(payload) - 1),
                st.integers(0, 255),
            ),
            st.builds(lambda cut: payload[:cut], st.integers(0, len(payload) - 1)),
        )
    )
    result = check_command(
        changed, {key.kid: key.public}, gateway="gw", site="s", name="resend",
        now_ms=1_796_000_001_000,
    )  # fmt: skip
    COMMANDS_SEEN[type(result).__name__] = COMMANDS_SEEN.get(type(result).__name__, 0) + 1
    if isinstance(result, Command):
        assert json.loads(changed) == json.loads(payload)  # the same command, however spelt
    else:
        assert isinstance(result, Rejection) and result.reason in REASONS and result.detail


def test_record_the_command_parser_run(record: Callable[..., None]) -> None:
    """(The figures of the test above, which hypothesis drives example by example.)"""
    assert sum(COMMANDS_SEEN.values()) > 0
    record(
        "fuzz_commands",
        examples=sum(COMMANDS_SEEN.values()),
        accepted=COMMANDS_SEEN.get("Command", 0),
        rejected=COMMANDS_SEEN.get("Rejection", 0),
    )


def test_the_verifier_names_what_is_wrong(tmp_path: Path, record: Callable[..., None]) -> None:
    rng = random.Random(1)
    key = load_or_create(tmp_path / "gw.key")[0]
    record_bytes = canonical(Snapshot("m1", 1, "ok", {"voltage_l1_v": 230.1}).record())
    body = seal(
        key, gateway="gw", site="s", stream="readings", seq=1, prev=GENESIS_PREV,
        created_ms=1, records=[record_bytes] * 3,
    ).body  # fmt: skip
    messages = size(20_000, 1_000_000)
    kinds: dict[str, int] = {}
    started = time.perf_counter()
    for i in range(messages):
        verifier = Verifier({key.kid: key.public})
        changed = bytes(body) if i % 50 == 0 else _mutate_json(rng, body)
        problem = verifier.add(changed, "cgw/v1/s/gw/readings")
        if problem is None:
            assert json.loads(changed) == json.loads(body)
        else:
            assert problem.kind in PROBLEMS and problem.detail
            kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
    record(
        "fuzz_verifier",
        messages=messages,
        problems=kinds,
        messages_per_s=round(messages / (time.perf_counter() - started)),
    )


def _mutate_json(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randrange(1, 3)):
        at = rng.randrange(len(data))
        data[at] = rng.randrange(32, 127)
    return bytes(data)
