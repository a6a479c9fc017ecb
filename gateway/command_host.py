"""What the daemon does for downlink commands, and the probation of a configuration applied by
command (docs/COMMANDS.md). Runs in the main thread, like everything that touches the buffer."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from buffer.command import Command
from gateway import __version__, applied
from gateway.busscan import ScanBusy
from gateway.commands import CommandError, Commands
from gateway.config import Config
from gateway.uplink import now_ms

if TYPE_CHECKING:
    from gateway.daemon import Daemon

log = logging.getLogger("cgw.commands")

COMMANDS_PER_STEP = 10


class CommandHost:
    def __init__(self, daemon: Daemon) -> None:
        assert daemon.uplink is not None
        self.daemon = daemon
        self.config: Config = daemon.config
        self.uplink = daemon.uplink
        self.commands = Commands(
            self.config, daemon.signer, self, self.uplink.publish_reply, now_ms
        )
        self.probation = applied.pending(self.config)
        self._probation_ends = time.monotonic() + self.config.commands.probation_s
        self._rollback = applied.rollback(self.config)
        if self.probation:
            log.info(
                "configuration of command %s on probation for %g s",
                self.probation.command_id,
                self.config.commands.probation_s,
            )

    def step(self, now: float) -> None:
        for _ in range(COMMANDS_PER_STEP):
            try:
                name, payload = self.uplink.commands.get_nowait()
            except queue.Empty:
                break
            self.commands.handle(name, payload)
        if self.uplink.state.connected and self._rollback is not None:
            self.commands.reply(
                "config",
                self._rollback.get("command_id"),
                "failed",
                reason="rolled_back",
                detail=f"the previous configuration is back: {self._rollback.get('reason')}",
            )
            applied.reported(self.config)
            self._rollback = None
        if self.probation:
            self._judge_probation(now)

    def status(self) -> dict[str, object]:
        """For status.json: what commands arrived and what became of them."""
        stats = self.commands.stats
        return {
            "received": stats.received,
            "carried_out": stats.carried_out,
            "rejected": stats.rejected,
            "dropped": stats.dropped + self.uplink.commands_dropped,
            "probation": self.probation.command_id if self.probation else None,
        }

    # -- probation -----------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every bus polled, some device answering, the broker connected."""
        d = self.daemon
        answering = (
            any(h.last_ok_ms is not None for p in d.pollers for h in p.health.values())
            or not d.pollers
        )
        return d.all_buses_polled() and answering and self.uplink.state.connected

    def _judge_probation(self, now: float) -> None:
        assert self.probation is not None
        if self.healthy():
            applied.confirm(self.config)
            log.info("configuration of command %s confirmed", self.probation.command_id)
            self.commands.reply(
                "config",
                self.probation.command_id,
                "ok",
                result={"applied": True, "devices": len(self.config.devices)},
            )
            self.probation = None
        elif now >= self._probation_ends:
            problems = []
            if not self.daemon.all_buses_polled():
                problems.append("not every bus was polled")
            if not self.uplink.state.connected:
                problems.append(f"no broker connection ({self.uplink.state.last_error})")
            if not problems:
                problems.append("no device answered")
            applied.roll_back(
                self.config,
                f"not healthy within {self.config.commands.probation_s:g} s: {'; '.join(problems)}",
            )
            self.probation = None
            self.daemon.restart()

    # -- Host ----------------------------------------------------------------------------

    def ping(self) -> dict[str, object]:
        d = self.daemon
        return {
            "software": f"cgw {__version__}",
            "uptime_s": (now_ms() - d.started_ms) // 1000,
            "last_seq": d.buffer.last_seq,
            "clock_synced": d.clock.synced,
        }

    def resend(self, first_seq: int, last_seq: int) -> dict[str, object]:
        stored = self.daemon.buffer.mark_undelivered(first_seq, last_seq)
        self.uplink.rewind(first_seq, last_seq)
        missing: list[list[int]] = []
        expected = first_seq
        for seq in [*stored, last_seq + 1]:
            if seq > expected:
                missing.append([expected, seq - 1])
            expected = seq + 1
        log.info(
            "resending envelopes %d-%d on request: %d stored", first_seq, last_seq, len(stored)
        )
        return {
            "from_seq": first_seq,
            "to_seq": last_seq,
            "resent": len(stored),
            "missing": missing,
        }

    def apply_config(self, text: str, command: Command) -> dict[str, object]:
        new = applied.validate(text, self.config)
        applied.stage(self.config, text, command.id, now_ms())
        log.warning(
            "configuration of command %s applied: restarting, on probation for %g s",
            command.id,
            new.commands.probation_s,
        )
        self.daemon.restart()
        return {"devices": len(new.devices), "probation_s": new.commands.probation_s}

    def scan(
        self, bus_id: str, units: list[int], done: Callable[[dict[str, object]], None]
    ) -> None:
        try:
            self.daemon.scans.start(bus_id, units, done)
        except KeyError as exc:
            raise CommandError("bad_args", str(exc.args[0])) from None
        except ScanBusy as exc:
            raise CommandError("busy", str(exc)) from None
