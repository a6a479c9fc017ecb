"""Hardware-in-the-loop and reliability scenarios (docs/RELIABILITY.md)."""
