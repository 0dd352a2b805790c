"""Kernels started before their runs: the bookkeeping of :class:`LocalExecutor`'s warm pool.

A cold run pays for ``python -m papermill`` importing its libraries and
starting a kernel (about two seconds) before its first cell. A *warm process*
(:mod:`.warm`) has done both before any run came, and waits: handed a run,
its first cell starts within milliseconds. :class:`~.warmstart.WarmStarter`
starts them and hands them their runs, for :class:`~.local.LocalExecutor`;
this module only keeps them.

Requirements, and how they are met:

- **A warm process serves one owner, one profile, one environment.** It is
  filed under a :class:`WarmKey` (owner, their account's uid, profile slug,
  environment digest, and a fingerprint of the profile's settings and the
  environment's build), started as that owner, in that environment, in a
  cgroup with that profile's limits; :meth:`WarmPool.take` hands out only an
  exact match, so a warm process of one user can never run another user's
  notebook, nor a run of another profile or build.
- **A kernel serves one run.** A warm process leaves the pool when taken and
  is never put back; the run's end kills it with its cgroup.
- **Nothing waits for the pool.** :meth:`WarmPool.take` never blocks: no
  ready process means a cold run. Refills happen in the background.
- **Bounded.** At most ``size`` per key and ``limit`` in all, counting those
  still starting; one idle longer than ``idle_timeout`` is stopped; one that
  exits (its kernel died) is dropped and its cgroup removed.

Rejected alternatives: one pool process forking kernels for every user (a
process shared between users, SECURITY rule 5); keeping kernels warm inside
the service (the same, and the service is not the owner); reusing a kernel
after its run (one run's state would reach the next).

A pool lives in one event loop, as the service does; its processes' pipes
belong to that loop, so a pool used from another loop first stops what the
old loop left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WarmKey:
    """What a warm process was started for; a run may use it only if its own key is equal."""

    owner: str
    uid: int
    profile: str
    env_digest: str
    #: the profile's settings, the environment's folder and Shipyard's build in it, hashed
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.profile}/{self.env_digest.removeprefix('sha256:')[:12]}"


@dataclass(eq=False)
class WarmProcess:
    """One started warm process, as :class:`~.warmstart.WarmStarter` started it."""

    key: WarmKey
    #: the cgroup it runs in, and its run will
    cgroup: str
    pid: int
    transport: asyncio.SubprocessTransport
    #: the executor's output protocol: ``ready``/``exited`` futures, ``hand_over(sink)``
    protocol: Any
    #: the environment it was started with; a run adds only what differs
    env: dict[str, str]
    idle: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return not self.protocol.exited.done()


Starter = Callable[[], Awaitable[WarmProcess]]
Stopper = Callable[[WarmProcess], Awaitable[None]]


class WarmPool:
    """Ready warm processes by key, and the tasks starting more.

    Parameters
    ----------
    stop : callable
        ``await stop(process)`` kills a warm process and removes its cgroup;
        it must not raise.
    log : logging.Logger
        Where discarded and failed processes are reported.
    """

    def __init__(self, stop: Stopper, log: logging.Logger):
        self._stop = stop
        self.log = log
        self._ready: dict[WarmKey, list[WarmProcess]] = {}
        self._starting: dict[WarmKey, int] = {}
        #: runs waiting for a process of the key that is starting (see take_soon)
        self._waiters: dict[WarmKey, list[asyncio.Future]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopping: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: how many runs a warm process served (for the service's metrics and tests)
        self.served = 0

    # ------------------------------------------------------------ counts

    def ready(self, key: WarmKey) -> int:
        """How many warm processes for ``key`` are ready now."""
        return sum(1 for w in self._ready.get(key, ()) if w.alive)

    @property
    def total(self) -> int:
        """Warm processes ready or starting, all keys together."""
        return sum(map(len, self._ready.values())) + sum(self._starting.values())

    def processes(self) -> list[WarmProcess]:
        """Every ready warm process (a copy)."""
        return [w for ws in self._ready.values() for w in ws]

    # ----------------------------------------------------------- take

    def take(self, key: WarmKey) -> WarmProcess | None:
        """A ready warm process for exactly ``key``, now removed from the pool; or None."""
        if self._loop is not asyncio.get_running_loop():
            return None  # none of this loop's: the old ones are stopped at the next fill
        queue = self._ready.get(key, [])
        while queue:
            warm = queue.pop(0)
            if warm.idle is not None:
                warm.idle.cancel()
            if warm.alive and warm.key == key:  # the key is the queue's: checked all the same
                if not queue:
                    del self._ready[key]
                self.served += 1
                return warm
            self.discard(warm, "it exited while waiting")
        self._ready.pop(key, None)
        return None

    async def take_soon(self, key: WarmKey, within: float) -> WarmProcess | None:
        """:meth:`take`, or wait up to ``within`` seconds for one of ``key`` already starting.

        A process that started before the run came is ready sooner than a cold
        start begun now, so a run that finds the pool refilling waits for it
        rather than starting cold. Returns None at once when none is starting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            warm = self.take(key)
            if warm is not None or not self._starting.get(key) or self._loop is not loop:
                return warm
            left = deadline - loop.time()
            if left <= 0:
                return None
            waiter = loop.create_future()
            self._waiters.setdefault(key, []).append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), left)
            except asyncio.TimeoutError:
                return None
            finally:
                waiting = self._waiters.get(key, [])
                if waiter in waiting:
                    waiting.remove(waiter)

    def _wake(self, key: WarmKey) -> None:
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_result(None)

    # ----------------------------------------------------------- fill

    async def fill(
        self, key: WarmKey, start: Starter, *, size: int, limit: int, idle_timeout: float
    ) -> int:
        """Start warm processes for ``key`` up to ``size`` (``limit`` in all); wait for them.

        Returns how many are ready for ``key`` afterwards. A process that fails
        to start is logged and dropped, never raised.
        """
        await self._bind_loop()
        wanted = size - len(self._ready.get(key, ())) - self._starting.get(key, 0)
        count = max(0, min(wanted, limit - self.total))
        if count:
            self._starting[key] = self._starting.get(key, 0) + count
            tasks = [self._track(self._start(key, start, idle_timeout)) for _ in range(count)]
            await asyncio.wait(tasks)
        return self.ready(key)

    def fill_later(
        self, key: WarmKey, start: Starter, *, size: int, limit: int, idle_timeout: float
    ) -> None:
        """:meth:`fill` in the background: a refill after a run took one, a prewarm."""
        self._track(self.fill(key, start, size=size, limit=limit, idle_timeout=idle_timeout))

    def _track(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self, key: WarmKey, start: Starter, idle_timeout: float) -> None:
        try:
            warm = await start()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.warning("Could not pre-start a kernel for %s: %s", key, e)
            return
        finally:
            left = self._starting.pop(key, 1) - 1
            if left > 0:
                self._starting[key] = left
            # ready (appended below, before any waiter runs) or failed: waiters look again
            self._wake(key)
        if not warm.alive:
            self.discard(warm, "it exited as it started")
            return
        self._ready.setdefault(key, []).append(warm)
        loop = asyncio.get_running_loop()
        warm.idle = loop.call_later(idle_timeout, self._expire, warm)
        warm.protocol.exited.add_done_callback(lambda _: self._exited(warm))
        self.log.debug("Pre-started kernel %s for %s is ready", warm.cgroup, key)

    # ------------------------------------------------------- removing

    def _remove(self, warm: WarmProcess) -> bool:
        queue = self._ready.get(warm.key, [])
        if warm not in queue:
            return False  # taken by a run, or already removed
        queue.remove(warm)
        if not queue:
            del self._ready[warm.key]
        if warm.idle is not None:
            warm.idle.cancel()
        return True

    def _expire(self, warm: WarmProcess) -> None:
        if self._remove(warm):
            self.log.info("Stopping pre-started kernel %s: unused for too long", warm.cgroup)
            self._stop_later(warm)

    def _exited(self, warm: WarmProcess) -> None:
        if self._remove(warm):
            self.discard(warm, "it exited while waiting")

    def discard(self, warm: WarmProcess, why: str) -> None:
        """Stop ``warm`` (out of the pool, or taken and not used) in the background; log why."""
        self._remove(warm)
        self.log.warning("Dropping pre-started kernel %s of %s: %s", warm.cgroup, warm.key, why)
        self._stop_later(warm)

    def _stop_later(self, warm: WarmProcess) -> None:
        task = asyncio.ensure_future(self._stop(warm))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:  # left by another event loop: their pipes are gone
            await self.close()
        self._loop = loop

    async def close(self) -> None:
        """Stop every warm process, ready or starting, and wait until they are gone.

        The pool stays usable: a later :meth:`fill` starts afresh.
        """
        loop = asyncio.get_running_loop()
        tasks = list(self._tasks)
        for task in tasks:
            with contextlib.suppress(RuntimeError):  # a task of an event loop that is closed
                task.cancel()
        ready = self.processes()
        self._ready.clear()
        for warm in ready:
            if warm.idle is not None:
                with contextlib.suppress(RuntimeError):
                    warm.idle.cancel()
        await asyncio.gather(*(t for t in tasks if t.get_loop() is loop), return_exceptions=True)
        await asyncio.gather(*(self._stop(w) for w in ready))
        stopping = [t for t in self._stopping if t.get_loop() is loop]
        await asyncio.gather(*stopping, return_exceptions=True)
        self._starting.clear()
