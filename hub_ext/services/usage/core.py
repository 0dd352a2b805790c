"""What the usage service does, apart from HTTP: sample, count, report, recommend.

:class:`UsageCore` holds the ledger (:mod:`hub_ext.host.usage`), the store
(:mod:`.store`) and the price table. :meth:`UsageCore.sample` is one pass
over every ledger record of this Shipyard's cgroup parents (servers, ``-jobs``,
``-models``):

- a record with a final reading (its cgroup was removed): that reading is
  counted and the instance ends; the file is deleted once that is committed
  (a crash in between: the next pass finds the instance ended and only deletes);
- an open record: the cgroup's counters now are counted;
- an open record whose cgroup is gone without a final reading (removed by
  something that kept no ledger, or the machine restarted): the instance ends
  with what was counted (the tail since the last sample is lost; the log says so);
- an open record under the same cgroup name as a newer one: the older cgroup
  was removed without a final reading and the name reused; it ends likewise.

On Kubernetes (:attr:`UsageCore.pods`, :mod:`.kubernetes`) the same pass reads the
running pods from Prometheus and counts each pod's cumulative counters through the
same store, keyed by the pod's UID; an open pod instance that is no longer running
ends with what was counted. A pass whose Prometheus fails counts no pod and ends none.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from hub_ext.host.cgroups import read_counters
from hub_ext.host.usage import UsageLedger

from ..common.errors import Unavailable
from . import metrics
from .accounting import (
    Delta,
    Prices,
    Reading,
    cost,
    duration,
    format_bytes,
    idle_seconds,
    prices_for,
    recommend_cpu,
    recommend_memory,
)
from .kubernetes import PrometheusPods
from .store import Row, UsageStore, group_rows

log = logging.getLogger("shipyard.usage")

#: A count that failed (logged): its ledger record stays, to be counted at the next pass.
_FAILED: Any = object()


class UsageCore:
    """Sampling into the store, and the reports the handlers send."""

    def __init__(
        self,
        ledger: UsageLedger,
        parents: list[str],
        store: UsageStore,
        *,
        prices: Prices,
        profile_prices: Mapping[str, Mapping[str, float]],
        currency: str,
        idle_after: float,
        rightsizing_days: float,
        groups_of: Callable[[str], Awaitable[tuple[str, ...]]] | None = None,
        pods: PrometheusPods | None = None,
    ):
        self.ledger = ledger
        self.parents = parents
        self.store = store
        self.prices = prices
        self.profile_prices = profile_prices
        self.currency = currency
        self.idle_after = idle_after
        self.rightsizing_days = rightsizing_days
        self.groups_of = groups_of
        self.pods = pods
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="usage")
        self.last_sample: float | None = None

    async def run(self, fn, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "last_sample": self.last_sample}

    # ------------------------------------------------------------ sampling

    def sample(self, now: float | None = None) -> Delta:
        """One pass over the ledger (see the module's docstring); the usage it counted."""
        started = time.monotonic()
        total = Delta()
        records = self.ledger.records(self.parents)
        newest: dict[tuple[str, str], float] = {}
        for _, record in records:
            if record.get("final") is None:
                key = (record["parent"], record["cgroup"])
                newest[key] = max(newest.get(key, 0.0), float(record["started"]))
        # read every counter first, then count them all in one transaction
        planned: list[tuple[Path | None, dict[str, Any], Reading | None, bool]] = []
        for path, record in records:
            try:
                plan = self._plan_one(path, record, newest, now)
            except Exception:  # one bad record never stops the others
                log.exception("Could not read the usage of %s", path)
                continue
            if plan is not None:
                planned.append(plan)
        deltas = self._count_all(
            [(record, reading, final) for _, record, reading, final in planned]
        )
        live = 0
        for (forget, record, _, final), delta in zip(planned, deltas, strict=True):
            if forget is not None and delta is not _FAILED:
                self.ledger.forget(forget)
            if delta is None or delta is _FAILED:
                continue
            if not final:
                live += 1
            total = total + delta
            self._export(record, delta)
        if self.pods is not None:
            pod_total, pod_live = self._sample_pods(self.pods, now)
            total, live = total + pod_total, live + pod_live
        metrics.LIVE.set(live)
        metrics.SAMPLE_SECONDS.observe(time.monotonic() - started)
        self.last_sample = time.time() if now is None else now
        return total

    def _sample_pods(self, pods: PrometheusPods, now: float | None) -> tuple[Delta, int]:
        """Count the running pods' readings; end the open pod instances no longer running.

        Returns the usage counted and the number of running pods counted.
        """
        at = time.time() if now is None else now
        try:
            running = pods.read(at)
        except Exception as e:  # Prometheus down or a bad answer: the next pass retries
            log.warning("Could not read the pods' usage from %s: %s", pods.url, e)
            return Delta(), 0
        seen = {record["id"] for record, _ in running}
        items: list[tuple[dict[str, Any], Reading | None, bool]] = [
            (record, reading, False) for record, reading in running
        ]
        for instance in self.store.open_instances(pods.parent):
            if instance["id"] not in seen:
                items.append((instance, None, True))
        total = Delta()
        live = 0
        for (record, _, final), delta in zip(items, self._count_all(items), strict=True):
            if delta is None or delta is _FAILED:
                continue
            live += 0 if final else 1
            total = total + delta
            self._export(record, delta)
        return total, live

    def _export(self, record: dict[str, Any], delta: Delta) -> None:
        """Add ``delta`` to the Prometheus series of ``record``'s owner, profile and kind."""
        profile = str(record.get("profile") or "")
        labels = (str(record.get("owner") or ""), profile, str(record.get("kind")))
        metrics.CPU_SECONDS.labels(*labels).inc(delta.cpu_seconds)
        metrics.MEM_GIB_HOURS.labels(*labels).inc(delta.mem_gib_hours)
        metrics.GPU_HOURS.labels(*labels).inc(delta.gpu_hours)
        prices = prices_for(profile, self.prices, self.profile_prices)
        metrics.COST.labels(*labels).inc(cost(delta, prices))

    def _count_all(
        self, items: list[tuple[dict[str, Any], Reading | None, bool]]
    ) -> list[Delta | None]:
        """The store's counts of ``items``; one by one when the pass's transaction fails."""
        try:
            return self.store.count_all(items)
        except Exception:
            log.exception("Could not count a pass of %d readings at once; one by one", len(items))
        counted: list[Delta | None] = []
        for record, reading, final in items:
            try:
                counted.append(self.store.count(record, reading, final))
            except Exception:  # one bad record never stops the others
                log.exception("Could not count the usage of %s", record.get("cgroup"))
                counted.append(_FAILED)
        return counted

    def _plan_one(
        self, path, record: dict[str, Any], newest: dict[tuple[str, str], float], now: float | None
    ) -> tuple[Path | None, dict[str, Any], Reading | None, bool] | None:
        """What to count of ``record``: (the ledger file to forget once counted, the
        record, its reading, whether it is the last one)."""
        final = record.get("final")
        if final is not None:
            return path, record, _reading(final), True
        if float(record["started"]) < newest[(record["parent"], record["cgroup"])]:
            log.warning("Cgroup %s was made again without a last reading", record["cgroup"])
            return path, record, None, True
        at = time.time() if now is None else now
        counters = read_counters(record["driver"], record["dirs"])
        if counters is None:
            # gone: the remover may have written the last reading meanwhile
            again = self.ledger.records([record["parent"]])
            for other_path, other in again:
                if other["id"] == record["id"] and other.get("final") is not None:
                    return self._plan_one(other_path, other, newest, now)
            log.warning(
                "Cgroup %s of %s is gone without a last reading: its usage since the last "
                "sample is not counted",
                record["cgroup"],
                record["owner"],
            )
            return path, record, None, True
        reading = Reading(at, counters.cpu_usec, counters.mem_current, counters.mem_peak)
        return None, record, reading, False

    # ------------------------------------------------------------ reports

    def _cost(self, row: Row) -> float:
        return cost(row.usage, prices_for(row.profile, self.prices, self.profile_prices))

    async def report(
        self, by: str, since: float, until: float, owner: str | None
    ) -> list[dict[str, Any]]:
        """Usage and cost by ``by`` over [since, until); only ``owner``'s when given.

        ``by="day"``: one row per UTC day the period touches, oldest first, days without
        usage included (zeros), keyed ``YYYY-MM-DD``: a series to plot. Any other ``by``:
        the rows with usage, the costliest first.
        """
        column = {"group": "user", "day": "hour"}.get(by, by)
        rows = await self.run(self.store.usage, column, since, until, owner)
        if by == "day":
            rows = [Row(r.owner, r.profile, day_of(float(r.key)), r.usage) for r in rows]
        if by == "group":
            groups: dict[str, tuple[str, ...]] = {}
            for name in {r.owner for r in rows}:
                try:
                    groups[name] = await self.groups_of(name) if self.groups_of else ()
                except Exception as e:  # the hub restarting: the caller retries
                    raise Unavailable(f"cannot read the groups of {name} from the hub: {e}") from e
            rows = group_rows(rows, groups)
        sums: dict[str, tuple[Delta, float]] = defaultdict(lambda: (Delta(), 0.0))
        for row in rows:
            usage, money = sums[row.key]
            sums[row.key] = (usage + row.usage, money + self._cost(row))
        if by == "day":
            for day in days_between(since, until):
                sums.setdefault(day, (Delta(), 0.0))
            ordered = sorted(sums.items())
        else:
            ordered = sorted(sums.items(), key=lambda kv: -kv[1][1])
        return [
            {
                "key": key,
                "cpu_seconds": usage.cpu_seconds,
                "cpu_hours": usage.cpu_seconds / 3600,
                "mem_gib_hours": usage.mem_gib_hours,
                "gpu_hours": usage.gpu_hours,
                "wall_hours": usage.wall_seconds / 3600,
                "cost": round(money, 6),
            }
            for key, (usage, money) in ordered
        ]

    async def waste(self, days: float, owner: str | None, now: float | None = None) -> dict:
        """Idle servers holding resources, and per-profile right-sizing over ``days``."""
        now = time.time() if now is None else now
        instances = await self.run(self.store.instances, now - days * 86400, owner)
        idle = []
        for i in instances:
            if i.ended is not None or i.kind != "server":
                continue
            seconds = idle_seconds(now, i.started, i.last_busy_at)
            if seconds < self.idle_after:
                continue
            holding = [f"{i.gpus} GPU{'s' if i.gpus != 1 else ''}"] if i.gpus else []
            if i.last_mem:
                holding.append(format_bytes(i.last_mem) + " of memory")
            idle.append(
                {
                    "owner": i.owner,
                    "object": i.object,
                    "profile": i.profile,
                    "gpus": i.gpus,
                    "mem_bytes": i.last_mem or 0,
                    "idle_hours": seconds / 3600,
                    "message": (
                        f"{i.object} ({i.profile}) has been idle for {duration(seconds)} "
                        f"holding {' and '.join(holding) or 'its cgroup'}: stop it"
                        + (" to free its GPUs" if i.gpus else "")
                    ),
                }
            )
        idle.sort(key=lambda x: (-x["gpus"], -x["idle_hours"]))
        by_profile: dict[str, list] = defaultdict(list)
        for i in instances:
            if i.readings:
                by_profile[i.profile].append(i)
        recommendations = []
        for profile, items in sorted(by_profile.items()):
            mem_limit = items[-1].mem_limit
            cpu_limit = items[-1].cpu_limit
            for rec in (
                recommend_memory(profile, mem_limit, [i.peak_mem for i in items], days),
                recommend_cpu(profile, cpu_limit, [i.peak_cores for i in items], days),
            ):
                if rec is not None:
                    recommendations.append(asdict(rec))
        return {"days": days, "idle": idle, "rightsizing": recommendations}


def day_of(seconds: float) -> str:
    """The UTC day of a time in seconds since the epoch, as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(seconds, timezone.utc).date().isoformat()


def days_between(since: float, until: float) -> list[str]:
    """The UTC days that [since, until) touches, oldest first, as ``YYYY-MM-DD``."""
    first = int(since // 86400)
    last = int(math.ceil(until / 86400))
    return [day_of(d * 86400.0) for d in range(first, max(last, first + 1))]


def _reading(final: Mapping[str, Any]) -> Reading:
    return Reading(
        float(final["at"]), final.get("cpu_usec"), final.get("mem_current"), final.get("mem_peak")
    )
