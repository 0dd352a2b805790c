"""The steps of starting a user's code as a local process: as its owner, in a cgroup of its own.

Three parts of Shipyard run their users' code as plain processes on this
machine: the spawner (a server), the scheduler's
:class:`~hub_ext.services.scheduler.executors.local.LocalExecutor` (a
scheduled notebook, and warm processes waiting for one) and the deployer's
:class:`~hub_ext.services.deployer.local.LocalBackend` (a model server
replica). They start such a process the same way, because the same security
rules apply to it whatever it is:

- it runs as the owner's system account, named and created the same way for
  all three (:func:`owner_account`), never as root (SECURITY rule 5);
- it joins a cgroup of its own with the profile's CPU and memory limits,
  and a device filter that lets it open only its own GPUs (:func:`make_cgroup`),
  between fork and exec, while still root, and only then switches to the
  account (groups, then gid, then uid, by JupyterHub's ``set_user_setuid``),
  so no code of the user's ever runs outside its limits (SECURITY rule 6;
  :func:`make_preexec`);
- it dies with the service, even by ``kill -9`` (``PR_SET_PDEATHSIG``, set
  after the switch of user, which clears it), unless it must outlive it (a
  server, a replica);
- its environment is built from nothing (:func:`process_environment`), so no
  secret of the service can leak (SECURITY rule 8);
- it is killed as a whole: every process of its cgroup, or without cgroups
  its process tree and session (:func:`kill_cgroup`, :func:`kill_tree`).

These are the steps; :func:`hub_ext.host.launch.launch` (through
:meth:`hub_ext.host.local.LocalHost.launch`) puts them together in their
order and starts the process, once for all three. Keeping them in one place
means a fix to one of them reaches every part. What differs between the
parts (the error a failure raises, the names of their cgroups) stays with
the classes, which pass it in; the settings that configure these steps are
:class:`hub_ext.host.local.LocalHost`'s, one for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from hub_ext.environments.catalog import BuiltEnvironment, find_built
from hub_ext.host import slugs, telemetry
from hub_ext.host.accounts import USER_UMASK, AccountError, ensure_account, make_home_private
from hub_ext.host.cgroups import CgroupDriver, Limits, make_driver
from hub_ext.host.process import die_with_parent
from hub_ext.profiles.model import Profile

#: Variables of the service's own environment a process may see: locale and time zone only.
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")


# ------------------------------------------------------------------ cgroups


def open_driver(choice: str, parent: str, log: logging.Logger, unenforced: str) -> CgroupDriver:
    """The cgroup driver a service configured, with a warning when it cannot cap totals.

    Parameters
    ----------
    choice : str
        ``auto`` (as LocalProfileSpawner picks: cgroup v2, then v1, then
        rlimits) or a name of :data:`hub_ext.host.cgroups.DRIVERS`. Placed under
        the delegated unit where systemd is PID 1
        (:func:`hub_ext.host.cgroups.make_driver`).
    parent : str
        The cgroup under which every process of the service gets its own.
    log : logging.Logger
        Where the warning goes.
    unenforced : str
        The warning, logged when the driver only sets per-process rlimits.

    Returns
    -------
    CgroupDriver
    """
    driver = make_driver(choice, parent)
    if not driver.enforces_total:
        log.warning(unenforced)
    return driver


def profile_limits(profile: Profile, gpus: Sequence[str] = ()) -> Limits:
    """The CPU and memory limits and guarantees of ``profile``, and the GPUs, for a cgroup.

    Parameters
    ----------
    profile : Profile
    gpus : sequence of str
        The GPUs assigned to the process: the only ones its cgroup may open.

    Returns
    -------
    Limits
    """
    return Limits(
        cpu_limit=profile.cpu_limit_cores,
        cpu_guarantee=profile.cpu_guarantee_cores,
        mem_limit=profile.mem_limit_bytes,
        mem_guarantee=profile.mem_guarantee_bytes,
        gpus=tuple(gpus),
    )


async def make_cgroup(
    driver: CgroupDriver,
    name: str,
    profile: Profile,
    cleanup_timeout: float,
    gpus: Sequence[str] = (),
) -> None:
    """Create cgroup ``name`` with the profile's limits, removing one left under that name.

    A cgroup of that name can be left by a service that died, or by an
    earlier start of the same process: whatever still runs in it is killed.

    Parameters
    ----------
    driver : CgroupDriver
    name : str
        The cgroup's name under the driver's parent.
    profile : Profile
        Whose limits the cgroup gets.
    cleanup_timeout : float
        Seconds to wait for the processes of a left cgroup to die.
    gpus : sequence of str
        The GPUs assigned to the process; none by default, so it can open no GPU.

    Raises
    ------
    OSError
        The cgroup could not be created.
    """
    if driver.exists(name):
        await asyncio.to_thread(driver.remove, name, cleanup_timeout)
    await asyncio.to_thread(driver.create, name, profile_limits(profile, gpus))


def kill_cgroup(driver: CgroupDriver, name: str, timeout: float) -> None:
    """SIGKILL every process in cgroup ``name`` until none is left or ``timeout`` passes.

    The cgroup itself stays (empty); blocking, so call it in a thread.

    Parameters
    ----------
    driver : CgroupDriver
    name : str
    timeout : float
        Seconds to keep killing processes that appear (forks under way).
    """
    deadline = time.monotonic() + timeout
    while (left := driver.pids(name)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def kill_tree(pid: int) -> None:
    """Without cgroups: kill the process tree as it is now, and the process's session.

    Parameters
    ----------
    pid : int
        The process started by :func:`hub_ext.host.launch.launch` (a session leader).
    """
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(True)]
    except psutil.NoSuchProcess:
        procs = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def oom_kills(driver: CgroupDriver, name: str) -> int:
    """How often the kernel's OOM killer struck in cgroup ``name`` (v1 or v2).

    Parameters
    ----------
    driver : CgroupDriver
    name : str

    Returns
    -------
    int
        0 as well where the driver has no cgroups (rlimits).
    """
    count = 0
    for directory in driver.directories(name):
        for file in ("memory.oom_control", "memory.events"):
            try:
                text = (directory / file).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    count += int(value)
    return count


# ------------------------------------------------------------ environment, account


def find_environment(
    profile: Profile, envs_dir: str | Path, error: type[Exception]
) -> BuiltEnvironment:
    """The current build of the profile's environment.

    Parameters
    ----------
    profile : Profile
    envs_dir : str or Path
        Where the environments are built (the service's ``environments_dir``).
    error : type of Exception
        What to raise, with a message for the owner, when it is not built.

    Returns
    -------
    BuiltEnvironment
    """
    built = find_built(profile.environment, Path(envs_dir))
    if built is None:
        raise error(
            f"The environment {profile.environment!r} of profile '{profile.slug}' is not "
            f"built on this machine. An admin builds it with `shipyard env build "
            f"{profile.environment}`."
        )
    return built


async def owner_account(
    owner: str,
    *,
    run_as_root: bool,
    prefix: str,
    home_template: str,
    create: bool,
    error: type[Exception],
    missing: type[Exception] | None = None,
    repair_home: bool = False,
) -> pwd.struct_passwd:
    """The owner's system account (as root), or the service's own user.

    The account is named by :func:`hub_ext.host.slugs.account_name` for the
    spawner, the executor and the backend alike, so a run's and a replica's
    files belong to the same Unix user as the owner's server's.

    Parameters
    ----------
    owner : str
        The hub user.
    run_as_root : bool
        Whether the service runs as root; otherwise its own user is returned.
    prefix : str
        The service's ``system_user_prefix``.
    home_template : str
        The service's ``home_dir_template`` (``{account}`` is the name).
    create : bool
        The service's ``create_system_users``: create a missing account.
    error : type of Exception
        What to raise, with a message for the owner, when there is no account.
    missing : type of Exception, optional
        What to raise instead when the account is missing and ``create`` is
        off (the spawner answers that with 403, a failed creation with 500).
    repair_home : bool
        Make an existing account's home private (0700), as homes made before
        homes were private need (:func:`~hub_ext.host.accounts.make_home_private`).

    Returns
    -------
    pwd.struct_passwd
    """
    if not run_as_root:
        return pwd.getpwuid(os.getuid())
    account = slugs.account_name(owner, prefix)
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        if not create:
            raise (missing or error)(
                f"No system account {account!r} exists for {owner} and Shipyard is "
                "configured not to create one (create_system_users = False)."
            ) from None
    else:
        if repair_home:
            await asyncio.to_thread(make_home_private, entry)
        return entry
    try:
        return await ensure_account(
            account, home_template.format(account=account), f"Shipyard user {owner}"
        )
    except AccountError as e:
        raise error(str(e)) from None


def process_environment(
    user: pwd.struct_passwd,
    built: BuiltEnvironment,
    profile: Profile,
    gpus: Sequence[str],
    *,
    shell: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A process's whole environment, built from nothing: no variable of the service leaks.

    Only :data:`PASSED_THROUGH` comes from the service's own environment, and the
    admin's choice about MLflow's telemetry (:func:`hub_ext.host.telemetry.environment`).

    Parameters
    ----------
    user : pwd.struct_passwd
        The account the process runs as (``HOME``, ``USER``, ``LOGNAME``).
    built : BuiltEnvironment
        Its environment: first on ``PATH``, and its variables.
    profile : Profile
        Its profile (``SHIPYARD_PROFILE``).
    gpus : sequence of str
        The GPUs it may see; none hides every GPU.
    shell : bool
        Also set ``SHELL`` (the account's, else ``/bin/bash``).
    extra : mapping of str to str, optional
        Further variables of the caller's, set after the environment's.

    Returns
    -------
    dict of str to str
    """
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env.update(
        {
            "PATH": os.pathsep.join([str(built.bin), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": user.pw_dir,
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
        }
    )
    if shell:
        env["SHELL"] = user.pw_shell or "/bin/bash"
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            **built.env_vars(),
            # MLflow's usage telemetry off unless the admin allows it (hub_ext/host/telemetry.py)
            **telemetry.environment(),
            "SHIPYARD_PROFILE": profile.slug,
            **(extra or {}),
            # an empty list hides every GPU from processes whose profile has none
            "CUDA_VISIBLE_DEVICES": ",".join(gpus),
            "NVIDIA_VISIBLE_DEVICES": ",".join(gpus) or "void",
        }
    )
    return env


# ------------------------------------------------------------------ processes


def make_preexec(
    driver: CgroupDriver,
    cgroup: str,
    user: pwd.struct_passwd,
    run_as_root: bool,
    *,
    dies_with_parent: bool = True,
    chdir_home: bool = False,
) -> Callable[[], None]:
    """What runs between fork and exec: join the cgroup, become the owner, die with the parent.

    As the owner, the process gets :data:`~hub_ext.host.accounts.USER_UMASK` (files it
    creates are the owner's alone). A server (LocalProfileSpawner) and a model replica
    outlive the process that started them, to be adopted by the next one
    (``dies_with_parent=False``); a server starts in its account's home (``chdir_home``).

    Everything that may load a library or read a file (the cgroup's paths,
    the account's groups) is looked up here, before the fork.

    Parameters
    ----------
    driver : CgroupDriver
    cgroup : str
        The process's cgroup, already created.
    user : pwd.struct_passwd
        The account to switch to (when ``run_as_root``).
    run_as_root : bool
        Whether the service runs as root; otherwise the user stays the service's.
    dies_with_parent : bool
        Whether the process is killed when the process that started it dies.
    chdir_home : bool
        Whether the process starts in ``user``'s home (else in ``cwd``).

    Returns
    -------
    callable
        For ``preexec_fn``.
    """
    join_cgroup = driver.preexec(cgroup)
    home = user.pw_dir
    if run_as_root:
        from jupyterhub.spawner import set_user_setuid

        become_user = set_user_setuid(user.pw_name, chdir=chdir_home)
    else:
        become_user = None

    def preexec() -> None:
        join_cgroup()  # while still root: the cgroup files are root's
        if become_user is not None:
            become_user()
            os.umask(USER_UMASK)  # what the user's code saves is theirs alone
        elif chdir_home:
            with contextlib.suppress(OSError):
                os.chdir(home)
        if dies_with_parent:
            # after the switch of user, which clears it: the process dies with the
            # service, even by kill -9, instead of running on unwatched
            die_with_parent(signal.SIGKILL)

    return preexec
