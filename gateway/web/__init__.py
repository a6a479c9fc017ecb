"""The commissioning page (docs/COMMISSIONING.md)."""
