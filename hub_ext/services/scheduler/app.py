"""The ``scheduler`` hub service: notebook jobs that run while their owners' servers are stopped.

Run by JupyterHub as a managed service (``python -m hub_ext.services.scheduler``,
see config/jupyterhub_config.py), or by hand beside a hub with the same
``JUPYTERHUB_*`` variables. It serves the REST API (:mod:`.handlers`) under
``/services/scheduler/`` and runs a :class:`~.worker.Worker` in the same
event loop. State is in the database (:mod:`.db`, SQLite or PostgreSQL), the
notebook snapshots and the runs' folders: a restart, or kill -9, loses
nothing, and the next start recovers what was running.

Wiring only (STYLE rule 1): the traits say what can be configured; the work is
in :mod:`.core`, :mod:`.worker`, :mod:`.store` and the executors.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from jupyterhub.traitlets import ByteSpecification, Callable
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default
from traitlets.config import Application

from hub_ext import __version__
from hub_ext.host import instance
from hub_ext.host.local import LocalHost
from hub_ext.host.process import die_with_parent
from hub_ext.profiles.store import ProfileStore

from ..common.config import load_service_config
from ..common.handlers import MAX_DISCARD_BYTES
from ..common.orm import utcnow
from ..common.plugins import PluginType
from ..common.secrets import SecretsResolver
from ..common.web import HubOAuth, listen, make_app, stop_event
from .core import (
    GIL_SWITCH_INTERVAL,
    HubDirectory,
    SchedulerCore,
    account_resolver,
    home_resolver,
)
from .db import make_engine, upgrade
from .errors import Conflict
from .executors import EXECUTORS, Executor
from .handlers import BaseHandler, NotFoundHandler, routes
from .metrics import register_job_schedule
from .notify import Notifier
from .openapi import build_openapi
from .pipelines.service import PipelineService
from .runenv import RunEnvironment, RunSecrets
from .snapshots import SnapshotStore
from .store import JobStore
from .worker import Worker, new_worker_id


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


class SchedulerService(Application):
    """Notebook jobs on cron, file arrival, webhooks and other jobs, run by papermill."""

    name = "shipyard-scheduler"
    version = __version__
    description = "Shipyard's scheduler: papermill jobs as a JupyterHub service."
    classes = [Notifier, LocalHost]  # LocalHost: the runs' accounts, cgroups, GPUs

    config_file = Unicode(
        "",
        help="""
        A Python config file (``c.SchedulerService.x = ...``) loaded at start.

        Defaults to ``$SHIPYARD_SCHEDULER_CONFIG`` when set.

        Example::

            python -m hub_ext.services.scheduler --SchedulerService.config_file=/etc/shipyard/scheduler_config.py

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    @default("config_file")
    def _default_config_file(self):
        return os.environ.get("SHIPYARD_SCHEDULER_CONFIG", "")

    state_dir = Unicode(
        help="""
        Folder of the service's own files: the SQLite database and notebook snapshots.

        Defaults to ``scheduler`` in ``$SHIPYARD_DATA_DIR``.

        Example::

            c.SchedulerService.state_dir = "/srv/shipyard/scheduler"

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self):
        return str(_data_dir() / "scheduler")

    db_url = Unicode(
        help="""
        The scheduler's database: a SQLAlchemy URL.

        SQLite in the state dir by default (one machine); PostgreSQL in
        production, where several scheduler processes may share it (claims
        use ``SELECT ... FOR UPDATE SKIP LOCKED``). Defaults to
        ``$SHIPYARD_SCHEDULER_DB_URL`` when set. Migrated at every start.

        Example::

            c.SchedulerService.db_url = "postgresql://scheduler@db/scheduler"

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return (
            os.environ.get("SHIPYARD_SCHEDULER_DB_URL")
            or f"sqlite:///{self.state_dir}/scheduler.sqlite"
        )

    runs_dir = Unicode(
        help="""
        Where each run gets a folder with its log and output notebook.

        Runs write their outputs as their owner's account, so the folder's
        parents must be traversable by those accounts (the hub's data dir is
        not). Defaults to ``$SHIPYARD_RUNS_DIR``, else ``/var/lib/<instance>/runs``
        as root (``/var/lib/shipyard/runs`` unless ``$SHIPYARD_INSTANCE`` names
        another, :mod:`hub_ext.host.instance`), else ``runs`` in the state dir.

        Example::

            c.SchedulerService.runs_dir = "/srv/shipyard/runs"

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("runs_dir")
    def _default_runs_dir(self):
        if os.environ.get("SHIPYARD_RUNS_DIR"):
            return os.environ["SHIPYARD_RUNS_DIR"]
        if os.geteuid() == 0:
            return instance.system_dir("/var/lib", "runs")
        return str(Path(self.state_dir) / "runs")

    profiles_file = Unicode(
        help="""
        The profiles file: the same one the spawner reads (one source of truth).

        Defaults to ``$SHIPYARD_PROFILES``, else config/profiles.yaml.

        Example::

            c.SchedulerService.profiles_file = "/etc/shipyard/profiles.yaml"

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("profiles_file")
    def _default_profiles_file(self):
        return os.environ.get("SHIPYARD_PROFILES") or str(
            Path(__file__).resolve().parents[3] / "config" / "profiles.yaml"
        )

    executor_class = PluginType(
        "local",
        klass=Executor,
        entry_point_group="shipyard.executors",
        shipped=EXECUTORS,
        help=f"""
        What runs the notebooks: one of {", ".join(EXECUTORS)}, or a dotted class name.

        ``local`` runs papermill as the owner's system account in a cgroup
        with the profile's limits (one machine); ``kubernetes`` runs a
        batch/v1 Job built from the profile. Configure the chosen class with
        its own section (``c.LocalExecutor.*``, ``c.KubernetesExecutor.*``).

        Example::

            c.SchedulerService.executor_class = "kubernetes"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    account_prefix = Unicode(
        help="""
        Prefix of the users' system accounts, as the runs use them.

        Defaults to ``c.LocalHost.system_user_prefix`` (which the hub passes on
        to the service): ``jupyter-``, or ``<instance>-`` for another instance
        than ``shipyard`` (:mod:`hub_ext.host.instance`).

        The service reads a job's notebook from that account's home.

        Example::

            c.SchedulerService.account_prefix = "sy-"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    @default("account_prefix")
    def _default_account_prefix(self):
        return LocalHost(parent=self).system_user_prefix

    max_concurrent_runs = Integer(
        4,
        help="""
        Runs this scheduler process executes at once; more wait, queued, in order.

        Example::

            c.SchedulerService.max_concurrent_runs = 8

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    group_quotas = Dict(
        value_trait=Integer(),
        key_trait=Unicode(),
        help="""
        Most runs the members of a hub group may have running at once, by group.

        A run over its owner's group quota stays queued with the reason
        ("waiting: group 'students' may run 2 job(s) at once ...") until one
        of the group's runs ends. A user in several groups with quotas is held
        by each. **Counted across every scheduler process on the database, but
        checked without a lock**: two processes starting runs of one group in
        the same instant may exceed it by one.

        Example::

            c.SchedulerService.group_quotas = {"students": 2, "research": 10}

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    poll_interval = Float(
        1.0,
        help="""
        Seconds between two looks for due cron ticks and queued runs.

        Runs queued through this process (API, webhooks) start at once; the
        poll catches cron ticks and runs queued by other processes.

        Example::

            c.SchedulerService.poll_interval = 5

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    heartbeat_interval = Float(
        10.0,
        help="""
        Seconds between two heartbeats of a running run (also when a cancel is noticed).

        Example::

            c.SchedulerService.heartbeat_interval = 5

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    stale_after = Float(
        60.0,
        help="""
        Seconds without a heartbeat after which a running run is declared orphaned.

        Its worker died (kill -9, a lost machine); the run is marked
        ``orphaned`` and retried by the job's retry policy. Keep it several
        heartbeat intervals.

        Example::

            c.SchedulerService.stale_after = 120

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    late_tolerance = Float(
        300.0,
        help="""
        Seconds a cron tick may be late and still run as on time.

        A tick later than this (the service was down) follows the job's
        missed-run policy: ``skip`` or ``run_once``.

        Example::

            c.SchedulerService.late_tolerance = 60

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    max_notebook_size = ByteSpecification(
        16 * 1024**2,
        help="""
        Largest notebook a job may snapshot (413 above it).

        Example::

            c.SchedulerService.max_notebook_size = "64M"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    max_discard_size = ByteSpecification(
        MAX_DISCARD_BYTES,
        help="""
        Largest request body read, and thrown away, to answer a body over the limit with 413.

        The REST API keeps a body up to its limit (twice ``max_notebook_size`` and
        1 MiB); what is over it is read and dropped, then the request gets the JSON
        413: the hub's proxy sends a body without waiting for ``Expect: 100-continue``,
        and closing the connection under it turns the answer into the hub's HTML 503
        page. A body over this bound gets its connection closed instead. Reading costs
        bandwidth, never memory.

        Example::

            c.SchedulerService.max_discard_size = "1G"

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    file_watch_interval = Float(
        5.0,
        help="""
        Seconds between two scans of the file triggers' globs.

        Example::

            c.SchedulerService.file_watch_interval = 30

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    clock = Callable(
        utcnow,
        help="""
        The service's clock: returns the current timezone-aware time.

        Cron ticks, heartbeats and retention use it. Replace it only to test
        schedules without waiting for them.

        Example::

            c.SchedulerService.clock = lambda: datetime.now(timezone.utc)

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    tracking_url = Unicode(
        help="""
        The tracking service's URL as runs reach it (``MLFLOW_TRACKING_URI``); empty: none.

        Each run gets a hub token of its owner's, valid for the run's
        timeout and only for the tracking service, so what the notebook logs
        to MLflow is the owner's and its run id is recorded on the run.
        Defaults to ``$SHIPYARD_SCHEDULER_TRACKING_URL``.

        Example::

            c.SchedulerService.tracking_url = "http://127.0.0.1:8000/services/tracking"

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("tracking_url")
    def _default_tracking_url(self):
        return os.environ.get("SHIPYARD_SCHEDULER_TRACKING_URL", "")

    deployer_url = Unicode(
        help="""
        The deployer service's URL as runs reach it (``SHIPYARD_DEPLOYER_URL``); empty: none.

        With a URL, each run's token may also call the deployer, as the run's
        owner, so a scheduled notebook can retrain and ``%deploy`` its owner's
        models; the token expires with the run and is revoked when it ends.
        The service's own role needs ``access:services!service=deployer`` to
        hand that scope out. Defaults to ``$SHIPYARD_SCHEDULER_DEPLOYER_URL``.

        Example::

            c.SchedulerService.deployer_url = "http://127.0.0.1:8000/services/deployer"

        .. versionadded:: 0.5
        """
    ).tag(config=True)

    @default("deployer_url")
    def _default_deployer_url(self):
        return os.environ.get("SHIPYARD_SCHEDULER_DEPLOYER_URL", "")

    service_url = Unicode(
        help="""
        Where the service listens; the hub's proxy sends /services/scheduler/ here.

        Defaults to ``$JUPYTERHUB_SERVICE_URL``.

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8003")

    instance_id = Unicode(
        help="""
        This scheduler process's identity: stable across its restarts, one live process each.

        A process that starts takes over its identity's lease in the database and
        recovers the runs its predecessor held at once (that process is dead), instead
        of waiting ``stale_after`` for their heartbeats to stop. Runs of other
        identities (other replicas) are left to their own process. Defaults to the host
        name and the address the service listens on, which a hub-managed service keeps
        across restarts; on Kubernetes use a StatefulSet pod's name. **Never give two
        live processes one identity**: the second refuses to start when the first runs
        on the same machine; otherwise the first loses its runs and stops.

        Example::

            c.SchedulerService.instance_id = "scheduler-0"

        .. versionadded:: 0.4
        """
    ).tag(config=True)

    @default("instance_id")
    def _default_instance_id(self):
        return f"{socket.gethostname()}:{urlsplit(self.service_url).netloc}"

    service_prefix = Unicode(
        help="""
        The URL prefix the service is served under. Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/scheduler/")

    groups_cache_seconds = Float(
        30.0,
        help="""
        Seconds a user's hub groups are cached; a group change applies within this.

        Example::

            c.SchedulerService.groups_cache_seconds = 300

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    kill_children_on_exit = Bool(
        False,
        help="""
        Die with the hub (Linux ``PR_SET_PDEATHSIG``) when run as its managed service.

        Off by default: the scheduler outlives a hub that crashes (kill -9), keeps
        running jobs and answering through the proxy, and the next hub adopts it
        (``hub_ext/hub/app.py``). On, a crash of the hub stops it until the next start.

        Example::

            c.SchedulerService.kill_children_on_exit = True

        .. versionadded:: 0.3
        .. versionchanged:: 0.13
           Off by default.
        """,
    ).tag(config=True)

    # ------------------------------------------------------------ wiring

    def initialize(self, argv=None):
        super().initialize(argv)
        # the hub's c.LocalHost and c.KubePlacement (hub_ext/host/passing.py); this
        # service's file and command line win over them
        load_service_config(self, self.config_file)

    def _store(self) -> JobStore:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        upgrade(self.db_url)
        from datetime import timedelta

        return JobStore(
            make_engine(self.db_url),
            SnapshotStore(Path(self.state_dir) / "snapshots"),
            clock=self.clock,
            late_tolerance=timedelta(seconds=self.late_tolerance),
        )

    def _runs_dir(self) -> Path:
        path = Path(self.runs_dir)
        path.mkdir(parents=True, exist_ok=True)
        # runs write their outputs as their owners: traversable, not listable
        os.chmod(path, 0o711)
        return path

    def _executor(self) -> Executor:
        """The configured executor; with ``c.LocalHost.placement = "container"`` the local one
        becomes :class:`~.executors.containers.ContainerExecutor`, as the hub's local
        spawner becomes its container spawner (another class configured is kept)."""
        chosen = self.executor_class
        if LocalHost(parent=self).placement == "container":
            from .executors.containers import ContainerExecutor
            from .executors.local import LocalExecutor

            if chosen is LocalExecutor:
                self.log.info("Placement 'container': runs are papermill in podman containers")
                chosen = ContainerExecutor
        return chosen(parent=self)

    monitors = List(
        Unicode(),
        ["alerts"],
        help="""
        Hub services that may read (GET) every user's jobs and runs as an admin would.

        The alerts service evaluates its rules from these answers; a monitor can
        change nothing (any other method answers 403, as for every service). Its
        token also needs ``access:services!service=scheduler``
        (config/jupyterhub_config.py gives it to the alerts service). An empty list
        lets no service read.

        Example::

            c.SchedulerService.monitors = []

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    def start(self) -> None:
        if self.kill_children_on_exit and os.environ.get("JUPYTERHUB_SERVICE_NAME"):
            die_with_parent(signal.SIGTERM, exit_if_orphaned=True)
        # the event loop gets the GIL back sooner from a thread building a page of
        # jobs, so /health and small requests are not held up behind it (#15, point 7)
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        store = self._store()
        register_job_schedule(store.next_fires)
        profiles = ProfileStore.for_path(self.profiles_file)
        executor = self._executor()
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            self.log.critical(
                "JUPYTERHUB_API_TOKEN is not set: the scheduler runs as a JupyterHub service. "
                "Start it from the hub (c.JupyterHub.services) or, for an external replica, "
                "give it the api_token of a service declared in the hub's config."
            )
            self.exit(2)
        api_url = os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
        directory = HubDirectory(api_url, token, self.groups_cache_seconds)
        notifier = Notifier(parent=self, store=store, hub_url=self._public_hub_url())

        async def groups_of(user: str) -> tuple[str, ...]:
            return await directory.groups_of(user)

        run_env = RunEnvironment(api_url, token, self.tracking_url, self.deployer_url)
        worker = Worker(
            store=store,
            executor=executor,
            profiles=profiles,
            groups_of=groups_of,
            runs_dir=self._runs_dir(),
            max_concurrent_runs=self.max_concurrent_runs,
            poll_interval=self.poll_interval,
            heartbeat_interval=self.heartbeat_interval,
            stale_after=self.stale_after,
            group_quotas=dict(self.group_quotas),
            notify=notifier.notify,
            extra_env=run_env,
            release_env=run_env.release,
            # the secrets service's URL comes from the hub's config (SHIPYARD_SECRETS_API_URL)
            secrets=RunSecrets(SecretsResolver.from_environment()),
            worker_id=new_worker_id(),
            identity=self.instance_id,
            account_of=account_resolver(self.account_prefix),
        )
        core = SchedulerCore(
            store=store,
            profiles=profiles,
            directory=directory,
            home_of=home_resolver(self.account_prefix),
            wake=worker.wake,
            max_notebook_bytes=int(self.max_notebook_size),
            max_request_bytes=int(self.max_notebook_size) * 2 + 1024**2,
            worker_id=worker.worker_id,
            started_at=time.monotonic(),
            cancel_local=worker.cancel_local,
            # read once here: LocalExecutor's default asks nvidia-smi (a subprocess)
            gpu_count=executor.gpu_count,
            check_webhook=notifier.check_webhook_url,
            group_quotas=dict(self.group_quotas),
        )
        core.pipelines = PipelineService(core, self._runs_dir() / "pipelines")
        store.pipelines.workspaces = str(self._runs_dir() / "pipelines")
        prefix = (
            self.service_prefix if self.service_prefix.endswith("/") else self.service_prefix + "/"
        )
        hub_auth = HubOAuth(api_token=token, cache_max_age=30)
        app = make_app(
            prefix,
            routes(prefix),
            base_handler=BaseHandler,
            not_found=NotFoundHandler,
            hub_auth=hub_auth,
            service_name="scheduler",
            monitors=tuple(self.monitors),
            scheduler=core,
            build_openapi=build_openapi,
        )

        async def serve() -> None:
            # before the sweep: a second live process of this identity must not
            # remove the first one's run cgroups
            try:
                await worker.take_over()
            except Conflict as e:
                self.log.critical("%s", e)
                self.exit(2)
            server = listen(
                app,
                self.service_url,
                max_discard_bytes=int(self.max_discard_size),
                max_body_size=core.max_request_bytes,
            )
            stop = stop_event()
            from .triggers.file import FileWatcher

            sweep = getattr(executor, "sweep", None)
            if sweep is not None:
                await sweep()

            watcher = FileWatcher(store, core.home_of, self.file_watch_interval, wake=worker.wake)
            tasks = [asyncio.create_task(worker.run()), asyncio.create_task(watcher.run())]
            self.log.info(
                "Scheduler %s on %s (%s database, %s executor, %d runs at once)",
                worker.worker_id,
                self.service_url,
                store.engine.dialect.name,
                type(executor).__name__,  # the placement may have chosen another class
                self.max_concurrent_runs,
            )
            # What exists now (modules, the app, the store) lives as long as the process.
            # Frozen, it is no longer walked by the cyclic collector, whose full passes
            # over it made one request in fifty wait 60 to 80 ms (bench/scale.py).
            gc.collect()
            gc.freeze()
            await stop.wait()
            server.stop()
            watcher.stop()
            await worker.stop()
            close = getattr(executor, "close", None)
            if close is not None:
                await close()
            for task in tasks:
                task.cancel()

        try:
            asyncio.run(serve())
        finally:
            store.engine.dispose()
            self.log.info("Scheduler stopped")

    def _public_hub_url(self) -> str:
        return os.environ.get("SHIPYARD_PUBLIC_URL", "")


main = SchedulerService.launch_instance
