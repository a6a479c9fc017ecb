"""Fleet: N simulated gateways (processes running the real Uplink on real buffers) publishing to
one local Mosquitto, and the platform's consumers sharing the stream (`$share/platform/...`), each
counting or also verifying every envelope with buffer.verify.Verifier.

Every gateway starts with the same backlog of sealed readings (50 meters' SDM630 records) and
drains it at once: the heaviest load a fleet puts on the broker, after a broker or network outage
that all gateways ride out together. A run ends when the consumers together have received every
record; its rate is records (and messages) over the time from the gateways' start to the last
arrival. Baseline, same run: one consumer that only counts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Children, Deadline, Report, python, ratio
from bench.subscriber import Platform
from bench.workload import prepare_backlog
from buffer.keys import load_or_create, public_key_text
from gateway.config import parse
from gateway.localbroker import LocalBroker

TOPIC = "$share/platform/cgw/v1/+/+/readings"
ENVELOPE_RECORDS = 250  # 50 meters at 1 s, sealed every 5 s
SITE_RATE = 50  # records a second a gateway of 50 meters at 1 s sends


def settings(folder: Path, gateway: str, port: int) -> dict[str, dict[str, Any]]:
    return {
        "gateway": {
            "id": gateway,
            "site": "fleet",
            "data_dir": str(folder / "data"),
            "runtime_dir": str(folder / "run"),
        },
        "mqtt": {"host": "127.0.0.1", "port": port, "inflight": 32},
        "buffer": {"envelope_max_records": ENVELOPE_RECORDS},
    }


def write_config(folder: Path, gateway: str, port: int) -> Path:
    lines = []
    for table, values in settings(folder, gateway, port).items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    path = folder / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(
    gateways: int,
    records: int,
    consumers: tuple[int, ...],
    directory: Path | None = None,
    timeout_s: float = 1800,
) -> Report:
    deadline = Deadline(timeout_s)
    folder = Path(tempfile.mkdtemp(prefix="cgw-bench-fleet-", dir=directory))
    runs: list[dict[str, Any]] = []
    try:
        with LocalBroker(workdir=folder) as broker, Children() as children:
            templates, keys = [], []
            for i in range(gateways):
                gateway = f"gw-{i + 1:03d}"
                config = parse(settings(folder / "t" / gateway, gateway, broker.port), "x.toml")
                prepare_backlog(config, records, deadline)
                signer, _ = load_or_create(config.signing_key)
                keys.append(public_key_text(signer.public))
                templates.append((gateway, folder / "t" / gateway))
            key_file = folder / "keys.txt"
            key_file.write_text("\n".join(keys) + "\n")
            for verify in (False, True):
                for count in consumers:
                    deadline.check("the runs")
                    runs.append(
                        one_run(
                            children,
                            broker.port,
                            templates,
                            folder / "run",
                            records,
                            count,
                            key_file if verify else None,
                            deadline,
                        )
                    )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = gateways * records
    by = {(r["verify"], r["consumers"]): r for r in runs}
    base = by[(False, consumers[0])]
    report = Report(
        "fleet",
        f"Fleet: {gateways} gateways x {records:,} records to one Mosquitto, shared consumers",
    )
    for r in runs:
        what = "verifying" if r["verify"] else "counting"
        report.add(
            f"{what}_{r['consumers']}_records_per_s",
            f"{r['consumers']} consumer(s) {what}",
            r["records_per_s"],
            "records/s",
        )
    for verify in (False, True):
        what = "verifying" if verify else "counting"
        if len(consumers) > 1:
            first, last = by[(verify, consumers[0])], by[(verify, consumers[-1])]
            report.add(
                f"{what}_scaling",
                f"{what}: {consumers[-1]} vs {consumers[0]} consumers",
                ratio(last["records_per_s"], first["records_per_s"]),
                "x",
            )
    best = max(r["records_per_s"] for r in runs if r["verify"])
    verified = by[(True, consumers[0])]["records_per_s"]
    report.add(
        "verify_vs_count",
        f"verifying / counting, {consumers[0]} consumer(s)",
        ratio(verified, base["records_per_s"]),
        "x",
    )
    report.add(
        "gateways_sustained",
        f"gateways of {SITE_RATE} records/s the best verifying run carries",
        best / SITE_RATE,
        "gateways",
    )
    report.details = {
        "gateways": gateways,
        "records_per_gateway": records,
        "total": total,
        "runs": runs,
    }
    return report


def one_run(
    children: Children,
    port: int,
    templates: list[tuple[str, Path]],
    where: Path,
    records: int,
    count: int,
    keys: Path | None,
    deadline: Deadline,
) -> dict[str, Any]:
    shutil.rmtree(where, ignore_errors=True)
    configs = []
    for gateway, template in templates:
        shutil.copytree(template, where / gateway)
        configs.append(write_config(where / gateway, gateway, port))
    platforms = [Platform(children, port, TOPIC, keys) for _ in range(count)]
    total = len(templates) * records
    started = time.monotonic()
    drains = [
        children.start(
            [python(), "-m", "bench.fleet_gateway", str(c), str(max(deadline.left(), 1))],
            stdout=subprocess.PIPE,
        )
        for c in configs
    ]
    for drain in drains:
        drain.wait(max(deadline.left(), 1))
        if drain.returncode != 0:
            raise RuntimeError(f"a simulated gateway failed (exit {drain.returncode})")
    reports = [p.wait_for(0, 0) for p in platforms]
    while sum(int(r["records"]) for r in reports) < total:
        deadline.check(f"the consumers ({sum(int(r['records']) for r in reports)} of {total})")
        time.sleep(0.05)
        reports = [p.report() for p in platforms]
    last = max(float(r["last_monotonic"]) for r in reports if r["last_monotonic"])
    seconds = last - started
    for platform in platforms:
        platform.ask("quit")
    shutil.rmtree(where, ignore_errors=True)
    problems = sum(int(r["problems"]) for r in reports)
    if problems:
        raise RuntimeError(f"the verifying consumers found {problems} problems")
    messages = sum(int(r["messages"]) for r in reports)
    return {
        "verify": keys is not None,
        "consumers": count,
        "seconds": seconds,
        "records_per_s": total / seconds,
        "messages_per_s": messages / seconds,
        "share": [int(r["records"]) for r in reports],
    }
