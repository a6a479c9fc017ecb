"""Fleet health in the retained status message: what an operator of many gateways watches."""

from __future__ import annotations

from pathlib import Path

from drivers.emulation.server import EmulatorServer
from gateway.fleet import bus_error_rates, cpu_temperature_c
from gateway.localbroker import LocalBroker
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until


def thermal_zone(root: Path, index: int, kind: str, millidegrees: str) -> None:
    """A sysfs thermal zone as the kernel lays it out (no board here exposes one)."""
    zone = root / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    (zone / "temp").write_text(millidegrees + "\n")


def test_cpu_temperature_comes_from_the_cpu_zone(tmp_path: Path) -> None:
    assert cpu_temperature_c(tmp_path) is None  # no zones: not exposed
    thermal_zone(tmp_path, 0, "gpu-thermal", "39000")
    thermal_zone(tmp_path, 1, "cpu-thermal", "51234")
    assert cpu_temperature_c(tmp_path) == 51.2
    (tmp_path / "thermal_zone1" / "temp").write_text("garbage\n")
    assert cpu_temperature_c(tmp_path) is None


def test_bus_error_rates_sum_the_devices_of_each_bus() -> None:
    rates = bus_error_rates(
        {"rs485-1": ["a", "b"], "lan": ["c"]},
        {"a": {"polls": 90, "failures": 0}, "b": {"polls": 10, "failures": 10}, "c": {}},
    )
    assert rates == {
        "rs485-1": {"polls": 100, "failures": 10, "error_rate": 0.1},
        "lan": {"polls": 0, "failures": 0, "error_rate": None},
    }


def test_the_retained_status_carries_the_fleet_figures(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer
) -> None:
    port = emulator.serve_tcp()
    # Unit 9 does not exist on the emulated bus: every poll of it fails.
    config = write_config(
        tmp_path, [Meter("incomer", 1), Meter("ghost", 9)], tcp_port=port, mqtt_port=broker.port
    )
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config).start().wait_running()

        def failed_polls() -> bool:
            statuses = platform.on("status")
            return (
                bool(statuses)
                and platform.last_json("status").get("buses", {}).get("bus", {}).get("failures", 0)
                > 2
            )

        wait_until(failed_polls, 30, "a status with failed polls")
        status = platform.last_json("status")
        assert daemon.stop() == 0
    assert status["state"] == "online" and status["software"].startswith("cgw ")
    assert status["uptime_s"] >= 0 and status["clock_synced"] in (True, False)
    bus = status["buses"]["bus"]
    assert 0.3 < bus["error_rate"] < 0.7  # half the devices on it never answer
    disk = status["disk"]
    assert 0 < disk["used_bytes"] <= disk["quota_bytes"] and 0 < disk["used_share"] < 0.01
    assert "cpu_temperature_c" in status  # None here: this machine exposes no thermal zone
    assert status["oldest_undelivered_age_s"] is None or status["oldest_undelivered_age_s"] >= 0
