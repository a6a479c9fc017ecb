"""Commissioning tools behind `cgw plan`, `cgw read`, `cgw scan` and `cgw check`."""
