"""One simulated gateway of the fleet benchmark, in its own process: the real Uplink draining the
real buffer it was given to Mosquitto, as a gateway does after an outage. `python -m
bench.fleet_gateway CONFIG` prints the seconds it took once the broker acknowledged everything."""

from __future__ import annotations

import sys
import time

from bench.common import Deadline
from gateway.config import load
from gateway.daemon import open_buffer
from gateway.uplink import Uplink

IDLE_NAP_S = 0.001


def main() -> int:
    config = load(sys.argv[1])
    deadline = Deadline(float(sys.argv[2]) if len(sys.argv) > 2 else 600.0)
    buffer = open_buffer(config)
    uplink = Uplink(config, lambda: {"contract": "cgw/v1", "bench": True}, lambda: {})
    uplink.start()
    try:
        while not uplink.state.connected:
            deadline.check("connecting to the broker")
            time.sleep(0.01)
        started = time.monotonic()
        while buffer.stats().backlog_envelopes:
            deadline.check("draining")
            if not uplink.pump(buffer):
                time.sleep(IDLE_NAP_S)
        print(f"{time.monotonic() - started:.6f}", flush=True)
    finally:
        uplink.stop()
        buffer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
