"""Edges from a GPIO line through the kernel's character device (libgpiod v2).

The kernel timestamps each edge when it happens (monotonic clock) and queues it, so a busy
Python thread delays pulses but does not lose them, up to the kernel's event buffer.
"""

from __future__ import annotations

import errno
from datetime import timedelta

import gpiod
from gpiod.line import Bias, Direction, Edge

from drivers.pulse.source import PulseSourceError

EDGES = {"falling": Edge.FALLING, "rising": Edge.RISING}
BIASES = {"pull_up": Bias.PULL_UP, "pull_down": Bias.PULL_DOWN, "disabled": Bias.DISABLED}
EVENT_BUFFER = 1024  # edges the kernel holds between two reads


class GpiodPulseSource:
    """One input line of `chip`. An S0 or open-collector output pulls the line low during a
    pulse, so the default is the falling edge with the Pi's internal pull-up."""

    def __init__(
        self,
        chip: str,
        line: int,
        *,
        debounce_s: float,
        edge: str = "falling",
        bias: str = "pull_up",
    ) -> None:
        self.chip, self.line = chip, line
        settings = gpiod.LineSettings(
            direction=Direction.INPUT,
            edge_detection=EDGES[edge],
            bias=BIASES[bias],
            debounce_period=timedelta(seconds=debounce_s),
        )
        try:
            self._request = gpiod.request_lines(
                chip, config={line: settings}, consumer="cgw", event_buffer_size=EVENT_BUFFER
            )
        except FileNotFoundError:
            raise PulseSourceError(
                f"no GPIO chip {chip} (`gpiodetect` lists the chips of this device)"
            ) from None
        except PermissionError:
            raise PulseSourceError(
                f"no permission to open {chip} (the cgw user must be in the gpio group)"
            ) from None
        except OSError as exc:
            reason = "in use by another program" if exc.errno == errno.EBUSY else exc.strerror
            raise PulseSourceError(f"cannot request line {line} of {chip}: {reason}") from None
        except ValueError as exc:
            raise PulseSourceError(f"cannot request line {line} of {chip}: {exc}") from None

    def wait(self, timeout_s: float) -> list[int]:
        try:
            if not self._request.wait_edge_events(timedelta(seconds=timeout_s)):
                return []
            return [event.timestamp_ns for event in self._request.read_edge_events()]
        except (OSError, gpiod.RequestReleasedError) as exc:
            raise PulseSourceError(f"line {self.line} of {self.chip}: {exc}") from None

    def close(self) -> None:
        self._request.release()
