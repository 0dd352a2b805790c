"""Shipyard as the benchmark times it: a real hub with the scheduler service, and one user.

The hub is the real thing, as ``tests/test_scheduler_service.py`` starts it
(:class:`tests.hubtools.HubProcess`): the scheduler service with a config file of the
bench's settings, the ``base`` environment, a hub user with a system account
(:data:`ACCOUNT_PREFIX`) whose runs go to cgroups under :data:`JOBS_CGROUP_PARENT`; the
profile has no CPU limit (nor has jupyter-scheduler) and 1Gi of memory. These names are
the bench's own, never a test session's: the tests' accounts are ``sy<tag>…-`` and their
cgroups ``shipyard-test…`` (``tests.hubtools.tagged``), so ``SHIPYARD_TEST_TAG`` plays no
part here, and the bench's clean-up cannot remove what a test run beside it made.

Every call to the scheduler goes through
:class:`~server_ext.clients.scheduler.client.SchedulerClient`, the client of the magics, the
panel's handlers and ``shipyard jobs``: what is timed is the path users take, with its URL
rules and error translation. Two calls are not the client's, because no user makes them
with a hub token: the unauthenticated ``health`` probe while the hub starts, and the
webhook, which an outside system fires with the job's secret in
:data:`~server_ext.clients.scheduler.client.WEBHOOK_SECRET_HEADER` at the client's
:meth:`~server_ext.clients.scheduler.client.SchedulerClient.webhook_url`.

Runs that start in a pre-started kernel say so in their log (:data:`WARM_NOTE`); the
kernels waiting for a run are found in their ``warm-*`` cgroups
(:func:`wait_for_idle_warm_kernel`).

The calls of one user to the scheduler, and the timing of one triggered run
(:meth:`SchedulerUser.timed_run`), are :class:`SchedulerUser`'s, apart from the hub that
:class:`Shipyard` starts: ``bench/containers.py`` drives the scheduler of the hubs it
starts itself (one per placement) with them, so that trigger to first cell is measured
the same way in both benches.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import requests

from hub_ext.host.accounts import _create
from hub_ext.host.slugs import account_name
from server_ext.clients.scheduler.client import WEBHOOK_SECRET_HEADER, SchedulerClient
from tests.hubtools import (
    HubProcess,
    cgroup_dirs,
    remove_cgroups,
    remove_test_accounts,
    wait_for,
)

from . import log
from .cpu import cpu_seconds
from .notebook import first_cell_start, notebook

ACCOUNT_PREFIX = "sybench-"
CGROUP_PARENT = "shipyard-bench"
#: where tests/hub_config.py puts the scheduler's runs: ``<cgroup parent>-jobs``
JOBS_CGROUP_PARENT = f"{CGROUP_PARENT}-jobs"
USER = "bench"
PROFILE = "bench"
PROFILES = f"""
profiles:
  - slug: {PROFILE}
    display_name: Bench
    default: true
    mem_limit: 1Gi
"""
SCHEDULER_CONFIG = """
c.SchedulerService.max_concurrent_runs = {max_concurrent_runs}
c.SchedulerService.poll_interval = {poll_interval}
c.LocalExecutor.warm_pool_size = {warm_pool_size}
c.LocalExecutor.warm_pool_max = {warm_pool_max}
"""
#: What a run's log says when it ran in a kernel the pool had started: the end of the
#: note of both pools, "running in a kernel started beforehand (...)" for a process and
#: "in container ... of IMAGE, started beforehand" for a container.
WARM_NOTE = "started beforehand"
#: The notebook each job runs, relative to the user's home.
SOURCE_PATH = "notebooks/bench.ipynb"
#: Seconds any one call of the client may take (a burst of 40 POSTs on 2 cores is slow).
CALL_TIMEOUT = 120.0
#: A run in these states has not ended yet.
UNFINISHED = ("queued", "running")


def scheduler_env(folder: Path, settings: dict, extra: str = "") -> dict[str, str]:
    """The hub's environment for its scheduler service, with the bench's settings.

    Writes the service's config file (:data:`SCHEDULER_CONFIG` with ``settings``:
    ``max_concurrent_runs``, ``poll_interval``, ``warm_pool_size``, ``warm_pool_max``;
    then the lines of ``extra``) to ``folder`` and returns what a
    :class:`~tests.hubtools.HubProcess` needs in its ``extra_env`` to start the service
    with it.
    """
    config = folder / "scheduler_config.py"
    config.write_text(SCHEDULER_CONFIG.format(**settings) + extra)
    return {"SHIPYARD_SCHEDULER": "1", "SHIPYARD_SCHEDULER_CONFIG": str(config)}


def install_files(account: pwd.struct_passwd, files: dict[str, str]) -> list[Path]:
    """Write ``files`` (path relative to the account's home: text) there, as the account's own.

    The folders on the way are made and given to the account too, so its runs can write
    beside the files; the paths written, in the order given.
    """
    home = Path(account.pw_dir)
    written = []
    for relative, text in files.items():
        path = home / relative
        for folder in reversed(path.relative_to(home).parents):
            (home / folder).mkdir(exist_ok=True)
            os.chown(home / folder, account.pw_uid, account.pw_gid)
        path.write_text(text)
        os.chown(path, account.pw_uid, account.pw_gid)
        written.append(path)
    return written


def install_notebook(account: pwd.struct_passwd) -> Path:
    """Write the bench notebook to :data:`SOURCE_PATH` in the account's home, as its own."""
    return install_files(account, {SOURCE_PATH: json.dumps(notebook())})[0]


def scheduler_client(hub: HubProcess, token: str) -> SchedulerClient:
    """The client of ``token``'s user for ``hub``'s scheduler, once it answers.

    It speaks to the service behind the hub's proxy, as a user's server reaches it.
    """
    url = f"{hub.url}/services/scheduler"
    wait_for(
        lambda: requests.get(f"{url}/health", timeout=5).status_code == 200,
        60,
        0.2,
        "the scheduler to answer",
    )
    return SchedulerClient(url, token, CALL_TIMEOUT)


@dataclass
class TimedRun:
    """One run from its trigger on, each figure in seconds after the trigger.

    The trigger's moment and the run's times are all this machine's clock: the
    bench's ``time.time()``, the service's ``started_at`` and ``ended_at``, and
    papermill's start time of the first cell.
    """

    run_id: str
    #: the service recorded the run as started (API, queue and claim are done)
    started: float
    #: papermill started the notebook's first cell
    first_cell: float
    #: the service recorded the run as ended (outputs written, the run's processes gone)
    ended: float
    #: the run ran in a kernel the warm pool had started (its log says so)
    warm: bool


class SchedulerUser:
    """One hub user's calls to the scheduler: jobs of the bench notebook and their runs.

    Parameters
    ----------
    client : SchedulerClient, optional
        The user's client; :class:`Shipyard` sets it once it has made the user.
    """

    def __init__(self, client: SchedulerClient | None = None):
        self.client = client

    @property
    def scheduler(self) -> SchedulerClient:
        """The user's client of the scheduler."""
        if self.client is None:
            raise RuntimeError("the scheduler's user is not made yet")
        return self.client

    def create_job(self, name: str) -> dict:
        """A job of the bench notebook with a webhook trigger; the answer has its secret."""
        body = {
            "name": name,
            "profile": PROFILE,
            "source_path": SOURCE_PATH,
            "triggers": [{"kind": "webhook"}],
        }
        return self.scheduler.create_job(body)

    def run_now(self, job_id: str) -> str:
        """Queue a run of the job (``POST api/jobs/<id>/runs``); its id."""
        return self.scheduler.run_now(job_id)["id"]

    def fire_webhook(self, job: dict) -> str:
        """Run the job as an outside system would: its webhook, with its secret; the run's id."""
        r = requests.post(
            self.scheduler.webhook_url(job["id"]),
            headers={WEBHOOK_SECRET_HEADER: job["webhook_secret"]},
            timeout=60,
        )
        if r.status_code != 202:
            raise RuntimeError(f"webhook: {r.status_code} {r.text}")
        return r.json()["run_id"]

    def get_run(self, run_id: str) -> dict:
        """The run as the service describes it now."""
        return self.scheduler.get_run(run_id)

    def wait_run(self, run_id: str, interval: float, timeout: float = 300) -> dict:
        """The run once it has ended, asked every ``interval`` seconds."""

        def ended():
            run = self.get_run(run_id)
            return run if run["status"] not in UNFINISHED else None

        return wait_for(ended, timeout, interval, f"run {run_id}")

    def output(self, run_id: str) -> dict:
        """The run's output notebook."""
        _, content = self.scheduler.run_output(run_id)
        return json.loads(content)

    def log_text(self, run_id: str) -> str:
        """All of an ended run's log."""
        return "".join(chunk["text"] for chunk in self.scheduler.follow_log(run_id))

    def used_warm_kernel(self, run_id: str) -> bool:
        """Whether the run ran in a kernel the pool had started (its log says so)."""
        return WARM_NOTE in self.log_text(run_id)

    @staticmethod
    def check(run: dict) -> None:
        """Raise unless the run succeeded: a failed run's time is not the scheduler's."""
        if run["status"] != "succeeded":
            raise RuntimeError(f"run {run['id']} {run['status']}: {run['reason']}")

    def timed_run(self, job: dict, interval: float = 0.1) -> TimedRun:
        """Fire the job's webhook, wait for the run to succeed, and time it from the trigger.

        ``interval`` is how often the run is asked for while it runs; the figures are the
        service's and papermill's own records, not the moment the bench saw the end.
        """
        triggered = time.time()
        run_id = self.fire_webhook(job)
        run = self.wait_run(run_id, interval)
        self.check(run)
        return TimedRun(
            run_id=run_id,
            started=datetime.fromisoformat(run["started_at"]).timestamp() - triggered,
            first_cell=first_cell_start(self.output(run_id)) - triggered,
            ended=datetime.fromisoformat(run["ended_at"]).timestamp() - triggered,
            warm=self.used_warm_kernel(run_id),
        )


class Shipyard(SchedulerUser):
    """A hub with the scheduler service, one user with an account, home and notebook.

    Parameters
    ----------
    scratch : Path
        A world-traversable folder for the hub's data, the config and the user's home.
    settings : dict
        ``max_concurrent_runs``, ``poll_interval``, ``warm_pool_size``, ``warm_pool_max``:
        written to the scheduler's config file.
    log_dir : Path, optional
        Where to keep the hub's log.
    account_prefix, cgroup_parent : str, optional
        The names of the bench's accounts and cgroups (the runs' cgroups are under
        ``<cgroup_parent>-jobs``); another bench gives its own, so that the clean-up of one
        never removes what the other made.
    """

    def __init__(
        self,
        scratch: Path,
        settings: dict,
        log_dir: Path | None,
        account_prefix: str = ACCOUNT_PREFIX,
        cgroup_parent: str = CGROUP_PARENT,
    ):
        super().__init__()
        self.settings = settings
        self.token = ""
        self.account_prefix = account_prefix
        self.cgroup_parent = cgroup_parent
        #: where the scheduler puts the runs (tests/hub_config.py): ``<cgroup parent>-jobs``
        self.jobs_cgroup_parent = f"{cgroup_parent}-jobs"
        homes = scratch / "homes"
        homes.mkdir()
        homes.chmod(0o755)  # the account must reach its home
        (scratch / "profiles.yaml").write_text(PROFILES)
        self.hub = HubProcess(
            data_dir=scratch / "data",
            profiles_file=scratch / "profiles.yaml",
            account_prefix=account_prefix,
            cgroup_parent=cgroup_parent,
            home_root=homes,
            extra_env=scheduler_env(scratch, settings),
            log_path=log_dir / "shipyard-hub.log" if log_dir else None,
        )
        self.homes = homes

    def start(self) -> None:
        """Start the hub, wait for the scheduler, make the user, its account and notebook."""
        self.hub.start()
        #: the user's hub API token, for clients beside :attr:`client`
        self.token = self.hub.create_user(USER)
        self.client = scheduler_client(self.hub, self.token)
        account = account_name(USER, self.account_prefix)
        self.account = _create(account, str(self.homes / account), f"bench user {USER}")
        install_notebook(self.account)

    def stop(self) -> None:
        """Stop the hub (its proxy and services with it); again is harmless."""
        self.hub.stop()

    def remove_accounts_and_cgroups(self) -> None:
        """Remove the bench's accounts and cgroups (by default ``sybench-``, ``shipyard-bench``)."""
        remove_test_accounts(self.account_prefix)
        remove_cgroups(self.jobs_cgroup_parent)
        remove_cgroups(self.cgroup_parent)

    # ------------------------------------------------------------ processes

    def service_pid(self) -> int | None:
        """The scheduler service: the hub's child running ``hub_ext.services.scheduler``."""
        for child in psutil.Process(self.hub.proc.pid).children():
            if "hub_ext.services.scheduler" in " ".join(cmdline(child.pid)):
                return child.pid
        return None

    def proxy_pid(self) -> int | None:
        """configurable-http-proxy, from the pid file the hub writes."""
        try:
            return int((self.hub.data_dir / "proxy.pid").read_text())
        except (OSError, ValueError):
            return None


# ------------------------------------------------------------ the warm pool


def cmdline(pid: int) -> list[str]:
    """The process's command line; empty once it is gone."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def cgroup_processes(prefix: str, parent: str = JOBS_CGROUP_PARENT) -> dict[str, set[int]]:
    """Processes of the scheduler's cgroups under ``parent`` whose name starts with ``prefix``."""
    found: dict[str, set[int]] = {}
    for directory in cgroup_dirs(parent):
        if not directory.name.startswith(prefix):
            continue
        try:
            pids = {int(p) for p in (directory / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            continue
        found.setdefault(directory.name, set()).update(pids)
    return found


def wait_for_idle_warm_kernel(
    timeout: float = 90, parent: str = JOBS_CGROUP_PARENT, need_kernel: bool = True
) -> float:
    """Wait until no run's cgroup is left and a warm kernel waits, idle; seconds waited.

    Idle is no CPU used by the ``warm-*`` cgroups for 0.3 s, as a user's next run would find
    the pool after the refill. Past ``timeout`` it says so and returns: the next run may then
    start cold, and its log says which it was. With ``need_kernel`` false, for runs the
    scheduler does not pre-start kernels for (a pipeline's steps), it does not wait for a
    kernel to appear: no run's cgroup left and every warm one (if any) idle is enough.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if cgroup_processes("job-", parent):
            time.sleep(0.1)
            continue
        warm = cgroup_processes("warm-", parent)
        pids = set().union(*warm.values()) if warm else set()
        with_kernel = any("ipykernel_launcher" in " ".join(cmdline(pid)) for pid in pids)
        if with_kernel or not need_kernel:
            before = cpu_seconds(pids)
            time.sleep(0.3)
            if cpu_seconds(pids) - before < 0.005:
                return time.monotonic() - started
        else:
            time.sleep(0.1)
    if need_kernel:
        log(f"no idle warm kernel after {timeout}s: the next run may start cold")
    else:
        log(f"runs or warm kernels still busy after {timeout}s: the next run shares the CPU")
    return time.monotonic() - started
