"""What the audit trail costs a service request: p50 and p99 with the trail on against off.

Two real hubs run side by side, identical but for ``SHIPYARD_AUDIT`` (``1``
and ``0``), each with the scheduler and the deployer services, as
tests/hubtools.py starts them. The bench measures, through each hub's proxy
with a user's token, as the magics and the panel call them:

- ``POST /services/scheduler/api/jobs``: create a job (an inline four-cell
  notebook, no trigger, so nothing runs): one audit record (``job.create``)
  per request, written in the request's ``on_finish``;
- ``GET /services/deployer/api/deployments``: list deployments, which is not
  audited: it shows the cost of the mechanism on a request it does not record.

Requests alternate between the hubs in blocks of ``--block`` (so drift on
a shared machine hits both alike), after ``--warmup`` uncounted requests to
each. Halfway, both hubs are restarted with the settings swapped (the hub
that had the trail on has it off), so a difference between the two hub
instances themselves (ports, process placement) cancels out. It also times :func:`hub_ext.audit.emit` itself in this process (the
synchronous file append and table insert, SQLite). Target: under 1 ms added
at p50.

Run from the repository root, as root (the hubs create a system account per
user)::

    .venv/bin/python bench/audit.py                 # 300 requests of each kind per hub
    .venv/bin/python bench/audit.py --requests 1000 --json /tmp/audit.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/audit.py`
    sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts, wait_for  # noqa: E402

ACCOUNT_PREFIX = "sybaud-"
CGROUP_PARENT = "shipyard-bench-audit"
PROFILES = """
profiles:
  - slug: bench
    display_name: Bench
    default: true
    mem_limit: 1Gi
"""
NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in ("n = 10", "x = sum(range(n))", "y = x ** 0.5", "print(x, y)")
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Side:
    """One hub (its trail on or off, swapped halfway) and a session with a user's token."""

    def __init__(self, name: str, scratch: Path):
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "profiles.yaml").write_text(PROFILES)
        self.name = name
        self.hub = HubProcess(
            data_dir=scratch / "data",
            profiles_file=scratch / "profiles.yaml",
            account_prefix=ACCOUNT_PREFIX,
            cgroup_parent=f"{CGROUP_PARENT}-{name}",
            extra_env={
                "SHIPYARD_SCHEDULER": "1",
                "SHIPYARD_DEPLOYER": "1",
                "SHIPYARD_SECRETS": "0",
            },
        )
        self.n = 0

    @property
    def trail(self) -> str:
        return "on" if self.hub.extra_env["SHIPYARD_AUDIT"] == "1" else "off"

    def start(self, trail_on: bool) -> None:
        self.hub.extra_env["SHIPYARD_AUDIT"] = "1" if trail_on else "0"
        self.hub.start()
        token = self.hub.create_user("bench")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        for service in ("scheduler", "deployer"):
            wait_for(
                lambda s=service: self.get(f"/services/{s}/health").status_code == 200,
                120,
                0.3,
                f"the {service} of hub {self.name}",
            )

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.hub.url + path, timeout=30)

    def create_job(self) -> float:
        self.n += 1
        body = {"name": f"bench-{self.n}", "profile": "bench", "notebook": NOTEBOOK}
        t = time.perf_counter()
        r = self.session.post(self.hub.url + "/services/scheduler/api/jobs", json=body, timeout=30)
        elapsed = time.perf_counter() - t
        assert r.status_code == 201, r.text
        return elapsed

    def list_deployments(self) -> float:
        t = time.perf_counter()
        r = self.get("/services/deployer/api/deployments")
        elapsed = time.perf_counter() - t
        assert r.status_code == 200, r.text
        return elapsed

    def round(self, count: int, times: dict | None = None) -> None:
        for _ in range(count):
            a, b = self.create_job(), self.list_deployments()
            if times is not None:
                times[(self.trail, "create job")].append(a)
                times[(self.trail, "list deployments")].append(b)

    def records(self) -> int:
        path = self.hub.data_dir / "audit" / "audit.jsonl"
        return path.read_text().count('"job.create"') if path.exists() else 0

    def stop(self) -> None:
        self.hub.stop()


def emit_cost(scratch: Path, count: int) -> dict[str, float]:
    """p50/p99 of emit() itself in this process (SQLite table)."""
    os.environ["SHIPYARD_AUDIT_DIR"] = str(scratch / "emit-audit")
    os.environ.pop("SHIPYARD_AUDIT_DB_URL", None)
    os.environ.pop("SHIPYARD_AUDIT", None)
    import hub_ext.audit as audit

    audit.reset()
    for _ in range(50):
        audit.emit("job.create", actor="bench", target="job/warm", owner="bench")
    times = []
    for i in range(count):
        t = time.perf_counter()
        audit.emit("job.create", actor="bench", target=f"job/{i}", owner="bench")
        times.append(time.perf_counter() - t)
    audit.reset()
    return {"p50_ms": statistics.median(times) * 1e3, "p99_ms": percentile(times, 99) * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind per hub")
    parser.add_argument("--block", type=int, default=25, help="requests per hub before switching")
    parser.add_argument("--warmup", type=int, default=30, help="uncounted requests per hub first")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: the hubs create a system account per user")

    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-audit-"))
    sides = [Side("a", scratch / "a"), Side("b", scratch / "b")]
    kinds = ("create job", "list deployments")
    times: dict[tuple[str, str], list[float]] = {
        (trail, kind): [] for trail in ("on", "off") for kind in kinds
    }
    half = args.requests // 2
    try:
        for phase in (0, 1):  # hub a has the trail on, then off; hub b the other way round
            for i, side in enumerate(sides):
                side.start(trail_on=(i == phase))
            for side in sides:
                side.round(args.warmup)
            done = 0
            while done < half:
                block = min(args.block, half - done)
                for side in sides[:: 1 if (done // args.block) % 2 == 0 else -1]:
                    side.round(block, times)
                done += block
            for side in sides:
                side.stop()
        emitted = emit_cost(scratch, 1000)
    finally:
        for side in sides:
            side.stop()
        remove_test_accounts(ACCOUNT_PREFIX)
        for side in sides:
            for suffix in ("", "-jobs", "-models"):
                remove_cgroups(f"{CGROUP_PARENT}-{side.name}{suffix}")

    records = sum(side.records() for side in sides)
    figures: dict[str, dict] = {"emit": emitted}
    print(f"\nAudit trail cost, {2 * half} requests of each kind with the trail on, and off")
    print(f"{'request':20} {'trail':6} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in kinds:
        row: dict[str, float | dict] = {}
        for trail in ("on", "off"):
            values = times[(trail, kind)]
            p50, p99 = statistics.median(values) * 1e3, percentile(values, 99) * 1e3
            row[trail] = {"p50_ms": p50, "p99_ms": p99}
            print(f"{kind:20} {trail:6} {p50:8.2f} {p99:8.2f}")
        added50 = row["on"]["p50_ms"] - row["off"]["p50_ms"]
        added99 = row["on"]["p99_ms"] - row["off"]["p99_ms"]
        row["added_p50_ms"], row["added_p99_ms"] = added50, added99
        print(f"{kind:20} {'added':6} {added50:+8.2f} {added99:+8.2f}")
        figures[kind] = row
    print(
        f"\nemit() alone (file + SQLite table, this process): p50 {emitted['p50_ms']:.3f} ms, "
        f"p99 {emitted['p99_ms']:.3f} ms"
    )
    print(f"job.create records written while the trail was on: {records}")
    target = figures["create job"]["added_p50_ms"] < 1.0
    print(f"target (under 1 ms added at p50 for create job): {'met' if target else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
