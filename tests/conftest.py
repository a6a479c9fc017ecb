from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from gateway.localbroker import LocalBroker
from tests.support.gateway import STARTED


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A real Mosquitto on a free loopback port, keeping sessions across its own restarts."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir, persistence=True) as running:
        yield running


@pytest.fixture
def meters() -> list[EmulatedMeter]:
    return [
        EmulatedMeter(1, load_shipped_profile("eastron_sdm630"), seed=1),
        EmulatedMeter(2, load_shipped_profile("chint_dtsu666"), seed=2),
    ]


@pytest.fixture
def emulator(meters: list[EmulatedMeter]) -> Iterator[EmulatorServer]:
    server = EmulatorServer(meters)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way must not leave its daemon running (and holding ports)."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)
