"""The deployer's desired state: deployments, versions, traffic splits and grants.

:class:`DeploymentStore` is synchronous (the core calls it from a thread
pool, STYLE rule 13) and holds nothing beyond the database, so a restart
loses nothing. It decides every state change in one transaction, and tells
the caller what the backend must do about it (start a version, stop the
versions that lost their traffic); it never talks to a backend itself.

Traffic rules, enforced here and nowhere else:

- Only ``ready`` versions are in the split, which sums to 100 (or is empty
  while the first version starts).
- A version becoming ready takes its ``pending_percent``: 100 replaces the
  split; a canary ``p`` takes ``p`` and the others are scaled to ``100 - p``
  (largest remainder, so the sum stays exactly 100); 0 leaves it ready and
  unrouted.
- The latest traffic decision wins: promote, rollback and an explicit split
  cancel what other versions were still waiting to take.
- A version that loses all of its traffic is no longer wanted: the core
  stops it after the drain period, once requests in flight to it ended. A
  version that never had traffic (a canary of 0) stays until traffic moves
  through it.
- A rollback to a stopped version starts it again and switches the traffic
  only when it is ready; until then the current versions keep serving.
- A version created with a canary policy is ``waiting``; when it becomes
  ready it is ``watching`` from then until ``ends_at`` (both fixed then),
  compared with the version that had most of the traffic (its baseline).
  :meth:`DeploymentStore.decide_canary` records the core's decision and moves
  the traffic in one transaction, only from ``watching`` (a decision is never
  taken twice). A traffic change by hand (a split, a promote, a rollback)
  during the window ends the watch: ``stopped``, saying why.

Other users' deployments are indistinguishable from missing ones
(SECURITY rule 3): every method takes the owner, and the core passes the
caller's name unless the caller is an admin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..common.errors import Conflict, NotFound
from ..common.orm import utcnow
from .models import (
    CanaryFigures,
    CanaryPolicy,
    CanaryWatch,
    CreateDeployment,
    CreateVersion,
    DescribeDeployment,
    DescribeVersion,
    Grants,
)
from .orm import Deployment, Version


@dataclass
class Change:
    """A committed change and what the backend must do about it.

    Attributes
    ----------
    deployment : DescribeDeployment
        The deployment after the change.
    start : list of int
        Versions to start (they are ``starting``; the traffic waits for them).
    drain : list of int
        Versions that lost their traffic: stop them after the drain period.
    """

    deployment: DescribeDeployment
    start: list[int] = field(default_factory=list)
    drain: list[int] = field(default_factory=list)


@dataclass
class Watch:
    """A canary being watched: what the core needs to judge it."""

    owner: str
    name: str
    version: int
    policy: CanaryPolicy
    started_at: datetime
    ends_at: datetime
    baseline: int | None
    ready: bool


#: Watch states a traffic change by hand ends.
OPEN_WATCH = ("waiting", "watching")


def primary_version(traffic: dict[str, int]) -> int | None:
    """The version with the largest share (the newest of equals), or None for no traffic."""
    if not traffic:
        return None
    return max((share, int(v)) for v, share in traffic.items())[1]


def scale_split(traffic: dict[int, int], total: int) -> dict[int, int]:
    """Scale ``traffic`` (summing to 100) to sum to ``total``, by largest remainder."""
    exact = {v: share * total / 100 for v, share in traffic.items()}
    result = {v: int(x) for v, x in exact.items()}
    left = total - sum(result.values())
    for v in sorted(exact, key=lambda v: (exact[v] - result[v], v), reverse=True)[:left]:
        result[v] += 1
    return {v: s for v, s in result.items() if s > 0}


class DeploymentStore:
    """Deployments and versions in the database; see the module docstring.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        From :func:`.db.make_engine`; the schema is upgraded already.
    base_path : str
        The service's public prefix (``/services/deployer/``), for the deployments' URLs.
    clock : callable
        Returns the current timezone-aware time.
    """

    def __init__(
        self,
        engine: Engine,
        base_path: str = "/services/deployer/",
        clock: Callable[[], datetime] = utcnow,
    ):
        self.engine = engine
        self.base_path = base_path if base_path.endswith("/") else base_path + "/"
        self.clock = clock
        self._read = sessionmaker(engine, expire_on_commit=False)
        # BEGIN IMMEDIATE on SQLite: read-decide-write is atomic across processes
        self._write = sessionmaker(
            engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    # ------------------------------------------------------------ conversion

    def url_of(self, owner: str, name: str) -> str:
        return f"{self.base_path}models/{quote(owner, safe='')}/{name}/invocations"

    @staticmethod
    def _describe_version(row: Version) -> DescribeVersion:
        return DescribeVersion(
            version=row.version,
            model_uri=row.model_uri,
            profile=row.profile,
            state=row.state,
            reason=row.reason,
            created_at=row.created_at,
            ready_at=row.ready_at,
            stopped_at=row.stopped_at,
            pending_percent=row.pending_percent,
            canary=DeploymentStore._describe_watch(row),
            signature=row.signature,
            lineage=row.lineage,
        )

    @staticmethod
    def _describe_watch(row: Version) -> CanaryWatch | None:
        if row.canary_policy is None or row.canary_state is None:
            return None
        figures = row.canary_figures or {}
        baseline = figures.get("baseline")
        return CanaryWatch(
            policy=CanaryPolicy.model_validate(row.canary_policy),
            state=row.canary_state,  # type: ignore[arg-type]  # the CHECK constraint's values
            reason=row.canary_reason,
            started_at=row.canary_started_at,
            ends_at=row.canary_ends_at,
            decided_at=row.canary_decided_at,
            canary=CanaryFigures.model_validate(figures.get("canary") or {}),
            baseline=None if baseline is None else CanaryFigures.model_validate(baseline),
            baseline_version=row.canary_baseline,
        )

    def _describe(self, row: Deployment) -> DescribeDeployment:
        return DescribeDeployment(
            owner=row.owner,
            name=row.name,
            url=self.url_of(row.owner, row.name),
            profile=row.profile,
            replicas=row.replicas,
            traffic=dict(sorted(row.traffic.items(), key=lambda kv: int(kv[0]))),
            previous_version=row.previous_version,
            versions=[self._describe_version(v) for v in row.versions],
            grants=Grants.model_validate(row.grants),
            secrets=row.secrets or [],
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    # ---------------------------------------------------------------- lookup

    @staticmethod
    def _load(session: Session, owner: str, name: str, lock: bool = False) -> Deployment:
        query = (
            select(Deployment)
            .where(Deployment.owner == owner, Deployment.name == name)
            .options(selectinload(Deployment.versions))
        )
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"no deployment {name!r}")
        return row

    @staticmethod
    def _version(row: Deployment, version: int) -> Version:
        for v in row.versions:
            if v.version == version:
                return v
        raise NotFound(f"deployment {row.name!r} has no version {version}")

    def get(self, owner: str, name: str) -> DescribeDeployment:
        with self._read() as session:
            return self._describe(self._load(session, owner, name))

    def get_version(self, owner: str, name: str, version: int) -> DescribeVersion:
        with self._read() as session:
            return self._describe_version(self._version(self._load(session, owner, name), version))

    def list(self, owner: str | None = None) -> list[DescribeDeployment]:
        """Deployments of ``owner``, or everyone's (None), by owner and name."""
        with self._read() as session:
            query = select(Deployment).options(selectinload(Deployment.versions))
            if owner is not None:
                query = query.where(Deployment.owner == owner)
            rows = session.scalars(query.order_by(Deployment.owner, Deployment.name)).all()
            return [self._describe(r) for r in rows]

    def wanted(self) -> list[tuple[DescribeDeployment, DescribeVersion]]:
        """Every version that should run, for a deployer that (re)starts."""
        with self._read() as session:
            rows = session.scalars(
                select(Version)
                .where(Version.wanted.is_(True))
                .options(selectinload(Version.deployment).selectinload(Deployment.versions))
                .order_by(Version.id)
            ).all()
            return [(self._describe(v.deployment), self._describe_version(v)) for v in rows]

    def recover(self) -> int:
        """At start, after the backend's sweep: every version that should run is ``starting``.

        Versions that were running but no longer wanted (the deployer stopped
        while they drained) are ``stopped``. Returns how many versions are to start.
        """
        now = self.clock()
        with self._write.begin() as session:
            rows = session.scalars(
                select(Version).where(Version.state.in_(("starting", "ready")))
            ).all()
            for v in rows:
                if not v.wanted:
                    v.state, v.stopped_at = "stopped", now
            wanted = session.scalars(select(Version).where(Version.wanted.is_(True))).all()
            for v in wanted:
                v.state = "starting"
            return len(wanted)

    # ---------------------------------------------------------------- create

    def create(self, owner: str, request: CreateDeployment, profile: str) -> Change:
        """A deployment with version 1 ``starting`` (it takes all traffic when ready)."""
        now = self.clock()
        row = Deployment(
            owner=owner,
            name=request.name,
            profile=profile,
            replicas=request.replicas,
            traffic={},
            previous_version=None,
            grants=Grants().model_dump(),
            secrets=list(request.secrets),
            created_at=now,
            updated_at=now,
        )
        row.versions.append(self._new_version(1, request, profile, 100, now))
        try:
            with self._write.begin() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(
                f"you already have a deployment {request.name!r}: deploy a new version of it "
                f"(POST api/deployments/{request.name}/versions) or choose another name"
            ) from None
        return Change(self.get(owner, request.name), start=[1])

    @staticmethod
    def _new_version(
        number: int,
        request: CreateDeployment | CreateVersion,
        profile: str,
        pending: int,
        now: datetime,
    ) -> Version:
        return Version(
            version=number,
            model_uri=request.model_uri,
            profile=profile,
            state="starting",
            reason=None,
            wanted=True,
            pending_percent=pending,
            training_summary=request.training_summary,
            signature=request.signature,
            lineage=request.lineage,
            created_at=now,
        )

    def add_version(
        self, owner: str, name: str, request: CreateVersion, profile: str
    ) -> tuple[Change, DescribeVersion]:
        """A new version, ``starting``; it takes its traffic when ready."""
        now = self.clock()
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            number = max((v.version for v in row.versions), default=0) + 1
            pending = 100 if request.canary_percent is None else request.canary_percent
            if request.canary is not None:
                if not row.traffic:
                    raise Conflict(
                        f"{name!r} has no version serving yet: a watched canary needs a "
                        "production version to compare it with and to roll back to; wait "
                        "until a version is ready, or deploy this one without a canary"
                    )
                pending = request.canary.percent
            if not row.traffic and pending < 100:
                pending = 100  # nothing serves yet: a canary of nothing is all of it
            version = self._new_version(number, request, profile, pending, now)
            if request.canary is not None:
                version.canary_policy = request.canary.model_dump()
                version.canary_state = "waiting"
            row.versions.append(version)
            row.profile = profile
            if request.secrets is not None:
                row.secrets = list(request.secrets)
            row.updated_at = now
            session.flush()
            described = self._describe_version(version)
        return Change(self.get(owner, name), start=[number]), described

    def training_summary(self, owner: str, name: str, version: int) -> dict | None:
        with self._read() as session:
            return self._version(self._load(session, owner, name), version).training_summary

    # ------------------------------------------------------- version states

    def mark_ready(self, owner: str, name: str, version: int) -> Change:
        """The version's replicas are healthy: it takes its pending share of the traffic.

        Raises :class:`NotFound` when the deployment or version went away
        meanwhile, and leaves a version nobody wants any more unrouted (the
        change's ``drain`` lists it: the caller stops it).
        """
        now = self.clock()
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            v = self._version(row, version)
            if not v.wanted:
                return Change(self._describe(row), drain=[version])
            v.state, v.ready_at, v.reason = "ready", now, None
            pending, v.pending_percent = v.pending_percent, None
            traffic = {int(k): s for k, s in row.traffic.items()}
            if v.canary_state == "waiting" and v.canary_policy is not None:
                # the window is fixed once: a restarted deployer resumes the same one
                window = CanaryPolicy.model_validate(v.canary_policy).window_seconds
                v.canary_state, v.canary_started_at = "watching", now
                v.canary_ends_at = now + timedelta(seconds=window)
                v.canary_baseline = primary_version(row.traffic)
            if pending is None or (pending == 0 and traffic):
                split = traffic
            elif pending == 100 or not traffic:
                split = {version: 100}
            else:
                split = scale_split(traffic, 100 - pending)
                split[version] = split.get(version, 0) + pending
            drain = self._set_split(row, split, now)
            return Change(self._describe(row), drain=drain)

    def mark_failed(self, owner: str, name: str, version: int, reason: str) -> None:
        """The version could not start: recorded with its reason; the traffic is untouched."""
        self._finish(owner, name, version, "failed", reason)

    def mark_stopped(self, owner: str, name: str, version: int) -> None:
        self._finish(owner, name, version, "stopped", None)

    def _finish(self, owner: str, name: str, version: int, state: str, reason: str | None) -> None:
        now = self.clock()
        try:
            with self._write.begin() as session:
                row = self._load(session, owner, name, lock=True)
                v = self._version(row, version)
                v.state, v.reason, v.wanted, v.pending_percent = state, reason, False, None
                v.stopped_at = now
                if v.canary_state in OPEN_WATCH:
                    self._end_watch(v, f"the version {state} before its window ended", now)
                if str(version) in row.traffic:  # never leave a split over a dead version
                    split = {int(k): s for k, s in row.traffic.items() if k != str(version)}
                    self._set_split(row, scale_split(split, 100) if split else {}, now)
        except NotFound:
            pass  # deleted meanwhile: nothing to record

    def is_wanted(self, owner: str, name: str, version: int) -> bool:
        try:
            with self._read() as session:
                return self._version(self._load(session, owner, name), version).wanted
        except NotFound:
            return False

    # --------------------------------------------------------------- traffic

    def _set_split(self, row: Deployment, split: dict[int, int], now: datetime) -> list[int]:
        """Install ``split``; return the versions that lost all their traffic (unwanted now)."""
        old = {int(k): s for k, s in row.traffic.items()}
        new_traffic = {str(v): s for v, s in sorted(split.items()) if s > 0}
        before, after = primary_version(row.traffic), primary_version(new_traffic)
        if before is not None and after is not None and before != after:
            row.previous_version = before
        row.traffic = new_traffic
        row.updated_at = now
        lost = sorted(v for v in old if v not in split or split[v] == 0)
        for v in row.versions:
            if v.version in lost:
                v.wanted = False
                if v.canary_state in OPEN_WATCH:
                    self._end_watch(v, "the version lost its traffic before its window ended", now)
        return lost

    @staticmethod
    def _end_watch(v: Version, why: str, now: datetime) -> None:
        v.canary_state, v.canary_reason, v.canary_decided_at = "stopped", why, now

    def _stop_watches(self, row: Deployment, why: str, now: datetime) -> None:
        """A traffic change by hand: every open watch of the deployment ends, saying so."""
        for v in row.versions:
            if v.canary_state in OPEN_WATCH:
                self._end_watch(v, f"the watch was stopped: {why}", now)

    @staticmethod
    def _cancel_pending(row: Deployment, keep: int | None = None) -> list[int]:
        """Other versions stop waiting to take traffic; starting ones are no longer wanted."""
        dropped = []
        for v in row.versions:
            if v.version != keep and v.pending_percent is not None:
                v.pending_percent = None
                if v.state == "starting":
                    v.wanted = False
                    dropped.append(v.version)
        return dropped

    def set_traffic(self, owner: str, name: str, split: dict[int, int]) -> Change:
        """Install an explicit split over ready versions."""
        now = self.clock()
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            for number in split:
                v = self._version(row, number)
                if v.state != "ready":
                    raise Conflict(
                        f"version {number} is {v.state}: only ready versions take traffic "
                        f"(ready: {', '.join(str(x.version) for x in row.versions if x.state == 'ready') or 'none'})"
                    )
            shares = ", ".join(f"version {v}: {p} %" for v, p in sorted(split.items()))
            self._stop_watches(row, f"the traffic was set by hand ({shares})", now)
            drain = self._cancel_pending(row) + self._set_split(row, split, now)
            return Change(self._describe(row), drain=sorted(set(drain)))

    def send_all(self, owner: str, name: str, version: int | None, rollback: bool) -> Change:
        """Promote or roll back: all traffic to ``version`` (started first if stopped).

        ``version`` None (rollback only): the version that served before the current one.
        """
        now = self.clock()
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            if version is None:
                if row.previous_version is None:
                    raise Conflict(
                        "no earlier version has served this deployment: name the version "
                        'to roll back to ({"version": N})'
                    )
                version = row.previous_version
            self._check_send(row, version, rollback)
            verb = "rolled back to" if rollback else "promoted"
            self._stop_watches(row, f"version {version} was {verb} by hand", now)
            return self._send_all(row, version, now)

    def _check_send(self, row: Deployment, version: int, rollback: bool) -> None:
        v = self._version(row, version)
        if v.state == "failed":
            verb = "roll back to" if rollback else "promote"
            raise Conflict(
                f"cannot {verb} version {version}: it failed to start ({v.reason}); "
                "deploy its model again as a new version"
            )

    def _send_all(self, row: Deployment, version: int, now: datetime) -> Change:
        """All traffic to ``version`` (checked by :meth:`_check_send`), started if stopped."""
        v = self._version(row, version)
        drain = self._cancel_pending(row, keep=version)
        start: list[int] = []
        if v.state == "ready":
            v.wanted = True
            drain += self._set_split(row, {version: 100}, now)
        else:
            if v.state == "stopped":
                v.state, v.reason, v.stopped_at = "starting", None, None
                start.append(version)
            v.wanted, v.pending_percent = True, 100
            row.updated_at = now
        drain = sorted(set(drain) - {version})
        return Change(self._describe(row), start=start, drain=drain)

    # ------------------------------------------------------------- canaries

    def watches(self) -> Sequence[Watch]:
        """Every canary being watched (``watching``), for the core's watch loop."""
        with self._read() as session:
            rows = session.scalars(
                select(Version)
                .where(Version.canary_state == "watching")
                .options(selectinload(Version.deployment))
                .order_by(Version.id)
            ).all()
            return [
                Watch(
                    owner=v.deployment.owner,
                    name=v.deployment.name,
                    version=v.version,
                    policy=CanaryPolicy.model_validate(v.canary_policy),
                    started_at=v.canary_started_at,  # type: ignore[arg-type]  # set with watching
                    ends_at=v.canary_ends_at,  # type: ignore[arg-type]
                    baseline=v.canary_baseline,
                    ready=v.state == "ready",
                )
                for v in rows
            ]

    def decide_canary(
        self,
        owner: str,
        name: str,
        version: int,
        promote: bool,
        reason: str,
        figures: dict[str, Any],
    ) -> Change | None:
        """Record the decision on a watched canary and move the traffic, in one transaction.

        Promote: all traffic to the canary. Roll back: all traffic to its
        baseline (the version that served before it; the deployment's
        previous version if the baseline is gone). Returns None, changing
        nothing, unless the canary is still ``watching`` (decided already, or
        stopped by hand meanwhile): a decision is taken once.
        """
        now = self.clock()
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            v = self._version(row, version)
            if v.canary_state != "watching":
                return None
            target = version if promote else (v.canary_baseline or row.previous_version)
            v.canary_state = "promoted" if promote else "rolled_back"
            v.canary_reason, v.canary_decided_at, v.canary_figures = reason, now, figures
            if target is None or self._version(row, target).state == "failed":
                # nothing to go back to: the canary is taken out of the split instead
                split = {int(k): p for k, p in row.traffic.items() if int(k) != version}
                if not split:
                    return Change(self._describe(row))
                drain = self._set_split(row, scale_split(split, 100), now)
                return Change(self._describe(row), drain=drain)
            return self._send_all(row, target, now)

    # ----------------------------------------------------- replicas, grants

    def set_replicas(self, owner: str, name: str, replicas: int) -> DescribeDeployment:
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            row.replicas, row.updated_at = replicas, self.clock()
            return self._describe(row)

    def set_grants(self, owner: str, name: str, grants: Grants) -> DescribeDeployment:
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            row.grants, row.updated_at = grants.model_dump(), self.clock()
            return self._describe(row)

    def delete(self, owner: str, name: str) -> DescribeDeployment:
        """Delete the deployment and its versions; returns what it was (the caller stops it)."""
        with self._write.begin() as session:
            row = self._load(session, owner, name, lock=True)
            described = self._describe(row)
            session.delete(row)
            return described

    def check_known(self, owner: str, name: str) -> None:
        """Raise :class:`NotFound` unless the deployment exists."""
        self.get(owner, name)


__all__ = ["Change", "DeploymentStore", "Watch", "primary_version", "scale_split"]
