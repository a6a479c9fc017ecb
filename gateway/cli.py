"""The `cgw` command. Errors reach the user as one clear line and an exit status, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from buffer.keys import SigningKeyError
from buffer.store import BufferFormatError
from gateway import __version__
from gateway.config import DEFAULT_PATH, Config, ConfigError

EX_USAGE = 2  # argparse's own
EX_DATAERR = 65  # sysexits: input data (here the buffer file) in a form we cannot use
EX_SOFTWARE = 70
EX_CONFIG = 78

log = logging.getLogger("cgw")


class CommandError(Exception):
    """A problem the user can fix; `status` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _setup_logging(level: str) -> None:
    from gateway.journal import configure  # journald under systemd, stderr otherwise

    configure(getattr(logging, level.upper()))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _config(args: argparse.Namespace) -> Config:
    """The configuration in use: the provisioned file, or one applied since by command."""
    from gateway.applied import effective

    return effective(Path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import applied
    from gateway.daemon import Daemon

    config = applied.effective(Path(args.config), repair=True)
    try:
        daemon = Daemon(config)
    except Exception as exc:
        if applied.pending(config) is None:
            raise
        # A configuration applied by command that does not even start: back to the previous.
        applied.roll_back(config, f"it does not start: {exc}")
        _restart()
    status = daemon.run()
    if daemon.restart_requested:
        _restart()
    return status


def _restart() -> NoReturn:
    """The same command line in a fresh process with the same pid (systemd keeps supervising)."""
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def cmd_provision(args: argparse.Namespace) -> int:
    from provisioning.cli import ProvisionError, run

    try:
        return run(args)
    except ProvisionError as exc:
        raise CommandError(str(exc), exc.status) from None


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(Path(args.data_dir), args.duration, with_broker=not args.no_broker)


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.status import collect, render

    status = collect(_config(args))
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from buffer.keys import key_id
    from buffer.verify import Verifier
    from gateway.daemon import open_buffer
    from gateway.status import public_key
    from gateway.verifycli import (
        VerifyError,
        capture_lines,
        feed,
        listen,
        print_report,
        registered_keys,
    )

    try:
        keys, owners = registered_keys(args)
        if (args.capture or args.broker) and not keys:
            raise VerifyError(
                f"{'--capture' if args.capture else '--broker'} needs the gateways' public keys: "
                "give --public-key or --keys",
                EX_USAGE,
            )
        verifier = Verifier(keys, owners)
        if args.capture:
            try:
                for topic, payload in capture_lines(Path(args.capture)):
                    feed(verifier, topic, payload)
            except OSError as exc:
                raise VerifyError(f"{args.capture}: cannot read: {exc.strerror}") from None
            source = args.capture
        elif args.broker:
            received = listen(args, verifier)
            source = f"{args.broker} {args.topic} ({received} envelopes)"
        else:
            config = _config(args)
            if not keys:
                own = public_key(config)
                if own is None:
                    raise VerifyError(
                        f"{config.signing_key}: no signing key to verify with; give --public-key"
                    )
                verifier.keys = {key_id(own): own}
            db = config.data_dir / "buffer.db"
            if not db.exists():
                raise VerifyError(f"{db}: no buffer database yet")
            buffer = open_buffer(config, read_only=True)
            for body in list(buffer.envelopes()):
                verifier.add(body)
            buffer.close()
            source = str(db)
    except VerifyError as exc:
        raise CommandError(str(exc), exc.status) from None
    return print_report(args, source, verifier.report())


def cmd_web_password(args: argparse.Namespace) -> int:
    """The commissioning page's password, as the scrypt line `[web] password_file` holds."""
    import getpass

    from gateway.web.auth import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("new password for the commissioning page: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ", EX_USAGE)
    if len(password) < 8:
        raise CommandError("use at least 8 characters", EX_USAGE)
    line = hash_password(password) + "\n"
    if args.output is None:
        print(line, end="")
        return 0
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(line)
    os.chmod(args.output, 0o600)
    print(f"wrote {args.output} (mode 600): set [web] password_file to it", file=sys.stderr)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from drivers.profile import load_shipped_profile, shipped_profiles

    for name in shipped_profiles():
        profile = load_shipped_profile(name)
        quantities = ", ".join(r.quantity for r in profile.registers)
        print(f"{name:<20} {profile.model}\n{'':<20} {quantities}")
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    from drivers.emulation.cli import run

    return run(args)


def _tool(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from gateway.tools.port import ToolError

    try:
        return run(args)
    except ToolError as exc:
        raise CommandError(str(exc), exc.status) from None


def cmd_plan(args: argparse.Namespace) -> int:
    from gateway.tools.read import cmd_plan as run

    return _tool(run, args)


def cmd_read(args: argparse.Namespace) -> int:
    from gateway.tools.read import cmd_read as run

    return _tool(run, args)


def cmd_scan(args: argparse.Namespace) -> int:
    from gateway.tools.scan import cmd_scan as run

    return _tool(run, args)


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.tools.check import cmd_check as run

    return _tool(run, args)


def _add_tool_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """The commissioning tools (docs/COMMISSIONING.md)."""
    from gateway.tools import check, read, scan

    plan = command(
        "plan", cmd_plan, "Show a device's Modbus requests, bytes and minimum wire time."
    )
    plan.add_argument("device", help="a device id from the config")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    read.add_target_arguments(
        command("read", cmd_read, "Read one meter once and show its values as a table.")
    )
    scan.add_arguments(
        command(
            "scan",
            cmd_scan,
            "Find the meters on a serial line or behind a Modbus TCP address.",
            config=False,
        )
    )
    check.add_arguments(
        command("check", cmd_check, "Commissioning check of the whole config (exit 1 on FAIL).")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgw",
        description="cgw, the Carbon Edge Gateway: polls energy meters, keeps every reading signed in a "
        "local buffer and publishes to the carbon platform over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"cgw {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument(
                "--config",
                default=str(DEFAULT_PATH),
                help=f"configuration file (default {DEFAULT_PATH})",
            )
        p.set_defaults(handler=handler)
        return p

    command("run", cmd_run, "Run the gateway daemon in the foreground (as systemd runs it).")
    demo = command(
        "demo",
        cmd_demo,
        "Run the gateway on emulated meters with a local broker, if one can start.",
        config=False,
    )
    demo.add_argument(
        "--data-dir",
        default="demo-data",
        help="where the demo keeps its buffer and key (default ./demo-data)",
    )
    demo.add_argument(
        "--no-broker", action="store_true", help="do not start a local broker: buffer only"
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    emulate = command(
        "emulate",
        cmd_emulate,
        "Serve emulated meters on a serial line, a new pty, or a TCP port.",
        config=False,
    )
    from drivers.emulation.cli import add_arguments

    add_arguments(emulate)
    status = command(
        "status",
        cmd_status,
        "Show buffer backlog, last publish, device health and the signing key.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    verify = command(
        "verify",
        cmd_verify,
        "Check signatures, hash chain and sequence: of the local buffer, a capture, or live.",
    )
    from gateway.verifycli import add_arguments as add_verify_arguments

    add_verify_arguments(verify)
    command("profiles", cmd_profiles, "List the meter profiles shipped with cgw.", config=False)
    password = command(
        "web-password",
        cmd_web_password,
        "Make the commissioning page's password file ([web] password_file).",
        config=False,
    )
    password.add_argument("--output", type=Path, help="write it to this file (mode 600)")
    password.add_argument("--stdin", action="store_true", help="read the password from stdin")
    from provisioning.cli import add_arguments as add_provision_arguments

    add_provision_arguments(
        command(
            "provision",
            cmd_provision,
            "Set up this device as a gateway from an inventory (IT's setup script; re-runnable).",
            config=False,
        )
    )
    _add_tool_commands(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"cgw: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except SigningKeyError as exc:
        print(f"cgw: {exc}", file=sys.stderr)
        return EX_CONFIG
    except BufferFormatError as exc:
        print(f"cgw: {exc}", file=sys.stderr)
        return EX_DATAERR
    except CommandError as exc:
        print(f"cgw: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("internal error", exc_info=True)
        print(
            f"cgw: internal error: {type(exc).__name__}: {exc} (run with --log-level debug for details)",
            file=sys.stderr,
        )
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
