"""The scheduler's /health latency while another client lists jobs in a loop, on PostgreSQL.

Issue #15, point 7: one slow request must not stall the service. This bench
starts the real thing, as tests/test_scheduler_service.py does: a hub
(:class:`tests.hubtools.HubProcess`) with the scheduler service, whose database
is a fresh PostgreSQL database (``127.0.0.1:5432``, user ``postgres``) seeded
with ``--jobs`` (5,000) jobs, each with a cron trigger due next year:

- ``--own`` (500) belong to the listing user ``bench`` (in the hub group
  ``benchers``), the rest to 45 other owners, one in ten of theirs shared with
  ``benchers``: the default listing (``include_shared``) then has to find the
  caller's own and shared jobs among all of them.

Then, straight to the service's port (the proxy would only add its own noise):

1. ``--health`` (2,000) ``GET health`` requests, one at a time, with the
   service otherwise idle: p50, p99 and max;
2. the same while another process lists jobs in a loop (``GET api/jobs``,
   following ``next_token`` through every page, then again from the first):
   the same /health figures, and the listing's page times (p50, p99, max, how
   many over 100 ms) and time per full listing.

It prints both, and the ratio of the loaded p99 to the idle one; the target is
a loaded /health p99 under 10 ms. On a busy machine, compare with
``--baseline REF``: the service as at that git ref, measured in turn with the
working tree's (``--rounds`` times each), so that both see the same load. Run it from the repository root, as root
(the hub makes system accounts); it stops the hub and drops its database at
the end::

    .venv/bin/python bench/scheduler_latency.py
    .venv/bin/python bench/scheduler_latency.py --jobs 5000 --health 2000 --json /tmp/lat.json
    .venv/bin/python bench/scheduler_latency.py --baseline HEAD~1 --rounds 3 --health 1000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/scheduler_latency.py`
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import requests  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from hub_ext.services.scheduler.db import make_engine, upgrade  # noqa: E402
from hub_ext.services.scheduler.orm import Job, Trigger  # noqa: E402
from tests.hubtools import HubProcess, wait_for  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
USER = "bench"
GROUP = "benchers"
OTHER_OWNERS = 45
PROFILES = """
profiles:
  - slug: bench
    display_name: Bench
    default: true
    mem_limit: 1Gi
"""
# No kernels kept warm, no runs: only the API and the worker's polling are measured.
SCHEDULER_CONFIG = """
c.SchedulerService.poll_interval = 1.0
c.LocalExecutor.warm_pool_size = 0
c.LocalExecutor.gpu_devices = []
"""
TARGET_P99_S = 0.010


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": statistics.median(values) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": max(values) * 1000,
    }


def seed(url: str, jobs: int, own: int) -> None:
    """``jobs`` jobs with a cron trigger each, straight into the tables (as the store writes them)."""
    now = datetime.now(timezone.utc)
    later = now + timedelta(days=365)
    job_rows, trigger_rows = [], []
    for i in range(jobs):
        mine = i < own
        owner = USER if mine else f"user{i % OTHER_OWNERS:02d}"
        job_id = uuid.uuid4().hex
        job_rows.append(
            {
                "id": job_id,
                "owner": owner,
                "name": f"job-{i:05d}",
                "notebook_digest": "0" * 64,
                "source_path": f"work/report-{i}.ipynb",
                "parameters": {"region": "eu", "days": 7, "threshold": 0.5},
                "profile": "bench",
                "timeout_seconds": 3600,
                "retry_attempts": 1,
                "retry_backoff_seconds": 60,
                "concurrency_policy": "forbid",
                "missed_run_policy": "skip",
                "output_formats": ["ipynb", "html"],
                "shared_with_groups": [GROUP] if not mine and i % 10 == 0 else [],
                "paused": False,
                "notify": {},
                "keep_runs": 10,
                "keep_days": None,
                "secrets": [],
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
        trigger_rows.append(
            {
                "id": uuid.uuid4().hex,
                "job_id": job_id,
                "kind": "cron",
                "spec": {"expression": "0 3 * * *", "timezone": "UTC"},
                "next_fire_at": later,
                "last_fired_at": None,
                "created_at": now,
            }
        )
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(Job), job_rows)
            connection.execute(insert(Trigger), trigger_rows)
    finally:
        engine.dispose()


def measure_health(session: requests.Session, url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        r = session.get(url, timeout=30)
        times.append(time.perf_counter() - start)
        assert r.status_code == 200, r.text
        time.sleep(0.002)  # spread the samples over time: what stalls may be periodic
    return times


def lister(base: str, token: str, stop, results) -> None:
    """List every page of the caller's jobs, again and again, until ``stop`` is set."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    pages, walks, seen = [], [], 0
    while not stop.is_set():
        walk_start = time.perf_counter()
        token_arg: dict = {}
        while not stop.is_set():
            start = time.perf_counter()
            r = session.get(base + "api/jobs", params={"limit": 50, **token_arg}, timeout=60)
            pages.append(time.perf_counter() - start)
            r.raise_for_status()
            body = r.json()
            seen = max(seen, len(body["jobs"]))
            if not body.get("next_token"):
                walks.append(time.perf_counter() - walk_start)
                break
            token_arg = {"next_token": body["next_token"]}
    results.put({"pages": pages, "walks": walks})


def run(args: argparse.Namespace, source: Path | None = None) -> dict:
    """One measurement; ``source``: a folder whose ``hub_ext`` the hub and services run."""
    name = f"shipyard_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(POSTGRES + "/postgres", connect_timeout=5, autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    hub = None
    try:
        url = f"{POSTGRES}/{name}"
        upgrade(url)
        started = time.perf_counter()
        seed(url, args.jobs, args.own)
        log(f"seeded {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
        scratch = Path(tempfile.mkdtemp(prefix="shipyard-latency-"))
        (scratch / "profiles.yaml").write_text(PROFILES)
        config = scratch / "scheduler_config.py"
        config.write_text(SCHEDULER_CONFIG)
        hub = HubProcess(
            data_dir=scratch / "data",
            profiles_file=scratch / "profiles.yaml",
            account_prefix="sylat-",
            cgroup_parent="shipyard-bench-latency",
            extra_env={
                "SHIPYARD_SCHEDULER": "1",
                "SHIPYARD_SCHEDULER_CONFIG": str(config),
                "SHIPYARD_SCHEDULER_DB_URL": url,
                **({"PYTHONPATH": str(source)} if source else {}),
            },
        )
        hub.start()
        base = f"http://127.0.0.1:{hub.scheduler_port}/services/scheduler/"
        wait_for(
            lambda: requests.get(base + "health", timeout=5).status_code == 200,
            60,
            0.2,
            "the scheduler to answer",
        )
        log(f"hub log: {hub.log_path}")
        token = hub.create_user(USER, [GROUP])
        session = requests.Session()
        check = requests.get(
            base + "api/jobs", headers={"Authorization": f"token {token}"}, timeout=60
        )
        check.raise_for_status()
        measure_health(session, base + "health", 100)  # warm up
        idle = measure_health(session, base + "health", args.health)
        log(f"idle /health: {summary(idle)}")

        context = multiprocessing.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        process = context.Process(target=lister, args=(base, token, stop, results))
        process.start()
        time.sleep(1.0)  # the lister's first pages
        loaded = measure_health(session, base + "health", args.health)
        stop.set()
        listing = results.get(timeout=120)
        process.join(30)
        result = {
            "jobs": args.jobs,
            "idle_health": summary(idle),
            "loaded_health": summary(loaded),
            "listing_pages": {
                **summary(listing["pages"]),
                "over_100ms": sum(t > 0.1 for t in listing["pages"]),
            },
            "listing_walks": summary(listing["walks"]) if listing["walks"] else None,
        }
        result["p99_ratio"] = result["loaded_health"]["p99_ms"] / result["idle_health"]["p99_ms"]
        return result
    finally:
        if hub is not None:
            hub.stop()
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def baseline_source(ref: str) -> Path:
    """``hub_ext`` as it is at git ``ref``, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="shipyard-latency-baseline-"))
    archive = subprocess.run(
        ["git", "archive", ref, "hub_ext"], cwd=REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def report(label: str, result: dict) -> None:
    idle, loaded = result["idle_health"], result["loaded_health"]
    pages, walks = result["listing_pages"], result["listing_walks"]
    print(f"{label}: scheduler /health with {result['jobs']} jobs in PostgreSQL")
    print(f"  idle:                 p50 {idle['p50_ms']:.1f} ms  p99 {idle['p99_ms']:.1f} ms")
    print(
        f"  while listing:        p50 {loaded['p50_ms']:.1f} ms  p99 {loaded['p99_ms']:.1f} ms"
        f"  max {loaded['max_ms']:.1f} ms  (p99 x{result['p99_ratio']:.1f} idle;"
        f" target < {TARGET_P99_S * 1000:.0f} ms)"
    )
    print(
        f"  listing pages ({pages['n']}): p50 {pages['p50_ms']:.1f} ms  p99 {pages['p99_ms']:.1f}"
        f" ms  max {pages['max_ms']:.1f} ms  over 100 ms: {pages['over_100ms']}"
    )
    if walks:
        print(f"  full listings ({walks['n']}): p50 {walks['p50_ms']:.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--own", type=int, default=500, help="of them, the listing user's")
    parser.add_argument("--health", type=int, default=2000, help="/health requests per phase")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure hub_ext as at this git ref (e.g. HEAD~1), alternating with the "
        "working tree, so that both see the same machine load",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sources: list[tuple[str, Path | None]] = [("working tree", None)]
    if args.baseline:
        sources.insert(0, (args.baseline, baseline_source(args.baseline)))
    results: dict[str, list[dict]] = {label: [] for label, _ in sources}
    for _ in range(args.rounds):
        for label, source in sources:
            result = run(args, source)
            results[label].append(result)
            report(label, result)
    if args.rounds > 1 or args.baseline:
        print("medians over rounds (ms):")
        for label, runs in results.items():
            row = {
                key: statistics.median(r[part][stat] for r in runs)
                for key, part, stat in (
                    ("idle p99", "idle_health", "p99_ms"),
                    ("loaded p50", "loaded_health", "p50_ms"),
                    ("loaded p99", "loaded_health", "p99_ms"),
                    ("page p50", "listing_pages", "p50_ms"),
                )
            }
            print(f"  {label:>12}: " + "  ".join(f"{k} {v:.1f}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
