"""How the scheduler's cost grows with its work: claiming due ticks and listing jobs.

One fresh PostgreSQL database (the machine's server, as the tests use it; dropped at
the end) holds the scheduler's schema. The job store grows to 10, 1,000 and 10,000
job definitions (``--sizes``), each an hourly cron job of one of 50 users, due at
minute ``i % 60``, with 100,000 past runs (``--runs``) spread over the jobs. At each
size it prints, from ``--samples`` calls each (p50 and p99, in ms):

- **list, first page**: ``JobStore.list_jobs`` as an admin (50 jobs, the panel's and
  ``shipyard jobs``'s first page), and as one user (that user's first page);
- **claim, nothing due**: ``claim_due`` at an instant when no tick is due, the poll
  every worker makes every second;
- **claim, one minute's ticks**: ``claim_due`` with the clock one minute later each
  call, so that the hourly jobs of that minute (size / 60) become runs, up to 10 of
  them claimed; the runs it makes are removed after the measure, so the past runs
  stay at ``--runs``;
- **create one more job**: ``create_job``'s time (snapshot file, rows, trigger).

The calls are those of the store the scheduler service uses (what its REST handlers
and workers call), in this process: the numbers are the database's and the store's,
without HTTP. Targets (issue #20): listing and claiming under 50 ms at p99 at 10,000
jobs.

Run from the repository root (PostgreSQL at 127.0.0.1:5432, as in the tests)::

    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --sizes 10 1000 --runs 20000 --json /tmp/scale.json

Not measured here yet: the deployer's routing overhead with 1, 10 and 100 endpoints and
the hub's spawn latency with 0, 20 and 50 servers running (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/scale.py`
    sys.path.insert(0, str(REPO))

from sqlalchemy import delete, func, insert, select, text, update  # noqa: E402

from hub_ext.services.scheduler.db import make_engine, upgrade  # noqa: E402
from hub_ext.services.scheduler.models import CreateJob, ListJobsQuery  # noqa: E402
from hub_ext.services.scheduler.orm import Job, Run, Trigger  # noqa: E402
from hub_ext.services.scheduler.store import JobStore, SnapshotStore  # noqa: E402
from tests.conftest import postgres_database  # noqa: E402
from tests.jobstore import NOTEBOOK  # noqa: E402

UTC = timezone.utc
#: The instant the jobs are created at: a Monday, 10:00:30 UTC.
T0 = datetime(2030, 1, 7, 10, 0, 30, tzinfo=UTC)
USERS = 50


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def timed(call, samples: int) -> dict[str, float]:
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return percentiles(took)


def grow(store: JobStore, have: int, size: int) -> list[float]:
    """Create jobs ``have`` .. ``size - 1``; the time of each ``create_job``."""
    took = []
    for i in range(have, size):
        job = CreateJob(
            name=f"job-{i:05d}",
            profile="tiny",
            triggers=[{"kind": "cron", "expression": f"{i % 60} * * * *"}],
        )
        started = time.perf_counter()
        store.create_job(f"user{i % USERS:02d}", job, NOTEBOOK, now=T0)
        took.append(time.perf_counter() - started)
    return took


def past_runs(engine, wanted: int) -> None:
    """Bring the past (ended) runs up to ``wanted``, spread over the jobs, in bulk."""
    with engine.begin() as connection:
        have = connection.execute(select(func.count()).select_from(Run)).scalar_one()
        jobs = connection.execute(select(Job.id, Job.version, Job.profile)).all()
        rows = []
        for n in range(wanted - have):
            job_id, version, profile = jobs[n % len(jobs)]
            ended = T0 - timedelta(minutes=n + 1)
            rows.append(
                {
                    "id": uuid.uuid4().hex,
                    "job_id": job_id,
                    "job_version": version,
                    "status": "succeeded" if n % 10 else "failed",
                    "attempt": 1,
                    "reason": "cron",
                    "parameters": {},
                    "notebook_digest": "0" * 64,
                    "profile": profile,
                    "timeout_seconds": 3600,
                    "queued_at": ended - timedelta(seconds=30),
                    "not_before": ended - timedelta(seconds=30),
                    "started_at": ended - timedelta(seconds=29),
                    "ended_at": ended,
                }
            )
            if len(rows) == 5000:
                connection.execute(insert(Run), rows)
                rows = []
        if rows:
            connection.execute(insert(Run), rows)
    # what PostgreSQL's autovacuum does soon after such a growth: fresh planner statistics
    # (stale ones, from the empty tables, made it scan and sort every job for a page)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))


def measure(store: JobStore, size: int, samples: int) -> dict:
    admin_page = ListJobsQuery(limit=50)
    result = {
        "list_first_page_admin": timed(
            lambda: store.list_jobs("admin", admin=True, query=admin_page), samples
        ),
        "list_first_page_user": timed(
            lambda: store.list_jobs("user07", query=ListJobsQuery(limit=50)), samples
        ),
        # 10:00:30 + 30 s: every tick of minute 0 fired at creation time is in the future
        "claim_nothing_due": timed(
            lambda: store.claim_due(T0 + timedelta(seconds=10), "bench", limit=10), samples
        ),
    }
    # one minute later each call: that minute's hourly jobs are due
    minute = iter(range(1, samples + 1))
    result["claim_one_minutes_ticks"] = timed(
        lambda: store.claim_due(
            T0.replace(second=0) + timedelta(minutes=next(minute), seconds=1), "bench", limit=10
        ),
        min(samples, 59),  # within the hour: each call fires one minute's jobs once
    )
    result["claim_one_minutes_ticks"]["due_per_call"] = size / 60
    hour = T0.replace(minute=0, second=0)
    with store.engine.begin() as connection:
        # the runs made here go (the past runs stay at --runs), and the ticks fired here
        # are due again for the next size's measure
        made = select(func.count()).select_from(Run).where(Run.queued_at >= hour)
        result["claim_one_minutes_ticks"]["runs_made"] = connection.execute(made).scalar_one()
        connection.execute(delete(Run).where(Run.queued_at >= hour))
        connection.execute(
            update(Trigger)
            .where(Trigger.next_fire_at > hour + timedelta(hours=1))
            .values(next_fire_at=Trigger.next_fire_at - text("interval '1 hour'"))
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000])
    parser.add_argument("--runs", type=int, default=100_000, help="past runs in the store")
    parser.add_argument("--samples", type=int, default=200, help="calls per measure")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if sorted(args.sizes) != args.sizes or args.sizes[0] < 1:
        parser.error("--sizes: give growing positive numbers, e.g. --sizes 10 1000 10000")

    results = {}
    with postgres_database() as url, tempfile.TemporaryDirectory() as snapshots:
        upgrade(url)
        engine = make_engine(url)
        store = JobStore(engine, SnapshotStore(Path(snapshots)), clock=lambda: T0)
        have = 0
        try:
            for size in args.sizes:
                created = grow(store, have, size)
                have = size
                past_runs(engine, args.runs)
                one_more = grow(store, have, have + 20)
                with engine.begin() as connection:  # back to `size` jobs
                    connection.execute(delete(Job).where(Job.name >= f"job-{size:05d}"))
                # as the scheduler service does once started: what exists now is frozen
                # out of the cyclic collector's full passes (else they, not the store,
                # are this process's p99)
                gc.collect()
                gc.freeze()
                result = measure(store, size, args.samples)
                result["create_one_more_job"] = percentiles(one_more)
                result["grow_seconds"] = sum(created)
                results[size] = result
                print(f"{size} jobs measured", file=sys.stderr, flush=True)
        finally:
            engine.dispose()

    print(f"\nScheduler store on PostgreSQL, {args.runs} past runs; ms, p50 / p99")
    names = [
        ("list_first_page_admin", "list, first page (admin)"),
        ("list_first_page_user", "list, first page (one user)"),
        ("claim_nothing_due", "claim, nothing due"),
        ("claim_one_minutes_ticks", "claim, one minute's ticks"),
        ("create_one_more_job", "create one more job"),
    ]
    print(f"{'':30}" + "".join(f"{f'{size} jobs':>18}" for size in results))
    for key, label in names:
        cells = "".join(
            f"{r[key]['p50_ms']:8.1f} / {r[key]['p99_ms']:6.1f}  " for r in results.values()
        )
        print(f"{label:30}{cells}")
    largest = results[max(results)]
    worst = max(
        largest[k]["p99_ms"]
        for k in ("list_first_page_admin", "list_first_page_user", "claim_one_minutes_ticks")
    )
    made = ", ".join(
        f"{r['claim_one_minutes_ticks']['runs_made']} at {size}" for size, r in results.items()
    )
    print(f"\nruns the ticks made (59 minutes' worth of hourly jobs): {made}")
    print(f"worst p99 of listing and claiming at {max(results)} jobs: {worst:.1f} ms (target 50)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
