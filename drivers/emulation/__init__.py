"""Emulated meters that speak real Modbus bytes (RTU and TCP), for the demo, tests and rigs."""

from drivers.emulation.load import LoadModel
from drivers.emulation.meter import FAULTS, EmulatedMeter
from drivers.emulation.server import EmulatorServer

__all__ = ["FAULTS", "EmulatedMeter", "EmulatorServer", "LoadModel"]
