"""One way to start a user's code on this machine: :meth:`LocalHost.launch`.

The spawner (a user's server), the scheduler's executor (papermill, nbconvert,
a warm process) and the deployer's backend (a model replica) all start a
process of a user's with the same steps, and a security fix to one step must
reach all three:

1. the owner's **account**, resolved by :meth:`LocalHost.account
   <hub_ext.host.local.LocalHost.account>` before the request is made (a
   :class:`LaunchRequest` cannot be built without it);
2. the **environment**: the process's whole ``env``, built by the caller from
   the profile's built environment (:func:`~hub_ext.host.localproc.process_environment`,
   or JupyterHub's ``get_env`` for a server);
3. the **cgroup**, made with the profile's limits and GPUs (one left under the
   same name is emptied and made again), or joined when it already holds the
   run (nbconvert after papermill);
4. the **pre-exec** step between fork and exec: join the cgroup while still
   root, become the owner, and die with the caller unless the process must
   outlive it (:func:`~hub_ext.host.localproc.make_preexec`);
5. the **start**, in a session of its own, inheriting no file descriptor of
   the caller's but its output.

What differs between the three is data on the request: where the output goes
(``"pipe"`` back to the caller, ``"inherit"`` the caller's own, or an open
descriptor or a path: a log file, or a FIFO that a detached process keeps
writing to after its caller is gone, as the deployer's replicas do), whether
the process is ``detached`` (a server and a replica outlive the process that
started them, to be adopted by the next one), whether it may write to its
stdin, and whether it starts in its home.

**Why async.** The cgroup step (removing a left cgroup waits for its
processes to die) and an account's creation are blocking and run in threads,
so :func:`launch` is a coroutine for every caller. The start itself is
``loop.subprocess_exec`` when the output is piped back to the caller: asyncio
then reports the exit and the closing of the pipe apart, which the executor
needs (a notebook's background process may hold the pipe after papermill
exits). Otherwise it is a plain :class:`subprocess.Popen`, started on the event
loop's thread (a fork, not a wait): JupyterHub's spawner contract keeps its
``Popen`` (``self.proc``, ``poll``), and a detached process must not belong to
an event loop's child watcher, which would reap it in the caller's stead.

Rejected alternatives: a launcher helper process (a setuid wrapper, or one
``systemd-run`` per process), which would put a second program between the
caller and the user's code for what ``preexec_fn`` does in the forked child;
and one method per caller on :class:`~hub_ext.host.local.LocalHost`, which is
how the three drifted apart before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hub_ext.host.cgroups import CgroupDriver
from hub_ext.host.localproc import make_cgroup, make_preexec, profile_limits
from hub_ext.host.usage import UsageLabel
from hub_ext.profiles.model import Profile

#: Where a launched process's output (stdout and stderr together) goes: ``"pipe"`` to
#: the caller's protocol, ``"inherit"`` the caller's own stdout and stderr, an open file
#: descriptor of the caller's, or the path of a file (appended to) or FIFO.
OutputTarget = Literal["pipe", "inherit"] | int | Path

#: What :func:`launch` decides itself: not to be changed by ``popen_kwargs``.
_OWNED_POPEN_KWARGS = frozenset(
    {"args", "env", "cwd", "preexec_fn", "start_new_session", "stdin", "stdout", "stderr"}
)


class CgroupFailed(OSError):
    """The process's cgroup could not be made; nothing was started.

    An :class:`OSError`, as the cgroup driver raised it, so a caller that
    treats both steps alike may; one that reports them apart (a cgroup the
    host refuses, a program that cannot start) catches this first.
    """


@dataclass(frozen=True)
class LaunchRequest:
    """One process to start as its owner, in its cgroup with its profile's limits.

    Attributes
    ----------
    user : pwd.struct_passwd
        The owner's account (:meth:`LocalHost.account
        <hub_ext.host.local.LocalHost.account>`); the process switches to it
        when the caller runs as root, and otherwise runs as the caller's user.
    profile : Profile
        Whose CPU and memory limits the cgroup gets.
    argv : sequence of str
        The program and its arguments. Nothing secret or identifying: every
        account of the machine reads a command line.
    env : mapping of str to str
        The process's whole environment; nothing of the caller's is added.
    driver : CgroupDriver
        The cgroup hierarchy the caller's processes go under.
    cgroup : str
        The process's cgroup under the driver's parent.
    cwd : str, optional
        Where it starts; None leaves the caller's (or the home, ``chdir_home``).
    gpus : sequence of str
        The GPUs its cgroup may open (a new cgroup only); none by default.
    create_cgroup : bool
        Make the cgroup (removing one left under that name); False joins a
        cgroup that exists already, as a run's second process does.
    output : OutputTarget
        Where stdout and stderr go (see :data:`OutputTarget`). A FIFO is opened
        read-write, so a detached process never writes to a pipe nobody holds
        (no SIGPIPE while no reader is there).
    stdin_pipe : bool
        Give the caller the process's stdin (``"pipe"`` output only); else
        it reads ``/dev/null``.
    detached : bool
        The process outlives its caller: it is not killed when the caller
        dies (no ``PR_SET_PDEATHSIG``), for a caller that adopts it again
        after a restart.
    chdir_home : bool
        Start in the account's home (a server), whatever ``cwd`` says.
    popen_kwargs : mapping
        Further :class:`subprocess.Popen` arguments (JupyterHub's
        ``LocalProcessSpawner.popen_kwargs``); never one :func:`launch`
        decides itself (the environment, the pre-exec step, the session, the
        standard streams, the working folder).
    usage : UsageLabel, optional
        Whose the new cgroup is and what it holds, for usage accounting: recorded
        in the driver's ledger when the cgroup is made (:mod:`hub_ext.host.usage`).
    """

    user: pwd.struct_passwd
    profile: Profile
    argv: Sequence[str]
    env: Mapping[str, str]
    driver: CgroupDriver
    cgroup: str
    cwd: str | None = None
    gpus: Sequence[str] = ()
    create_cgroup: bool = True
    output: OutputTarget = "pipe"
    stdin_pipe: bool = False
    detached: bool = False
    chdir_home: bool = False
    popen_kwargs: Mapping[str, Any] = field(default_factory=dict)
    usage: UsageLabel | None = None

    def __post_init__(self) -> None:
        owned = sorted(_OWNED_POPEN_KWARGS & set(self.popen_kwargs))
        if owned:
            raise ValueError(f"popen_kwargs may not set {', '.join(owned)}: the launch sets them")
        if self.stdin_pipe and self.output != "pipe":
            raise ValueError("stdin_pipe needs output='pipe': the caller holds neither otherwise")


@dataclass(eq=False)
class Launched:
    """A process :func:`launch` started: its pid and cgroup, and the caller's handle on it.

    Attributes
    ----------
    pid : int
    cgroup : str
    popen : subprocess.Popen or None
        For every output but ``"pipe"``: poll, wait and signal it as usual.
    transport : asyncio.SubprocessTransport or None
        For ``"pipe"`` output: its pipes and exit go to the caller's protocol.
    """

    pid: int
    cgroup: str
    popen: subprocess.Popen | None = None
    transport: asyncio.SubprocessTransport | None = None


async def launch(
    request: LaunchRequest,
    *,
    run_as_root: bool,
    cleanup_timeout: float,
    protocol: asyncio.SubprocessProtocol | None = None,
) -> Launched:
    """Make the request's cgroup, then start its process there as its owner.

    Called through :meth:`LocalHost.launch <hub_ext.host.local.LocalHost.launch>`,
    which supplies the host's settings.

    Parameters
    ----------
    request : LaunchRequest
    run_as_root : bool
        Whether the caller is root, and so switches the process to its owner.
    cleanup_timeout : float
        Seconds to wait for the processes of a left cgroup of the same name to die.
    protocol : asyncio.SubprocessProtocol, optional
        Receives the output and the exit; required for ``"pipe"`` output, and only then.

    Returns
    -------
    Launched

    Raises
    ------
    CgroupFailed
        The cgroup could not be made; nothing was started.
    OSError, subprocess.SubprocessError
        The process could not be started (its program missing, not
        executable by the owner, ...). A cgroup made for it stays, empty, for
        the caller's release, which frees its GPUs with it.
    """
    if (request.output == "pipe") != (protocol is not None):
        raise ValueError("a protocol is needed for output='pipe', and only then")
    if request.create_cgroup:
        try:
            await make_cgroup(
                request.driver, request.cgroup, request.profile, cleanup_timeout, request.gpus
            )
        except OSError as e:
            raise CgroupFailed(e.errno, f"Could not create cgroup {request.cgroup}: {e}") from e
        ledger = request.driver.ledger
        if ledger is not None and request.usage is not None:
            try:
                ledger.opened(
                    request.driver,
                    request.cgroup,
                    request.usage,
                    request.profile.slug,
                    profile_limits(request.profile, request.gpus),
                )
            except OSError as e:  # accounting never stops a start
                logging.getLogger(__name__).warning(
                    "Could not record the usage labels of cgroup %s: %s", request.cgroup, e
                )
    # looked up before the fork: nothing between fork and exec loads a library or reads
    # the account database
    preexec = make_preexec(
        request.driver,
        request.cgroup,
        request.user,
        run_as_root,
        dies_with_parent=not request.detached,
        chdir_home=request.chdir_home,
    )
    common: dict[str, Any] = {
        **request.popen_kwargs,
        "env": dict(request.env),
        "cwd": request.cwd,
        "preexec_fn": preexec,
        "start_new_session": True,  # signals to the caller's group never reach it
    }
    if protocol is not None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            lambda: protocol,
            *request.argv,
            stdin=subprocess.PIPE if request.stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **common,
        )
        pid = transport.get_pid()
        assert pid is not None  # started: subprocess_exec raises otherwise
        return Launched(pid, request.cgroup, transport=transport)
    if request.output == "inherit":
        popen = subprocess.Popen(list(request.argv), stdin=subprocess.DEVNULL, **common)  # noqa: S603
        return Launched(popen.pid, request.cgroup, popen=popen)
    assert not isinstance(request.output, str)  # "pipe" and "inherit" are handled above
    fd, opened = _output_fd(request.output)
    try:
        popen = subprocess.Popen(  # noqa: S603
            list(request.argv),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            **common,
        )
    finally:
        if opened:  # the process holds its own copy
            os.close(fd)
    return Launched(popen.pid, request.cgroup, popen=popen)


def _output_fd(output: int | Path) -> tuple[int, bool]:
    """The descriptor ``output`` names, and whether it was opened here (to be closed).

    A path is never followed through a link (the caller is root; the folder
    may be writable by others). A FIFO is opened read-write: the process then
    always has a reader and never gets SIGPIPE while its caller is gone. Any
    other path is a regular file, created 0600 and appended to.
    """
    if isinstance(output, int):
        return output, False
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        is_fifo = stat.S_ISFIFO(os.lstat(output).st_mode)
    except FileNotFoundError:
        is_fifo = False
    if is_fifo:
        fd = os.open(output, os.O_RDWR | flags)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | flags, 0o600)
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) if is_fifo else stat.S_ISREG(mode)):  # replaced meanwhile
        os.close(fd)
        raise OSError(f"{output} is neither a FIFO nor a regular file")
    return fd, True
