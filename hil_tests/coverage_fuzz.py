"""Coverage-guided fuzzing with atheris (libFuzzer), where the seeded mutators of test_fuzz_*.py
stop short: libFuzzer watches which branches an input reaches and breeds the inputs that reach
new ones, so it finds the odd length byte or the JSON shape a random flip seldom makes.

    python -m hil_tests.coverage_fuzz TARGET WORKDIR [libFuzzer options, e.g. -runs=100000]

TARGET is one of TARGETS. The seed corpus (one intact input) is written to WORKDIR/corpus-TARGET
and grows there. A finding (an exception that escapes, or an oracle that fails) makes libFuzzer
write WORKDIR/crash-* and exit non-zero. The oracles are those of the seeded fuzz tests: every
rejection has a reason, and what is accepted is what was sent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["drivers.dlt645", "buffer", "gateway.config"]):
    from buffer.canonical import canonical
    from buffer.command import Command, check_command, sign_command
    from buffer.envelope import GENESIS_PREV, seal
    from buffer.keys import load_or_create
    from buffer.verify import Verifier
    from drivers.dlt645.frame import REPLY_BIT, Frame, FrameError, FrameScanner, check_reply
    from drivers.snapshot import Snapshot
    from gateway.config import ConfigError, loads

ADDRESS = "123456789012"
EXAMPLE = Path(__file__).resolve().parent.parent / "gateway" / "examples" / "gateway.toml"
TOPIC = "cgw/v1/s/gw/readings"


def dlt645(workdir: Path) -> tuple[bytes, Callable[[bytes], None]]:
    request = Frame(ADDRESS, 0x11, bytes.fromhex("00000100"))
    seed = Frame(ADDRESS, REPLY_BIT | 0x11, bytes.fromhex("00000100 45230100")).encode(preamble=2)

    def one(data: bytes) -> None:
        scanner = FrameScanner()
        cut = data[0] % (len(data) + 1) if data else 0  # arrives in two reads, split anywhere
        for part in (data[:cut], data[cut:]):
            for frame in scanner.feed(part):
                try:
                    check_reply(frame, request)
                except FrameError as exc:
                    assert exc.reason.strip()
        assert all(reason.strip() for reason in scanner.rejections)

    return seed, one


def verifier(workdir: Path) -> tuple[bytes, Callable[[bytes], None]]:
    key = load_or_create(workdir / "gw.key")[0]
    reading = canonical(Snapshot("m1", 1, "ok", {"voltage_l1_v": 230.1}).record())
    body = bytes(
        seal(
            key, gateway="gw", site="s", stream="readings", seq=1, prev=GENESIS_PREV,
            created_ms=1, records=[reading] * 2,
        ).body
    )  # fmt: skip

    def one(data: bytes) -> None:
        problem = Verifier({key.kid: key.public}).add(data, TOPIC)
        if problem is None:
            assert json.loads(data) == json.loads(body), "a changed envelope verified"
        else:
            assert problem.kind and problem.detail

    return body, one


def command(workdir: Path) -> tuple[bytes, Callable[[bytes], None]]:
    key = load_or_create(workdir / "platform.key")[0]
    payload = sign_command(
        key, name="resend", gateway="gw", site="s", args={"from_seq": 1, "to_seq": 9},
        issued_ms=1_796_000_000_000,
    )  # fmt: skip

    def one(data: bytes) -> None:
        result = check_command(
            data, {key.kid: key.public}, gateway="gw", site="s", name="resend",
            now_ms=1_796_000_001_000,
        )  # fmt: skip
        if isinstance(result, Command):
            assert json.loads(data) == json.loads(payload), "a changed command was accepted"
        else:
            assert result.reason and result.detail

    return payload, one


def config(workdir: Path) -> tuple[bytes, Callable[[bytes], None]]:
    def one(data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return  # the loader reads text; a file that is not UTF-8 is refused before it
        try:
            loads(text, workdir / "gateway.toml")
        except ConfigError as exc:
            assert exc.message.strip()

    return EXAMPLE.read_bytes(), one


TARGETS: dict[str, Callable[[Path], tuple[bytes, Callable[[bytes], None]]]] = {
    "dlt645": dlt645,
    "verifier": verifier,
    "command": command,
    "config": config,
}


def main() -> None:
    target, workdir = sys.argv[1], Path(sys.argv[2])
    seed, one = TARGETS[target](workdir)
    corpus = workdir / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "seed").write_bytes(seed)
    options = sys.argv[3:]
    atheris.Setup([sys.argv[0], f"-artifact_prefix={workdir}/", *options, str(corpus)], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
