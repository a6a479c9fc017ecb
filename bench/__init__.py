"""Benchmarks of the gateway's real product paths, each against a baseline measured in the same run.

`python -m bench` runs them all; `python -m bench ingest|drain|memory` runs one. Figures are printed
as a table and written as JSON under bench/results/. See docs/PERFORMANCE.md.
"""
