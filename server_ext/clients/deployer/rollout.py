"""The steps of ``%deploy``: publish a model, create its version, follow it to ready.

``%deploy`` (:mod:`server_ext.magics.deploy`) checks its arguments, shows a progress bar and
prints the outcome; the steps between are here, so the magic holds no workflow (STYLE rule
22): :meth:`Rollout.start` (the deployer first, then log and register the model, then the
new deployment or version), :meth:`Rollout.wait_ready` (follow the version until it is
ready, failed or stopped) and :meth:`Rollout.operate` (``--rollback``, ``--promote``,
``--delete``: one call each).

Progress goes to any object with ``update(stage, detail)``, ``done(text)`` and
``failed(text)`` over :data:`DEPLOY_STAGES` (the magic's widget, or lines where ipywidgets is
missing). A failure says what serves now: the version that served before keeps the traffic,
and the error says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..tracking.client import TrackingClient
from ..tracking.lineage import KernelRuns
from .client import DeployerClient, DeployerError, registered_name
from .publish import ModelPublisher, Published, signature_json, training_summary
from .text import rollback_target

#: The stages ``%deploy`` shows its progress through.
DEPLOY_STAGES = ("log model", "register", "deploy", "starting replicas", "ready")
#: Seconds between looks at a starting version while ``%deploy`` waits for it (at most).
DEPLOY_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ModelSource:
    """What to deploy, as checked by the magic: a variable's model, a run or a registered one.

    ``kind`` is :func:`~server_ext.clients.deployer.publish.describe_source`'s answer; for a
    ``variable``, ``model`` is the object and ``flavor`` its MLflow flavor. ``source_run`` is
    the run that trained it when the user named one (``--run``).
    """

    ref: str
    kind: str
    model: Any = None
    flavor: str | None = None
    example: Any = None
    source_run: str | None = None


@dataclass(frozen=True)
class Settings:
    """What the deployment or its new version is given besides the model (None: the default)."""

    profile: str | None = None
    replicas: int | None = None
    canary: int | None = None
    secrets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Started:
    """A version the deployer has taken: ``created`` for a new deployment's first version."""

    published: Published
    version: dict
    created: bool


def still_serving(deployment: dict | None) -> str:
    """What serves now, said after a failure: the previous version keeps the traffic."""
    serving = sorted((int(v) for v, p in (deployment or {}).get("traffic", {}).items() if p > 0))
    if not serving:
        return " Nothing serves under this name yet."
    said = " and ".join(f"version {v}" for v in serving)
    return f" The previous version keeps serving: {said} of {deployment['name']!r}."


class Rollout:
    """``%deploy``'s steps against one deployer, as one hub user.

    Parameters
    ----------
    client : DeployerClient
        The deployer (``DeployerClient.from_environment()``).
    poll_interval : float
        The longest pause between looks at a starting version.
    timeout : float
        Seconds :meth:`wait_ready` waits before it gives up (the version goes on starting).
    """

    def __init__(self, client: DeployerClient, poll_interval: float, timeout: float):
        self.client = client
        self.poll_interval = poll_interval
        self.timeout = timeout

    def existing(self, name: str, canary: int | None) -> dict | None:
        """The deployment ``name`` (None when new), asked first: a refusal costs nothing yet.

        Raises
        ------
        DeployerError
            For ``canary`` on a name not deployed yet: its first version takes all traffic.
        """
        existing = self.client.find_deployment(name)
        if existing is None and canary is not None:
            raise DeployerError(
                f"--canary: {name!r} is not deployed yet, and its first version takes all the "
                "traffic. Deploy it without --canary first; a later version can be a canary."
            )
        return existing

    def start(
        self,
        progress,
        user: str,
        name: str,
        source: ModelSource,
        settings: Settings,
        existing: dict | None,
        experiment: str,
        runs: KernelRuns,
    ) -> Started:
        """Stages log model, register and deploy: the model published, its version taken.

        A failure marks the stage failed on ``progress``; a refusal of the deployer for a
        deployment that exists says that the previous version keeps serving.
        """
        stage = 0
        try:
            published = self.publish(progress, user, name, source.ref, source, experiment, runs)
            stage = 2
            progress.update(2, f"{published.model_uri}")
            summary = training_summary(source.example)
            body: dict = {"model_uri": published.model_uri, "lineage": published.lineage}
            # the model serves in the environment it was trained in: this server's profile
            profile = settings.profile
            if profile is None:
                profile = os.environ.get("SHIPYARD_PROFILE")
            if profile:
                body["profile"] = profile
            if summary is not None:
                body["training_summary"] = summary
            if published.signature is not None:
                body["signature"] = published.signature
            if settings.secrets:
                body["secrets"] = list(settings.secrets)
            if existing is None:
                body = {"name": name, **body}
                if settings.replicas is not None:
                    body["replicas"] = settings.replicas
                created = self.client.create_deployment(body)
                return Started(published, created["versions"][-1], created=True)
            if settings.replicas is not None and settings.replicas != existing["replicas"]:
                self.client.scale(name, settings.replicas)
            if settings.canary is not None:
                body["canary_percent"] = settings.canary
            return Started(published, self.client.create_version(name, body), created=False)
        except Exception as exc:
            progress.failed(f"{DEPLOY_STAGES[stage]} failed")
            if isinstance(exc, DeployerError) and existing is not None:
                exc.message += still_serving(existing)
                raise DeployerError(exc.message, exc.status, exc.errors) from None
            raise

    def publish(
        self,
        progress,
        user: str,
        name: str,
        ref: str,
        source: ModelSource,
        experiment: str,
        runs: KernelRuns,
    ) -> Published:
        """Stages log model and register: the model in the registry as ``<user>-<name>``.

        A variable's model is logged in ``experiment`` (its source run: ``--run``, else the
        kernel's, :meth:`KernelRuns.source_run`), a run's model and a registered version are
        registered as they are; each version carries its lineage.
        """
        registered = registered_name(user, name)
        publisher = ModelPublisher(TrackingClient.from_environment(), user)
        signature = None
        if source.kind == "variable":
            source_run = source.source_run or runs.source_run()
            progress.update(0, f"{ref} as {source.flavor}")
            if source.example is not None:
                signature = publisher.example_signature(source.model, source.flavor, source.example)
            elif source_run:
                signature = publisher.run_signature(source_run)
            logged_run, uri = publisher.log(
                source.model,
                source.flavor,
                experiment,
                f"deploy-{name}",
                source_run,
                signature,
                source.example,
            )
            runs.deploy_runs.add(logged_run)
            lineage = publisher.kernel_lineage(source_run or logged_run)
            if logged_run != lineage["run_id"]:
                lineage["model_run_id"] = logged_run
            progress.update(1, registered)
            version = publisher.register(uri, registered, lineage)
            signature = signature_json(signature)
        elif source.kind == "run":
            progress.update(0, f"the model of run {ref}")
            uri = publisher.run_model_uri(ref)
            lineage = publisher.run_lineage(ref)
            progress.update(1, registered)
            version = publisher.register(uri, registered, lineage)
            signature = publisher.model_signature(uri)
        else:
            progress.update(1, f"{ref} as {registered}")
            version, run_id = publisher.copy_version(ref, registered)
            lineage = publisher.run_lineage(run_id) if run_id else publisher.kernel_lineage(None)
            signature = publisher.model_signature(ref)
        lineage = {**lineage, "registered_model": registered, "model_version": version}
        return Published(f"models:/{registered}/{version}", registered, version, lineage, signature)

    def wait_ready(self, progress, name: str, number: int, existing: dict | None) -> dict:
        """Follow version ``number`` to ready and return it.

        Raises
        ------
        DeployerError
            When the version fails or stops (with the reason, and what serves now), or is
            still starting after the timeout.
        KeyboardInterrupt
            When the user stops waiting; the version goes on starting.
        """
        progress.update(3, f"version {number}")
        try:
            # a version is ready seconds after it starts: look often (a cheap read), so the
            # endpoint is announced as soon as it serves, not up to poll_interval later
            for version in self.client.follow_version(
                name, number, min(self.poll_interval, DEPLOY_POLL_SECONDS), self.timeout
            ):
                progress.update(3, f"version {number} {version['state']}")
        except KeyboardInterrupt:
            progress.failed("stopped waiting")
            raise
        except DeployerError:
            progress.failed("still starting")
            raise
        if version["state"] != "ready":
            progress.failed(f"version {number} {version['state']}")
            reason = version.get("reason") or "the deployer gave no reason"
            current = self.client.find_deployment(name) or existing
            raise DeployerError(
                f"Version {number} of {name!r} {version['state']}: {reason}."
                + still_serving(current)
            )
        progress.done(f"version {number} ready")
        return version

    def operate(self, operation: str, name: str, version: int | None) -> tuple[dict, int] | None:
        """``rollback`` (to ``version``, default the previous), ``promote`` or ``delete`` ``name``.

        Returns the deployment and the version that takes the traffic now (follow it with
        :meth:`wait_ready` when it is not ready yet, see :func:`is_ready`); None after a delete.
        """
        if operation == "delete":
            self.client.delete(name)
            return None
        if operation == "promote":
            return self.client.promote(name, version), version
        deployment = self.client.rollback(name, version)
        return deployment, version or rollback_target(deployment)


def is_ready(deployment: dict, number: int) -> bool:
    """Whether version ``number`` of ``deployment`` is ready."""
    return next(v for v in deployment["versions"] if v["version"] == number)["state"] == "ready"
