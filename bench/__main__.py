"""`python -m bench [ingest|drain|memory ...] [--quick] [sizes]`: run benchmarks, print, save JSON."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import accounting, bus, drain, fleet, influx, ingest, memory
from bench.common import (
    RESULTS_DIR,
    Report,
    interrupts_as_exceptions,
    machine,
    render,
    write_results,
)

BENCHMARKS = ("ingest", "accounting", "drain", "memory", "bus", "influx", "fleet")


@dataclass(frozen=True)
class Sizes:
    snapshots: int
    batches: tuple[int, ...]
    repeat: int
    records: int
    baseline_records: int
    inflights: tuple[int, ...]
    daemon_inflights: tuple[int, ...]
    duration_s: float


FULL = Sizes(
    200_000, (50, 500, 1000), 3, 1_000_000, 100_000, (8, 32, 128, 512), (32, 128, 512), 60.0
)
QUICK = Sizes(20_000, (50, 500), 1, 100_000, 10_000, (8, 32, 128), (32,), 15.0)


def integers(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected whole numbers separated by commas"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers of at least 1")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the gateway against baselines measured in the same run "
        "(docs/PERFORMANCE.md). Figures are printed and saved as JSON under bench/results/.",
    )
    p.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"any of {', '.join(BENCHMARKS)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a run of about a minute")
    p.add_argument(
        "--dir",
        type=Path,
        help="where databases go (default: the temp dir); on a gateway, a folder on the SD card",
    )
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="where JSON results go")
    sizes = p.add_argument_group("sizes (defaults: full run; --quick: smaller)")
    sizes.add_argument(
        "--snapshots", type=int, help=f"ingest: snapshots per run ({FULL.snapshots:,})"
    )
    sizes.add_argument(
        "--batches", type=integers, help="ingest: snapshots per commit (50,500,1000)"
    )
    sizes.add_argument(
        "--repeat", type=int, help=f"ingest: runs per batch size, median kept ({FULL.repeat})"
    )
    sizes.add_argument(
        "--records", type=int, help=f"drain, influx: backlog records ({FULL.records:,})"
    )
    sizes.add_argument(
        "--baseline-records",
        type=int,
        help=f"drain: records the paho baseline publishes ({FULL.baseline_records:,})",
    )
    sizes.add_argument(
        "--inflight",
        type=integers,
        help="drain: in-flight windows, Uplink pump loop (8,32,128,512)",
    )
    sizes.add_argument(
        "--daemon-inflight",
        type=integers,
        help="drain: in-flight windows for the real daemon's drain (32,128,512)",
    )
    sizes.add_argument(
        "--duration", type=float, help=f"memory: seconds of sampling ({FULL.duration_s:g})"
    )
    sizes.add_argument("--meters", type=int, default=50, help="memory: emulated meters (50)")
    sizes.add_argument("--gateways", type=int, default=10, help="fleet: simulated gateways (10)")
    sizes.add_argument(
        "--gateway-records", type=int, default=20_000, help="fleet: records each drains (20,000)"
    )
    sizes.add_argument(
        "--buses", type=int, default=5, help="memory: Modbus TCP buses they share (5)"
    )
    sizes.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="memory: undelivered records the daemon starts with, to see a drain's peak (0)",
    )
    return p


def choose(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        snapshots=args.snapshots or base.snapshots,
        batches=args.batches or base.batches,
        repeat=args.repeat or base.repeat,
        records=args.records or base.records,
        baseline_records=args.baseline_records or base.baseline_records,
        inflights=args.inflight or base.inflights,
        daemon_inflights=args.daemon_inflight or base.daemon_inflights,
        duration_s=args.duration or base.duration_s,
    )


def runner(name: str, sizes: Sizes, args: argparse.Namespace) -> Callable[[], Report]:
    if name == "ingest":
        return lambda: ingest.run(sizes.snapshots, sizes.batches, sizes.repeat, args.dir)
    if name == "drain":
        return lambda: drain.run(
            sizes.records,
            sizes.baseline_records,
            sizes.inflights,
            sizes.daemon_inflights,
            directory=args.dir,
        )
    if name == "accounting":
        return lambda: accounting.run(sizes.snapshots, sizes.repeat, args.dir)
    if name == "bus":
        return lambda: bus.run(bus.QUICK if args.quick else bus.FULL)
    if name == "influx":
        return lambda: influx.run(sizes.records, args.dir)
    if name == "fleet":
        return lambda: fleet.run(args.gateways, args.gateway_records, (1, 2), args.dir)
    return lambda: memory.run(
        sizes.duration_s, args.meters, args.buses, directory=args.dir, backlog=args.backlog
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        p.error(f"no benchmark {unknown[0]!r} (choose from {', '.join(BENCHMARKS)})")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sizes = choose(args)
    box = machine()
    print(
        f"{box['date']}  {box['cpu']}  nproc {box['nproc']}  Python {box['python']}  SQLite {box['sqlite']}\n"
    )
    failed = 0
    with interrupts_as_exceptions():
        for name in args.benchmarks or BENCHMARKS:
            try:
                report = runner(name, sizes, args)()
            except KeyboardInterrupt:
                print(
                    f"\n{name}: interrupted; every process it started has been stopped",
                    file=sys.stderr,
                )
                return 130
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"{name}: failed: {exc}\n", file=sys.stderr)
                failed += 1
                continue
            path = write_results(report, args.results)
            print(render(report))
            print(f"  -> {path}\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
