"""Edge accounting: energy, intervals, carbon, indicators and alarms computed on the gateway."""
