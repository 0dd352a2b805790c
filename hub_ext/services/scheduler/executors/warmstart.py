"""The warm processes of :class:`~.local.LocalExecutor`: started, handed a run, stopped.

A cold run starts ``python -m papermill``, which imports its libraries and
starts a kernel before its first cell. A *warm process*
(:mod:`hub_ext.runtime.warm`) has done both before the run came, as the same
owner, in the same environment, in a cgroup of its own (``warm-<slug>``) with
the profile's limits. Handed a run (:meth:`WarmStarter.hand_over`), it becomes
that run's papermill process in that place: same log, deadline, cancel, OOM
count and release, and its first cell starts within milliseconds. A
replacement starts in the background.

This module starts and stops those processes (:class:`WarmStarter`, through
:meth:`hub_ext.host.local.LocalHost.launch` as every process of a user's is
started) and declares the settings of the pool (:class:`WarmPoolSettings`,
configured as ``c.LocalExecutor.warm_*``); :mod:`.pool` keeps them (one
owner, profile and build per process; one run per kernel), and :mod:`.local`
runs the run's steps. Kept apart from the cold run's steps because it has
its own life cycle (it outlives runs, is stopped when idle or at shutdown),
its own failure modes (never a run's failure: a warm process that does not
start is logged and dropped) and its own security concern (a process started
before its run must fit exactly the run it is handed).

Profiles with GPUs always go the cold way: their devices are chosen per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import pwd
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from traitlets import Float, Integer
from traitlets.config import Configurable

from hub_ext.environments.catalog import BuiltEnvironment, find_built
from hub_ext.host import slugs
from hub_ext.host.launch import LaunchRequest
from hub_ext.host.localproc import kill_tree
from hub_ext.host.usage import UsageLabel
from hub_ext.profiles.model import Profile
from hub_ext.runtime import warm as warm_protocol

from .base import ExecutorError
from .localrun import LocalRun, ProcessOutput
from .pool import Starter, WarmKey, WarmPool, WarmProcess

if TYPE_CHECKING:
    from .local import LocalExecutor

#: How a warm process is started: its module, run with the environment's Python.
WARM_MODULE = "hub_ext.runtime.warm"
#: Seconds a warm process may take to print READY (imports and a kernel start).
WARM_START_TIMEOUT = warm_protocol.START_TIMEOUT
#: Seconds a warm process told to stop (end of its input) gets to shut its kernel down.
WARM_STOP_GRACE = 3


class WarmPoolSettings(Configurable):
    """The warm pool's settings, configured as ``c.LocalExecutor.<setting>``."""

    warm_pool_size = Integer(
        1,
        min=0,
        help="""
        Warm processes kept ready per owner, profile and environment; 0 turns the pool off.

        A warm process has imported papermill and started its kernel, as the
        owner, in the profile's environment and limits, before any run comes:
        a run handed to one starts its first cell in milliseconds rather than
        the seconds a cold ``papermill`` takes. The scheduler asks for them
        (:meth:`LocalExecutor.prewarm`) for jobs it expects to run again, and
        each one used is replaced in the background. A kernel serves one run
        and is never reused. A waiting process and its kernel hold about
        100 MB, in a cgroup of their own with the profile's limits, which the
        run then inherits. Profiles with GPUs always start cold. **Only
        honoured by the local executor.**

        Example::

            c.LocalExecutor.warm_pool_size = 2

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    warm_pool_max = Integer(
        4,
        min=0,
        help="""
        Most warm processes on this machine at once, ready or starting, all owners together.

        Caps the memory and processes the pool holds while nothing runs; when
        it is reached, further owners' runs start cold.

        Example::

            c.LocalExecutor.warm_pool_max = 16

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    warm_idle_timeout = Float(
        600,
        min=0,
        help="""
        Seconds a warm process may wait for a run before it is stopped.

        A job that runs less often than this pays a cold start unless the
        scheduler warms it again before its next run.

        Example::

            c.LocalExecutor.warm_idle_timeout = 3600

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    warm_wait = Float(
        3.0,
        min=0,
        help="""
        Seconds a run may wait for a warm process of its owner and profile that
        is already starting, rather than start a cold one.

        Runs that come faster than the pool refills (a job run back to back,
        a burst of webhook calls) find the next warm process still starting;
        it started earlier, so it is ready sooner than a cold start begun now.
        0 starts cold at once. A run never waits when none is starting.

        Example::

            c.LocalExecutor.warm_wait = 0

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    def pooled(self, profile: Profile) -> bool:
        """Whether runs of ``profile`` may use warm processes (the pool is on; no GPU)."""
        # GPUs are chosen per run: a process started before cannot know its devices
        return self.warm_pool_size > 0 and self.warm_pool_max > 0 and not profile.gpu

    def pool_settings(self) -> dict:
        """The pool's bounds, as :meth:`.pool.WarmPool.fill` takes them."""
        return {
            "size": self.warm_pool_size,
            "limit": self.warm_pool_max,
            "idle_timeout": self.warm_idle_timeout,
        }


class WarmStarter:
    """Starts, hands over and stops the warm processes of one :class:`~.local.LocalExecutor`.

    It uses the executor's host, cgroup driver and owner accounts, and the
    executor's wait for a run's process (a warm process handed a run is
    waited for as a cold one); it owns the :class:`~.pool.WarmPool`.

    Parameters
    ----------
    executor : LocalExecutor
    """

    def __init__(self, executor: LocalExecutor):
        self.executor = executor
        self.pool = WarmPool(self.stop, executor.log)

    async def prewarm(self, owner: str, profile: Profile, *, wait: bool = False) -> int:
        """See :meth:`.local.LocalExecutor.prewarm`."""
        executor = self.executor
        if not executor.pooled(profile):
            return 0
        found = await self._ahead(owner, profile)
        if found is None:
            return 0
        key, start = found
        if wait:
            return await self.pool.fill(key, start, **executor.pool_settings())
        self.pool.fill_later(key, start, **executor.pool_settings())
        return self.pool.ready(key)

    async def _ahead(self, owner: str, profile: Profile) -> tuple[WarmKey, Starter] | None:
        """The key and starter of a warm process for ``owner``'s runs of ``profile`` before
        any run: None (logged) when the environment is not built or there is no account."""
        executor = self.executor
        built = find_built(profile.environment, Path(executor.local_host.environments_dir))
        if built is None:
            executor.log.debug("Not pre-starting a kernel: %s is not built", profile.environment)
            return None
        try:
            user = await executor.local_host.account(owner, ExecutorError)
        except ExecutorError as e:
            executor.log.warning("Not pre-starting a kernel for %s: %s", owner, e)
            return None
        key = self.key(owner, profile, built, user)
        return key, functools.partial(self.start, key, user, built, profile)

    def _for_run(self, run: LocalRun) -> tuple[WarmKey, Starter] | None:
        """The key and starter of a warm process that fits ``run`` (None before its first steps)."""
        if run.built is None or run.user is None:
            return None
        key = self.key(run.spec.owner, run.spec.profile, run.built, run.user)
        return key, functools.partial(self.start, key, run.user, run.built, run.spec.profile)

    @staticmethod
    def key(
        owner: str, profile: Profile, built: BuiltEnvironment, user: pwd.struct_passwd
    ) -> WarmKey:
        """What a warm process is filed under: a run may use it only if its own key is equal."""
        # everything a warm process was started with besides the owner: the limits of its
        # cgroup, the profile it was told, and the environment build it imported
        started_with = [
            profile.public_summary(),
            profile.cpu_limit_cores,
            profile.cpu_guarantee_cores,
            profile.mem_limit_bytes,
            profile.mem_guarantee_bytes,
            str(built.path),
            built.shipyard_digest,
        ]
        fingerprint = hashlib.sha256(json.dumps(started_with, default=str).encode()).hexdigest()
        return WarmKey(owner, user.pw_uid, profile.slug, built.digest, fingerprint)

    async def take(self, run: LocalRun, env: dict[str, str]) -> WarmProcess | None:
        """A warm process for exactly this run's owner, profile and build; or None.

        One that is ready, or one already starting within ``warm_wait``.
        """
        executor, spec = self.executor, run.spec
        if not executor.pooled(spec.profile) or run.stopping:
            return None
        fits = self._for_run(run)
        left = run.deadline - asyncio.get_running_loop().time()
        if fits is None or left <= 0:  # the run's first steps have not run, or no time
            return None
        key, start = fits
        warm = await self.pool.take_soon(key, min(executor.warm_wait, left / 4))
        if warm is None or run.stopping:
            if warm is not None:
                self.pool.discard(warm, "its run was stopped while it started")
            return None
        self.pool.fill_later(key, start, **executor.pool_settings())  # the next run's
        if not set(warm.env) <= set(env):  # cannot happen: both come from one function
            executor.log.warning(
                "Pre-started kernel %s does not fit run %s", warm.cgroup, spec.run_id
            )
            self.pool.discard(warm, "it does not fit the run's environment")
            return None
        return warm

    async def hand_over(
        self, run: LocalRun, warm: WarmProcess, env: dict[str, str], cwd: str
    ) -> int | None:
        """Give the run to ``warm``; from here on it is the run's papermill, in the run's place."""
        assert run.sink is not None and run.input is not None  # prepared before
        run.cgroup, run.cgroup_live = warm.cgroup, True
        run.sink.note(f"running in a kernel started beforehand ({warm.cgroup})")
        warm.protocol.hand_over(run.sink)
        request = warm_protocol.request_line(
            input=str(run.input),
            output=str(run.outputs["ipynb"]),
            parameters_file=str(run.parameters_file),
            cwd=cwd,
            # what the run has beyond what the process started with: its ids, result
            # file and the owner's own settings
            env={k: v for k, v in env.items() if warm.env.get(k) != v},
        )
        stdin = warm.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)  # started with stdin_pipe
        stdin.write(request)
        stdin.close()
        return await self.executor.wait_for_exit(run, warm.transport, warm.protocol)

    async def start(
        self, key: WarmKey, user: pwd.struct_passwd, built: BuiltEnvironment, profile: Profile
    ) -> WarmProcess:
        """Start a warm process as a cold papermill would start, and wait for its READY."""
        executor = self.executor
        name = f"warm-{slugs.user_slug(f'{key.owner}-{secrets.token_hex(4)}')}"
        env = executor.process_environment(user, built, profile, [])
        cwd = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
        protocol = ProcessOutput(None, executor.log, name)
        transport = None
        try:
            sockets = self.sockets(name)
            await asyncio.to_thread(self._private_folder, sockets, user)
            # in a cgroup of its own with the profile's limits and no GPU; it dies with the
            # service, even by kill -9, as papermill does; the run is written to its stdin
            launched = await executor.local_host.launch(
                LaunchRequest(
                    user=user,
                    profile=profile,
                    argv=[str(built.python), "-m", WARM_MODULE, str(sockets)],
                    env=env,
                    driver=executor.driver,
                    cgroup=name,
                    cwd=cwd,
                    stdin_pipe=True,
                    usage=UsageLabel("warm", key.owner, f"warm/{name}"),
                ),
                protocol,
            )
            transport = launched.transport
            assert transport is not None  # output="pipe"
            await self.until_ready(name, transport, protocol)
            return WarmProcess(key, name, launched.pid, transport, protocol, env)
        except BaseException:
            await self.remove(name, transport)
            raise

    @staticmethod
    async def until_ready(
        name: str, transport: asyncio.SubprocessTransport, protocol: ProcessOutput
    ) -> None:
        """Wait for warm process ``name``'s READY line; ExecutorError if it exits or is late."""
        await asyncio.wait(
            {protocol.ready, protocol.exited},
            timeout=WARM_START_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not protocol.ready.done():
            if protocol.exited.done():
                raise ExecutorError(f"{name} exited with status {transport.get_returncode()}")
            raise ExecutorError(f"{name} was not ready after {WARM_START_TIMEOUT}s")

    async def stop(self, warm: WarmProcess) -> None:
        """End of input first (the kernel shuts down cleanly), then the cgroup goes."""
        try:
            with contextlib.suppress(Exception):
                stdin = warm.transport.get_pipe_transport(0)
                if stdin is not None:
                    stdin.close()
            # also a future of an event loop that is gone: then there is nothing to wait for
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(warm.protocol.exited), WARM_STOP_GRACE)
            await self.remove(warm.cgroup, warm.transport)
        except Exception:
            self.executor.log.exception("Could not stop pre-started kernel %s", warm.cgroup)

    async def remove(self, name: str, transport: asyncio.SubprocessTransport | None) -> None:
        """Kill warm process ``name`` with its cgroup, and remove its sockets' folder."""
        driver, timeout = self.executor.driver, self.executor.local_host.cleanup_timeout
        if driver.enforces_total:
            await asyncio.to_thread(driver.remove, name, timeout)
        else:
            pid = transport.get_pid() if transport is not None else None
            if pid is not None:
                kill_tree(pid)
            driver.remove(name)
        if transport is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                transport.close()
        await asyncio.to_thread(shutil.rmtree, self.sockets(name), True)

    @staticmethod
    def sockets(name: str) -> Path:
        """The folder of warm process ``name``'s kernel sockets; removed with its cgroup.

        Named by a digest of ``name``, which holds the owner's name: the folder is on the
        warm process's command line, which every account of the machine reads.
        """
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"shipyard-warm-{digest}"

    def _private_folder(self, path: Path, user: pwd.struct_passwd) -> None:
        os.mkdir(path, 0o700)  # fails on anything already there, a link included
        if self.executor.run_as_root:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
