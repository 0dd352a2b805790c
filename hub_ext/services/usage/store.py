"""The usage database: readings counted once, and the sums the report and the API read.

:meth:`UsageStore.count_all` is the one write (:meth:`UsageStore.count` is it for one
reading): in one transaction it locks the instances' rows (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), counts each reading against the last one
counted
(:func:`~.accounting.advance`), adds the difference to the instance's totals
and to its hour, and stores the reading as the new last one. A reading counted
twice (a final reading seen again after a restart, two samplers at once)
therefore adds nothing the second time, and a restart of the service loses
nothing: the cgroup's counters are cumulative, the next reading covers the gap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .accounting import Counted, Delta, Reading, advance
from .orm import Hour, Instance

#: The dimensions a report groups by (``group`` is resolved from ``user`` by the caller;
#: ``hour`` is the hour's start in seconds since the epoch, as text, which the caller bins
#: into days).
BY_COLUMNS = {
    "user": Instance.owner,
    "profile": Instance.profile,
    "object": Instance.object,
    "kind": Instance.kind,
    "hour": Hour.hour,
}


@dataclass(frozen=True)
class Row:
    """Usage of one (owner, profile, key) over a period."""

    owner: str
    profile: str
    key: str
    usage: Delta


class UsageStore:
    """Counting readings into the database, and reading sums back."""

    def __init__(self, engine: Engine, busy_cores: float = 0.05):
        self.engine = engine
        self.busy_cores = busy_cores
        self._postgres = engine.dialect.name == "postgresql"
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")

    # ------------------------------------------------------------ writes

    def count(self, record: dict[str, Any], reading: Reading | None, final: bool) -> Delta | None:
        """Count ``reading`` of the ledger ``record``'s instance; end it when ``final``.

        ``reading`` None with ``final``: the cgroup is gone without a last reading
        (lost): the instance ends with what was counted. Returns the usage added,
        or None when the instance had already ended (nothing counted twice).
        """
        return self.count_all([(record, reading, final)])[0]

    def count_all(
        self, items: list[tuple[dict[str, Any], Reading | None, bool]]
    ) -> list[Delta | None]:
        """:meth:`count` for each ``(record, reading, final)``, all in one transaction.

        A sampling pass writes once: the instances' rows and their current hours are
        read (and locked) with one query each, the counts made in memory, and the
        changes written at one commit; a pass over 100 cgroups was 100 transactions
        (bench/accounting.py). The same record twice counts its second reading
        against the first.
        """
        if not items:
            return []
        for attempt in range(2):
            try:
                with Session(self._writer) as session, session.begin():
                    loaded = self._load(session, items)  # held: the identity map is weak
                    counted = [self._count(session, *item) for item in items]
                    del loaded
                    return counted
            except IntegrityError:  # a second writer made a row first: count against it
                if attempt:
                    raise
        return []  # pragma: no cover - the loop returns or raises

    def _load(
        self, session: Session, items: list[tuple[dict[str, Any], Reading | None, bool]]
    ) -> list[Any]:
        """Put the instances' rows (locked) and their readings' hours in ``session``.

        Returns them: the session's identity map holds its objects weakly, so the caller
        keeps them for :meth:`_count`'s ``session.get`` to find them there.
        """
        ids = sorted({record["id"] for record, _, _ in items})
        query = select(Instance).where(Instance.id.in_(ids))
        if self._postgres:
            query = query.with_for_update()
        loaded: list[Any] = list(session.scalars(query).all())
        hours = sorted({int(r.at // 3600 * 3600) for _, r, _ in items if r is not None})
        if hours:
            loaded += session.scalars(
                select(Hour).where(Hour.instance_id.in_(ids), Hour.hour.in_(hours))
            ).all()
        return loaded

    def _count(
        self, session: Session, record: dict[str, Any], reading: Reading | None, final: bool
    ) -> Delta | None:
        # loaded and locked by _load: from the session's identity map, no query
        row = session.get(Instance, record["id"])
        if row is None:
            row = _new_instance(record)
            session.add(row)
            session.flush()
        if row.ended is not None:
            return None
        delta = Delta()
        if (
            reading is not None
            and reading.cpu_usec is not None
            and reading.cpu_usec < row.last_cpu_usec
        ):
            # a counter below the last counted: another cgroup now has the name (this one
            # was removed without a last reading); it ends with what was counted
            reading, final = None, True
        if reading is not None:
            state = Counted(
                gpus=row.gpus,
                last_at=row.last_at,
                last_cpu_usec=row.last_cpu_usec,
                last_mem=row.last_mem,
                peak_mem=row.peak_mem,
                peak_cores=row.peak_cores,
                last_busy_at=row.last_busy_at,
            )
            state, delta = advance(state, reading, self.busy_cores)
            row.last_at = state.last_at
            row.last_cpu_usec = state.last_cpu_usec
            row.last_mem = state.last_mem
            row.peak_mem = state.peak_mem
            row.peak_cores = state.peak_cores
            row.last_busy_at = state.last_busy_at
            row.cpu_seconds += delta.cpu_seconds
            row.mem_gib_hours += delta.mem_gib_hours
            row.gpu_hours += delta.gpu_hours
            row.wall_seconds += delta.wall_seconds
            row.readings += 1
            if delta != Delta():
                hour = int(reading.at // 3600 * 3600)
                bucket = session.get(Hour, (row.id, hour))
                if bucket is None:
                    bucket = Hour(
                        instance_id=row.id,
                        hour=hour,
                        cpu_seconds=0.0,
                        mem_gib_hours=0.0,
                        gpu_hours=0.0,
                        wall_seconds=0.0,
                    )
                    session.add(bucket)
                bucket.cpu_seconds += delta.cpu_seconds
                bucket.mem_gib_hours += delta.mem_gib_hours
                bucket.gpu_hours += delta.gpu_hours
                bucket.wall_seconds += delta.wall_seconds
        if final:
            row.ended = reading.at if reading is not None else row.last_at
        return delta

    def open_instances(self, parent: str) -> list[dict[str, Any]]:
        """The instances under ``parent`` not ended yet, as records :meth:`count` takes."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Instance).where(Instance.parent == parent, Instance.ended.is_(None))
            ).all()
            return [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "owner": r.owner,
                    "object": r.object,
                    "profile": r.profile,
                    "parent": r.parent,
                    "cgroup": r.cgroup,
                    "gpus": r.gpus,
                    "started": r.started,
                }
                for r in rows
            ]

    def ended(self, instance_id: str) -> bool:
        """Whether the instance's last reading is counted."""
        with Session(self.engine) as session:
            ended = session.scalar(select(Instance.ended).where(Instance.id == instance_id))
        return ended is not None

    # ------------------------------------------------------------ reads

    def usage(self, by: str, since: float, until: float, owner: str | None = None) -> list[Row]:
        """Usage summed by (owner, profile, ``by``) over the hours in [since, until).

        ``by`` is ``user``, ``profile``, ``object``, ``kind`` or ``hour`` (the key is
        then the hour's start in seconds since the epoch); ``owner`` limits it to one
        user's instances. Hours are whole: ``since`` counts from the start of its
        hour.
        """
        key = BY_COLUMNS[by]
        start = int(since // 3600 * 3600)
        query = (
            select(
                Instance.owner,
                Instance.profile,
                key,
                func.sum(Hour.cpu_seconds),
                func.sum(Hour.mem_gib_hours),
                func.sum(Hour.gpu_hours),
                func.sum(Hour.wall_seconds),
            )
            .join(Hour, Hour.instance_id == Instance.id)
            .where(and_(Hour.hour >= start, Hour.hour < until))
            .group_by(Instance.owner, Instance.profile, key)
        )
        if owner is not None:
            query = query.where(Instance.owner == owner)
        with Session(self.engine) as session:
            rows = session.execute(query).all()
        return [
            Row(o, p, str(k), Delta(float(c or 0), float(m or 0), float(g or 0), float(w or 0)))
            for o, p, k, c, m, g, w in rows
        ]

    def instances(
        self, since: float, owner: str | None = None, live_only: bool = False
    ) -> list[Instance]:
        """Instances alive at some point since ``since`` (live ones only, with ``live_only``)."""
        query = select(Instance)
        if live_only:
            query = query.where(Instance.ended.is_(None))
        else:
            query = query.where((Instance.ended.is_(None)) | (Instance.ended >= since))
        if owner is not None:
            query = query.where(Instance.owner == owner)
        with Session(self.engine) as session:
            rows = list(session.scalars(query.order_by(Instance.started)))
            session.expunge_all()
        return rows


def _new_instance(record: dict[str, Any]) -> Instance:
    started = float(record["started"])
    return Instance(
        id=record["id"],
        kind=str(record["kind"])[:16],
        owner=str(record["owner"])[:255],
        object=str(record["object"])[:512],
        profile=str(record["profile"])[:63],
        parent=str(record["parent"])[:255],
        cgroup=str(record["cgroup"])[:255],
        gpus=int(record.get("gpus") or 0),
        cpu_limit=record.get("cpu_limit"),
        mem_limit=record.get("mem_limit"),
        started=started,
        ended=None,
        last_at=started,
        last_cpu_usec=0,
        last_mem=None,
        peak_mem=0,
        peak_cores=0.0,
        last_busy_at=None,
        cpu_seconds=0.0,
        mem_gib_hours=0.0,
        gpu_hours=0.0,
        wall_seconds=0.0,
        readings=0,
    )


def group_rows(rows: Iterable[Row], groups_of: dict[str, tuple[str, ...]]) -> list[Row]:
    """Rows by user turned into rows by group: a user's usage counts in each of their groups.

    A user in no group counts under ``(no group)``.
    """
    sums: dict[tuple[str, str], Delta] = defaultdict(Delta)
    for row in rows:
        for group in groups_of.get(row.owner) or ("(no group)",):
            sums[(group, row.profile)] = sums[(group, row.profile)] + row.usage
    return [Row("", profile, group, usage) for (group, profile), usage in sums.items()]
