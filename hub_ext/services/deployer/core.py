"""The deployer's core: what each API call does, and the life of versions.

:class:`DeployerCore` sits between the handlers, the store (desired state,
called in a thread pool so the event loop never waits on the database), the
backend (what runs) and the router (where traffic goes: the deployer's front, a
process of its own that :class:`~.front.FrontLink` keeps current):

- **Versions start in the background.** A new version (or one a rollback
  restarts) is ``starting`` at once; an asyncio task builds its
  :class:`~.backend.VersionSpec`, asks the backend to start it, and records
  ``ready`` (the version takes its traffic, and the router switches) or
  ``failed`` with the reason (the traffic is untouched: what served keeps
  serving).
- **Zero downtime.** Versions that lose their traffic are stopped only
  ``drain_seconds`` after the router stopped choosing them, so requests in
  flight finish; the backend then gives each replica a SIGTERM grace.
- **One thing at a time.** Changes to one deployment are serialised by an
  asyncio lock (the store's transaction already makes each change atomic;
  the lock keeps the router's table in the same order), and backend calls
  for one version key by another, so a rollback that restarts a version
  waits for its stop to finish instead of racing it.
- **Restart.** :meth:`recover` routes every deployment and lets the backend
  adopt the replicas an earlier deployer left serving (a deployer that died
  costs the models no restart); :meth:`start_wanted` then starts, or takes
  over, every version the database wants, without user action.
- **Monitoring.** :meth:`monitor` polls each healthy replica's ``/stats``
  (drift, the model server's counts, its data-quality totals, summed per version
  over the replicas' lives) every ``monitor_interval`` seconds.
- **Watched canaries.** :meth:`watch_canaries` judges every ``watching``
  canary each ``canary_interval`` seconds from the front's window, its
  breaker and the replicas' drift: a threshold crossed rolls it back at once,
  a window that ends clean promotes it (:meth:`judge` says which, with the
  figures). The store records the decision and moves the traffic in one
  transaction, only from ``watching``, so a decision is taken once, also
  across a restart of the deployer (the window's end is in the database).

The model servers get ``MLFLOW_TRACKING_URI`` and a short-lived token of the
*owner's*, good only for the tracking service (:class:`TrackingCredentials`),
so the model server, not the deployer, reads the model, as its owner. The
deployer never loads or unpickles a model (SECURITY rule 5).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from hub_ext.audit import emit
from hub_ext.host.process import write_private
from hub_ext.profiles.model import ProfileChoiceError
from hub_ext.profiles.store import ProfileStore

from ..common.errors import Conflict, Forbidden, Invalid, NotFound
from ..common.hubapi import Caller, HubDirectory, HubTokens
from ..common.secrets import SecretsResolver, SecretsUnavailable
from . import metrics
from .backend import Backend, DeployFailed, VersionSpec, version_key
from .front import FrontLink
from .lineage import LineageResolver
from .models import (
    CanaryFigures,
    CreateDeployment,
    CreateVersion,
    DeploymentMetrics,
    DescribeDeployment,
    DescribeLineage,
    DescribeVersion,
    Grants,
    ListDeploymentsResponse,
    VersionMetrics,
)
from .store import Change, DeploymentStore, Watch

log = logging.getLogger("shipyard.deployer")

__all__ = ["Caller", "DeployerCore", "HubDirectory", "TrackingCredentials"]


class TrackingCredentials:
    """``MLFLOW_TRACKING_URI`` and tokens of the owner's for the tracking service only.

    As the scheduler's run tokens (its ``runenv.RunEnvironment``):
    a token is asked of the hub (``POST /users/{owner}/tokens``, the service's
    ``tokens`` scope), grants only ``access:services!service=tracking``, and
    lives only as long as its use:

    - it expires after ``lifetime`` seconds (by default the backend's longest
      start plus a margin), so a token the deployer could not revoke (it died)
      is soon worthless;
    - the deployer revokes it (``DELETE /users/{owner}/tokens/{id}``,
      :meth:`release`) once the replicas no longer need it: on the local
      backend when the version is ready (every later start loads the copy
      the first one downloaded) or failed; on every backend when the version
      stops or its deployment is deleted. Where replicas read the model at
      every start (Kubernetes), the deployer renews the token before it
      expires (:meth:`issue` again, then :meth:`release` of the older ones);
    - the ids of the tokens not yet revoked are kept in ``ledger`` (a JSON file
      of the service's, mode 0600; ids only, never a token), so the next
      deployer revokes what this one minted (:meth:`release_earlier`).

    The deployer's own token never reaches a model server. Without a tracking
    URL (or when the hub refuses), the model server gets no token; a
    ``models:/`` URI then fails with MLflow's message and the version's reason
    says so.

    Rejected: one long-lived token per version (24 hours before: each stayed
    valid long after its deployment was deleted), and listing the owners'
    tokens by note at start (the owner of a deployment deleted while the
    deployer was down is no longer known).
    """

    #: Seconds a token outlives the backend's longest start by default.
    MARGIN = 300

    def __init__(
        self,
        api_url: str,
        token: str,
        tracking_url: str,
        lifetime: int = 600,
        ledger: Path | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.tokens = HubTokens(api_url, token)
        self.tracking_url = tracking_url.rstrip("/")
        self.lifetime = lifetime
        self.ledger = ledger
        #: version key -> {"owner", "what", "ids": [token ids, oldest first]}
        self._issued: dict[str, dict[str, Any]] = {}
        self._saving = asyncio.Lock()  # one write at a time, each of the newest state

    def environment(self) -> dict[str, str]:
        """What replicas that need no token get: the tracking URL (or nothing)."""
        return {"MLFLOW_TRACKING_URI": self.tracking_url} if self.tracking_url else {}

    def keys(self) -> list[tuple[str, str, str]]:
        """``(key, owner, what)`` of every version holding a token now."""
        return [(k, v["owner"], v["what"]) for k, v in self._issued.items()]

    async def issue(self, owner: str, key: str, what: str) -> dict[str, str]:
        """The environment of the replicas of ``key``, with a fresh token of ``owner``'s."""
        env = self.environment()
        if not env or not self.token:
            return env
        try:
            answer = await self.tokens.issue(
                owner,
                note=f"model server of {what}",
                expires_in=self.lifetime,
                scopes=["access:services!service=tracking"],
            )
        except (HTTPClientError, OSError) as e:
            log.warning("No tracking token for the model server of %s: %s", what, e)
            return env
        entry = self._issued.setdefault(key, {"owner": owner, "what": what, "ids": []})
        entry["ids"].append(answer["id"])
        await self._save()
        env["MLFLOW_TRACKING_TOKEN"] = answer["token"]
        return env

    async def release(self, key: str, keep_latest: bool = False) -> None:
        """Revoke the tokens of ``key`` (all, or all but the newest); nothing if it has none.

        A failure is logged, not raised: the token still expires on its own.
        """
        entry = self._issued.get(key)
        if entry is None:
            return
        ids = entry["ids"][:-1] if keep_latest else entry["ids"]
        if not ids:
            return
        entry["ids"] = entry["ids"][len(ids) :]
        if not entry["ids"]:
            del self._issued[key]
        await self._save()
        await asyncio.gather(*(self._revoke(entry["owner"], i, entry["what"]) for i in ids))

    async def renew(
        self,
        key: str,
        owner: str,
        what: str,
        refresh: Callable[[Mapping[str, str]], Awaitable[None]],
    ) -> bool:
        """Give the replicas of ``key`` a fresh token, then revoke the ones before it.

        ``refresh`` hands the new environment to the backend (where replicas read it at
        their next start). Whatever fails (the hub refuses a token, ``refresh`` raises), the
        current token stays, valid until it expires, and False is returned; the new token,
        if one was made, is kept for :meth:`release` to revoke with the rest.
        """
        env = await self.issue(owner, key, what)
        if "MLFLOW_TRACKING_TOKEN" not in env:
            return False  # logged by issue()
        try:
            await refresh(env)
        except Exception:
            log.exception("Could not renew the tracking token of %s", what)
            return False
        await self.release(key, keep_latest=True)
        return True

    async def release_earlier(self) -> None:
        """At start, before any :meth:`issue`: revoke every token an earlier deployer left."""
        if self.ledger is None:
            return
        try:
            earlier = json.loads(await asyncio.to_thread(self.ledger.read_bytes))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("Cannot read the tracking tokens of an earlier deployer: %s", e)
            return
        revoke = [
            (entry["owner"], token_id, entry["what"])
            for entry in (earlier.values() if isinstance(earlier, dict) else ())
            if isinstance(entry, dict)
            for token_id in entry.get("ids") or ()
        ]
        await self._save()
        if revoke:
            log.info("Revoking %d tracking token(s) of an earlier deployer", len(revoke))
        await asyncio.gather(*(self._revoke(*r) for r in revoke))

    async def _revoke(self, owner: str, token_id: str, what: str) -> None:
        await self.tokens.revoke(owner, token_id, f"the model server of {what}")

    async def _save(self) -> None:
        if self.ledger is None:
            return
        async with self._saving:
            data = json.dumps(self._issued).encode()
            try:
                await asyncio.to_thread(write_private, self.ledger, data)
            except OSError as e:
                log.warning("Could not record the tracking tokens in %s: %s", self.ledger, e)


@dataclass
class DeployerCore:
    """What the handlers call; see the module docstring.

    ``gpu_count`` is the backend's GPUs (:attr:`.backend.Backend.gpu_count`, read once at
    start); a profile needing more is refused (409), None (Kubernetes) checks nothing.
    """

    store: DeploymentStore
    backend: Backend
    router: FrontLink
    profiles: ProfileStore
    directory: HubDirectory | None
    credentials: TrackingCredentials
    #: ``await secrets(owner, names, purpose, details)``: the values of the owner's secrets
    #: (:class:`~hub_ext.services.common.secrets.SecretsResolver`).
    secrets: Callable[..., Any] = field(default_factory=lambda: SecretsResolver("", ""))
    #: Follows versions' lineage through the tracking service and the scheduler, as the caller.
    lineage: LineageResolver = field(default_factory=lambda: LineageResolver("", ""))
    max_request_bytes: int = 4 * 1024**2
    drain_seconds: float = 10.0
    stop_grace: float = 20.0
    max_replicas: int = 8
    timeout_seconds: float = 30.0
    max_body_bytes: int = 10 * 1024**2
    data_quality: bool = True
    data_quality_margin: float = 0.0
    monitor_interval: float = 5.0
    canary_interval: float = 1.0
    gpu_count: int | None = None
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per version key, its replicas' data-quality counts summed over their lives
    quality: dict[str, metrics.InputIssues] = field(default_factory=dict)
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _locks: dict[Any, asyncio.Lock] = field(default_factory=dict)

    # ------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _lock(self, key: Any) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def groups_of(self, name: str, known: Sequence[str] | None = None) -> tuple[str, ...]:
        if self.directory is None:
            return tuple(sorted(known or ()))
        return await self.directory.groups_of(name)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "deployments": len(self.router.routes),
            "front": "connected" if self.router.connected else "restarting",
        }

    # -------------------------------------------------------------- access

    @staticmethod
    def owner_for(caller: Caller, owner: str | None) -> str:
        """Whose deployment a request is about: the caller's own, or anyone's for admins.

        A non-admin naming another owner gets what a missing deployment gets.
        """
        if not owner or owner == caller.name:
            return caller.name
        if not caller.admin:
            raise NotFound("no such deployment")
        return owner

    @staticmethod
    def _check_secrets(caller: Caller, owner: str, secrets: Sequence[str] | None) -> None:
        """Only the owner names the secrets their replicas get (not an admin acting for them)."""
        if secrets and caller.name != owner:
            raise Forbidden(f"only {owner!r} can choose which of their secrets a deployment gets")

    async def _profile(self, owner: str, caller: Caller, slug: str | None) -> str:
        groups = caller.groups if owner == caller.name else await self.groups_of(owner)
        try:
            return self.profiles.get().resolve(slug, groups, self.gpu_count).slug
        except ProfileChoiceError as e:
            raise {403: Forbidden, 409: Conflict}.get(e.status, Invalid)(str(e)) from None

    def _present(self, d: DescribeDeployment) -> DescribeDeployment:
        return d.model_copy(update={"versions": [self._present_version(d, v) for v in d.versions]})

    def _present_version(self, d: DescribeDeployment, v: DescribeVersion) -> DescribeVersion:
        """The version with its breaker, and a watched canary's figures as they are now."""
        update: dict[str, Any] = {
            "breaker": self.router.breaker(version_key(d.owner, d.name, v.version))
        }
        watch = v.canary
        if watch is not None and watch.state == "watching":
            live = {"canary": self.figures(version_key(d.owner, d.name, v.version))}
            if watch.baseline_version is not None:
                live["baseline"] = self.figures(
                    version_key(d.owner, d.name, watch.baseline_version)
                )
            update["canary"] = watch.model_copy(update=live)
        return v.model_copy(update=update)

    def _apply(self, change: Change) -> DescribeDeployment:
        """Route by the committed change, start what it starts, drain what it drains."""
        d = change.deployment
        self.router.update(d)
        for version in change.start:
            self._spawn(self._start(d.owner, d.name, version))
        if change.drain:
            self._spawn(self._drain(d.owner, d.name, change.drain))
        return self._present(d)

    # ----------------------------------------------------------------- API

    async def list_deployments(self, caller: Caller, owner: str | None) -> ListDeploymentsResponse:
        if owner and owner != caller.name and not caller.admin:
            raise Forbidden("only hub admins may list other users' deployments")
        rows = await self._call(self.store.list, owner or caller.name)
        return ListDeploymentsResponse(deployments=[self._present(d) for d in rows])

    async def get_deployment(
        self, caller: Caller, name: str, owner: str | None
    ) -> DescribeDeployment:
        return self._present(await self._call(self.store.get, self.owner_for(caller, owner), name))

    async def create_deployment(
        self, caller: Caller, request: CreateDeployment, owner: str | None
    ) -> DescribeDeployment:
        owner = self.owner_for(caller, owner)
        self._check_secrets(caller, owner, request.secrets)
        self._check_replicas(request.replicas)
        profile = await self._profile(owner, caller, request.profile)
        async with self._lock((owner, request.name)):
            change = await self._call(self.store.create, owner, request, profile)
            return self._apply(change)

    async def create_version(
        self, caller: Caller, name: str, request: CreateVersion, owner: str | None
    ) -> DescribeVersion:
        owner = self.owner_for(caller, owner)
        current = await self._call(self.store.get, owner, name)
        self._check_secrets(caller, owner, request.secrets)
        profile = await self._profile(owner, caller, request.profile or current.profile)
        async with self._lock((owner, name)):
            change, version = await self._call(
                self.store.add_version, owner, name, request, profile
            )
            self._apply(change)
        return version

    async def get_version(
        self, caller: Caller, name: str, version: int, owner: str | None
    ) -> DescribeVersion:
        owner = self.owner_for(caller, owner)
        d = await self._call(self.store.get, owner, name)
        v = await self._call(self.store.get_version, owner, name, version)
        return self._present_version(d, v)

    async def version_lineage(
        self,
        caller: Caller,
        name: str,
        version: int,
        owner: str | None,
        authorization: str | None,
    ) -> DescribeLineage:
        """The chain from the version back to its run, pipeline run and input files.

        ``authorization`` is the caller's own header: the other services are read as the
        caller (:mod:`.lineage`). Another user's deployment is a 404 as a missing one.
        """
        owner = self.owner_for(caller, owner)
        v = await self._call(self.store.get_version, owner, name, version)
        return await self.lineage.resolve(owner, name, v, authorization)

    async def set_traffic(
        self, caller: Caller, name: str, split: dict[int, int], owner: str | None
    ) -> DescribeDeployment:
        owner = self.owner_for(caller, owner)
        async with self._lock((owner, name)):
            return self._apply(await self._call(self.store.set_traffic, owner, name, split))

    async def send_all(
        self, caller: Caller, name: str, version: int | None, owner: str | None, rollback: bool
    ) -> DescribeDeployment:
        owner = self.owner_for(caller, owner)
        async with self._lock((owner, name)):
            change = await self._call(self.store.send_all, owner, name, version, rollback)
            return self._apply(change)

    async def set_grants(
        self, caller: Caller, name: str, grants: Grants, owner: str | None
    ) -> DescribeDeployment:
        owner = self.owner_for(caller, owner)
        async with self._lock((owner, name)):
            d = await self._call(self.store.set_grants, owner, name, grants)
            self.router.update(d)
            return self._present(d)

    def _check_replicas(self, replicas: int) -> None:
        if replicas > self.max_replicas:
            raise Invalid(
                f"replicas: at most {self.max_replicas} replicas per version on this hub "
                f"(asked for {replicas})"
            )

    async def scale(
        self, caller: Caller, name: str, replicas: int, owner: str | None
    ) -> DescribeDeployment:
        owner = self.owner_for(caller, owner)
        self._check_replicas(replicas)
        async with self._lock((owner, name)):
            d = await self._call(self.store.set_replicas, owner, name, replicas)
        failed = []
        for v in d.versions:
            if v.state == "ready":
                try:  # a replica that cannot start (its secrets, its health) is the caller's 409
                    spec = await self._spec(d, v)
                    async with self._lock(spec.key):
                        await self.backend.scale(spec)
                except DeployFailed as e:
                    failed.append(f"version {v.version}: {e.reason}")
                await self._settle_credentials(version_key(owner, name, v.version))
        if failed:
            raise Conflict(
                f"{name!r} is set to {replicas} replica(s), but its running versions keep "
                f"theirs until this is fixed: {'; '.join(failed)}"
            )
        return self._present(d)

    async def delete(self, caller: Caller, name: str, owner: str | None) -> None:
        owner = self.owner_for(caller, owner)
        async with self._lock((owner, name)):
            d = await self._call(self.store.delete, owner, name)
            self.router.remove(owner, name)
        await asyncio.gather(*(self._stop(owner, name, v.version) for v in d.versions))

    async def deployment_metrics(
        self, caller: Caller, name: str, owner: str | None
    ) -> DeploymentMetrics:
        owner = self.owner_for(caller, owner)
        d = await self._call(self.store.get, owner, name)
        versions = {}
        for v in d.versions:
            key = version_key(owner, name, v.version)
            summary = self.router.summary(key)
            served = self.stats.get(key, {})
            quality = self.quality.get(key)
            versions[str(v.version)] = VersionMetrics(
                state=v.state,
                breaker=self.router.breaker(key),
                traffic=d.traffic.get(str(v.version), 0),
                replicas_ready=len(self.backend.endpoints(key)),
                drift=served.get("drift", {}),
                rows_seen=served.get("rows_seen", 0),
                rows_checked=quality.rows if quality is not None else 0,
                input_issues=quality.report() if quality is not None else {},
                **summary,
            )
        return DeploymentMetrics(versions=versions)

    # ------------------------------------------------------- version lives

    async def _spec(self, d: DescribeDeployment, v: DescribeVersion) -> VersionSpec:
        profile = self.profiles.get().get(v.profile)
        if profile is None:
            raise DeployFailed(
                f"the profile {v.profile!r} no longer exists on this hub; deploy the model "
                "again with another profile"
            )
        reason = profile.unavailable_reason(self.gpu_count)
        if reason:  # deployed before the machine lost its GPU (or the profile gained one)
            raise DeployFailed(
                f"the profile {v.profile!r} cannot run here: {reason}; deploy the model "
                "again with another profile"
            )
        summary = await self._call(self.store.training_summary, d.owner, d.name, v.version)
        what = f"{d.owner}/{d.name}/{v.version}"
        try:  # at each start and scale: replicas get values, the deployer keeps none
            secrets = await self.secrets(
                d.owner,
                d.secrets,
                f"deployment {d.name} version {v.version}",
                {"deployment": d.name, "version": str(v.version)},
            )
        except SecretsUnavailable as e:
            raise DeployFailed(f"the replicas cannot get their secrets: {e}") from None
        spec = VersionSpec(
            owner=d.owner,
            name=d.name,
            version=v.version,
            model_uri=v.model_uri,
            profile=profile,
            replicas=d.replicas,
            env=self.credentials.environment(),
            secrets=secrets,
            training_summary=summary,
            timeout_seconds=self.timeout_seconds,
            max_body_bytes=self.max_body_bytes,
            data_quality=self.data_quality,
            data_quality_margin=self.data_quality_margin,
        )
        if not self.backend.needs_credentials(spec):  # a local path, or a copy kept here
            return spec
        return replace(spec, env=await self.credentials.issue(d.owner, spec.key, what))

    async def _settle_credentials(self, key: str) -> None:
        """After a start or scale: revoke the tokens the replicas of ``key`` no longer need.

        All of them where restarts load a kept copy of the model; all but the
        newest (the one the replicas now get) where the backend keeps them.
        """
        await self.credentials.release(key, keep_latest=self.backend.keeps_credentials)

    async def _start(self, owner: str, name: str, version: int) -> None:
        key = version_key(owner, name, version)
        try:
            d = await self._call(self.store.get, owner, name)
            v = next(x for x in d.versions if x.version == version)
            spec = await self._spec(d, v)
            async with self._lock(key):
                log.info("Starting %s (%d replicas)", key, spec.replicas)
                await self.backend.start(spec)
        except NotFound:
            return  # deleted while starting: the delete stops it
        except DeployFailed as e:
            log.warning("Version %s failed to start: %s", key, e.reason)
            await self.credentials.release(key)
            # replicas the backend found serving at start, if it could not adopt them
            await self.backend.stop(key, self.stop_grace)
            await self._call(self.store.mark_failed, owner, name, version, e.reason)
            await self._refresh(owner, name)
            return
        except Exception:
            log.exception("Unexpected error starting %s", key)
            await self._call(
                self.store.mark_failed,
                owner,
                name,
                version,
                "the deployer could not start it (an internal error; the admin finds it in the "
                "deployer's log)",
            )
            await self.credentials.release(key)
            await self.backend.stop(key, self.stop_grace)
            await self._refresh(owner, name)
            return
        await self._settle_credentials(key)
        async with self._lock((owner, name)):
            try:
                change = await self._call(self.store.mark_ready, owner, name, version)
            except NotFound:
                change = None
            if change is not None:
                log.info("Version %s is ready; traffic %s", key, change.deployment.traffic)
                self._apply(change)
        if change is None:
            await self._stop(owner, name, version)

    async def _refresh(self, owner: str, name: str) -> None:
        try:
            self.router.update(await self._call(self.store.get, owner, name))
        except NotFound:
            self.router.remove(owner, name)

    async def _drain(self, owner: str, name: str, versions: list[int]) -> None:
        """Stop versions that lost their traffic, once requests in flight to them ended."""
        await asyncio.sleep(self.drain_seconds)
        for version in versions:
            if await self._call(self.store.is_wanted, owner, name, version):
                continue  # wanted again meanwhile (a rollback): keep it
            await self._stop(owner, name, version)
            await self._call(self.store.mark_stopped, owner, name, version)
        await self._refresh(owner, name)

    async def _stop(self, owner: str, name: str, version: int) -> None:
        key = version_key(owner, name, version)
        async with self._lock(key):
            log.info("Stopping %s", key)
            await self.backend.stop(key, self.stop_grace)
            await self.credentials.release(key)
        served = self.stats.pop(key, {})
        quality = self.quality.pop(key, None)
        self.router.forget(owner, name, version, key)
        metrics.forget_version(
            owner,
            name,
            version,
            served.get("drift", {}),
            issues=quality.labels() if quality is not None else (),
        )

    # ----------------------------------------------------- start and watch

    async def recover(self) -> None:
        """At service start, before it listens: route every deployment, take over what runs.

        The routes come first, so an existing deployment is never answered 404;
        the backend then adopts the replicas an earlier deployer left serving
        (:meth:`.backend.Backend.recover`: they serve from then on) and removes
        the rest. Call :meth:`start_wanted` once the service listens.
        """
        await self.credentials.release_earlier()  # the replicas that run get new ones
        count = await self._call(self.store.recover)
        for d in await self._call(self.store.list, None):
            self.router.update(d)
        wanted = await self._call(self.store.wanted)
        await self.backend.recover({version_key(d.owner, d.name, v.version) for d, v in wanted})
        if count:
            log.info("Starting %d model version(s) again", count)

    async def start_wanted(self) -> None:
        """Start (or adopt, where the backend found it serving) every version that should run."""
        for d, v in await self._call(self.store.wanted):
            self._spawn(self._start(d.owner, d.name, v.version))
        if self.backend.keeps_credentials:
            self._spawn(self._renew())

    async def _renew(self) -> None:
        """Where replicas need their token as long as they run: a fresh one at half its life.

        The backend gives it to the replicas that start from then on
        (:meth:`.backend.Backend.refresh_env`); the older one is revoked then.
        Until cancelled.
        """
        while True:
            await asyncio.sleep(max(self.credentials.lifetime / 2, 1))
            for key, owner, what in self.credentials.keys():
                async with self._lock(key):  # a stop meanwhile has released it: skip
                    if key not in {k for k, _, _ in self.credentials.keys()}:
                        continue
                    await self.credentials.renew(
                        key, owner, what, partial(self.backend.refresh_env, key)
                    )

    async def monitor(self) -> None:
        """Poll the healthy replicas' ``/stats`` and keep the gauges current, until cancelled."""
        client = AsyncHTTPClient()
        while True:
            for route in list(self.router.routes.values()):
                for version, key in route.keys.items():
                    labels = (route.owner, route.name, str(version))
                    endpoints = self.backend.endpoints(key)
                    if version in route.ready or endpoints:
                        metrics.REPLICAS_READY.labels(*labels).set(len(endpoints))
                        metrics.TRAFFIC.labels(*labels).set(route.traffic.get(version, 0))
                        metrics.BREAKER_OPEN.labels(*labels).set(self.router.breaker(key).open)
                    if endpoints:
                        self.stats[key] = await self._poll_stats(
                            client, endpoints, self.backend.request_headers(key)
                        )
                        for feature, psi in self.stats[key].get("drift", {}).items():
                            metrics.DRIFT.labels(*labels, feature).set(psi)
                        replicas = self.stats[key].pop("replicas", {})
                        quality = self.quality.setdefault(key, metrics.InputIssues(labels))
                        quality.update(replicas, endpoints)
            await asyncio.sleep(self.monitor_interval)

    # ------------------------------------------------------ watched canaries

    def figures(self, key: str) -> CanaryFigures:
        """What the front saw of ``key`` over its window, and its replicas' worst drift."""
        summary = self.router.summary(key)
        drift = self.stats.get(key, {}).get("drift") or {}
        return CanaryFigures(
            error_rate=summary.get("error_rate") if summary.get("window_requests") else None,
            latency_p99_ms=(summary.get("latency_ms") or {}).get("p99"),
            requests=int(summary.get("requests") or 0),
            drift_psi_max=max(drift.values()) if drift else None,
        )

    def judge(self, watch: Watch, now: datetime) -> tuple[bool, str, dict[str, Any]] | None:
        """``(promote, reason, figures)`` when the canary is to be decided now, else None.

        Rolled back at once when its breaker opened, or, once its window (the
        front's last minute) holds ``min_requests`` requests, when a threshold is
        crossed; promoted when the window ends with none crossed, but only if it
        saw ``min_requests`` requests in all: fewer roll it back (not enough
        traffic to judge it). Each reason names the figure, the threshold and
        the baseline's figure.
        """
        key = version_key(watch.owner, watch.name, watch.version)
        policy = watch.policy
        canary = self.figures(key)
        baseline = (
            self.figures(version_key(watch.owner, watch.name, watch.baseline))
            if watch.baseline is not None
            else None
        )
        figures = {
            "canary": canary.model_dump(),
            "baseline": None if baseline is None else baseline.model_dump(),
        }
        base = f"baseline version {watch.baseline}" if watch.baseline is not None else "no baseline"

        def of_baseline(name: str, unit: str = "") -> str:
            value = None if baseline is None else getattr(baseline, name)
            return f"{base}: {'n/a' if value is None else f'{value:g}{unit}'}"

        crossed = []
        breaker = self.router.breaker(key)
        if breaker.open:
            crossed.append(f"its circuit breaker opened ({breaker.reason})")
        window_requests = int(self.router.summary(key).get("window_requests") or 0)
        if window_requests >= policy.min_requests:
            if (
                policy.max_error_rate is not None
                and canary.error_rate is not None
                and canary.error_rate > policy.max_error_rate
            ):
                crossed.append(
                    f"error rate {canary.error_rate:g} > max_error_rate "
                    f"{policy.max_error_rate:g} ({of_baseline('error_rate')})"
                )
            p99 = canary.latency_p99_ms
            if policy.max_latency_p99_ms is not None and p99 is not None:
                if p99 > policy.max_latency_p99_ms:
                    crossed.append(
                        f"p99 latency {p99:g} ms > max_latency_p99_ms "
                        f"{policy.max_latency_p99_ms:g} ({of_baseline('latency_p99_ms', ' ms')})"
                    )
            if policy.max_drift_psi is not None:
                drift = self.stats.get(key, {}).get("drift") or {}
                worst = max(drift.items(), key=lambda kv: kv[1], default=None)
                if worst is not None and worst[1] > policy.max_drift_psi:
                    crossed.append(
                        f"drift of feature {worst[0]!r} psi {worst[1]:g} > max_drift_psi "
                        f"{policy.max_drift_psi:g} ({of_baseline('drift_psi_max')})"
                    )
        if crossed:
            return (
                False,
                f"rolled back after {window_requests} request(s): " + "; ".join(crossed),
                figures,
            )
        if now < watch.ends_at:
            return None
        if canary.requests < policy.min_requests:
            return (
                False,
                f"not enough traffic ({canary.requests} of {policy.min_requests}) to judge "
                "the canary",
                figures,
            )
        rate = "n/a" if canary.error_rate is None else f"{canary.error_rate:g}"
        latency = "n/a" if canary.latency_p99_ms is None else f"{canary.latency_p99_ms:g} ms"
        return (
            True,
            f"promoted: its {policy.window_seconds:g} s window passed with no threshold crossed "
            f"({canary.requests} request(s), error rate {rate} ({of_baseline('error_rate')}), "
            f"p99 latency {latency} ({of_baseline('latency_p99_ms', ' ms')}))",
            figures,
        )

    async def watch_canaries(self) -> None:
        """Judge every watched canary each ``canary_interval`` seconds, until cancelled.

        A canary is judged only while its version is ready and the front is
        connected, once the front has had time to report its windows (a
        restarted deployer reads them back within a second): judging on the
        empty figures of a deployer that just started would roll it back for
        want of traffic.
        """
        await asyncio.sleep(max(2.0, 2 * self.canary_interval))
        while True:
            try:
                if self.router.connected:
                    now = self.store.clock()
                    for watch in await self._call(self.store.watches):
                        if not watch.ready:
                            continue  # restarting after a deployer restart: not judged meanwhile
                        verdict = self.judge(watch, now)
                        if verdict is not None:
                            await self._decide(watch, *verdict)
            except Exception:
                log.exception("Could not judge the watched canaries (trying again)")
            await asyncio.sleep(self.canary_interval)

    async def _decide(
        self, watch: Watch, promote: bool, reason: str, figures: dict[str, Any]
    ) -> None:
        key = version_key(watch.owner, watch.name, watch.version)
        async with self._lock((watch.owner, watch.name)):
            try:
                change = await self._call(
                    self.store.decide_canary,
                    watch.owner,
                    watch.name,
                    watch.version,
                    promote,
                    reason,
                    figures,
                )
            except NotFound:
                return  # deleted meanwhile
            if change is None:
                return  # decided already, or stopped by hand meanwhile
            self._apply(change)
        d = change.deployment
        log.info(
            "Canary %s %s: %s; traffic %s",
            key,
            "promoted" if promote else "rolled back",
            reason,
            d.traffic,
        )
        emit(
            "deployment.promote" if promote else "deployment.rollback",
            actor="deployer",
            actor_kind="service",
            on_behalf_of=watch.owner,
            target=f"deployment/{watch.name}",
            owner=watch.owner,
            reason=reason,
            details={
                "version": watch.version,
                "canary": True,
                "baseline": watch.baseline,
                "traffic": d.traffic,
            },
        )

    @staticmethod
    async def _poll_stats(
        client: AsyncHTTPClient, endpoints: list[str], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """The replicas' ``/stats`` merged: summed counts, each feature's worst drift, and
        under ``replicas`` each one's data-quality totals (:class:`.metrics.InputIssues`)."""
        merged: dict[str, Any] = {
            "requests": 0,
            "errors": 0,
            "rows_seen": 0,
            "drift": {},
            "replicas": {},  # endpoint: its data-quality counts (metrics.InputIssues)
        }
        for endpoint in endpoints:
            try:
                response = await client.fetch(
                    endpoint.rstrip("/") + "/stats", headers=dict(headers), request_timeout=3
                )
                stats = json.loads(response.body)
            except Exception as e:  # a replica that is going away: the next poll sees it
                log.debug("No stats from %s: %s", endpoint, e)
                continue
            for name in ("requests", "errors", "rows_seen"):
                merged[name] += int(stats.get(name) or 0)
            for feature, psi in (stats.get("drift") or {}).items():
                if isinstance(psi, int | float):
                    merged["drift"][feature] = max(psi, merged["drift"].get(feature, 0.0))
            if isinstance(stats.get("input_issues"), dict):
                merged["replicas"][endpoint] = {
                    "rows_checked": stats.get("rows_checked"),
                    "input_issues": stats["input_issues"],
                }
        return merged

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
