"""Whether a replica serves: ``GET /health`` until it is ready, then while it runs.

A replica is routed to only while its ``/health`` answers 200
(:meth:`LocalBackend.endpoints` reads :attr:`Replica.healthy`); one that misses
``health_failures`` checks in a row is killed, and its supervisor
(:mod:`.replicas`) restarts it. An exit is noticed at once through the process's
pidfd, whatever the interval. When a replica ends, :meth:`HealthChecks.exit_text`
says why in the owner's words (the OOM killer, a recycle after a request timed
out, a signal, a status) and :meth:`HealthChecks.failure_reason` adds the
server's last lines for a start that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass, field

from hub_ext.profiles.quantities import format_memory

from ..backend import DeployFailed
from .process import ReplicaHost
from .state import Replica

#: The model server's exit status after a request timed out (EX_TEMPFAIL): restart at once.
RECYCLE_EXIT = 75
#: The most of a model server's reason shown to the owner.
MAX_REASON = 2000


@dataclass
class ReplicaSettings:
    """The backend's settings its replicas' health checks and supervisors read.

    One object, kept current by :class:`LocalBackend` as its traits change, so
    the parts that read it never hold the backend itself. The fields are the
    traits of the same names (see their help).
    """

    start_timeout: float
    health_interval: float
    health_timeout: float
    health_failures: int
    restart_backoff: float
    restart_backoff_max: float
    port_range: list[int] = field(default_factory=list)


async def get_health(port: int, timeout: float) -> tuple[int, dict]:
    """``GET /health`` of a replica: its status and JSON body; ``(0, {})`` when it does not answer.

    A dozen lines of HTTP/1.0 rather than an HTTP client: the supervisors
    poll every replica, and a shared client's connection limit would queue
    one replica's check behind another's.
    """
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            response = b""
            while len(response) < 64 * 2**10 and (chunk := await reader.read(16 * 2**10)):
                response += chunk
    except (OSError, TimeoutError):
        return 0, {}
    finally:
        if writer is not None:
            writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, {}
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    return status, data if isinstance(data, dict) else {}


class HealthChecks:
    """A started replica's health: until it is ready, then while it serves.

    Parameters
    ----------
    settings : ReplicaSettings
        ``start_timeout``, ``health_interval``, ``health_timeout`` and ``health_failures``.
    host : ReplicaHost
        To kill a replica that stopped answering, and to ask its cgroup about the
        OOM killer.
    """

    def __init__(self, settings: ReplicaSettings, host: ReplicaHost):
        self.settings = settings
        self.host = host

    async def until_healthy(self, replica: Replica) -> None:
        """Poll ``/health`` until 200; DeployFailed with the reason otherwise."""
        assert replica.process is not None and replica.output is not None  # launched
        settings = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.start_timeout
        exited = replica.process.exited
        pause = 0.05
        while True:
            if exited.done():
                # its last lines, which say why
                await asyncio.wait({replica.output.ended}, timeout=1)
                raise DeployFailed(self.failure_reason(replica))
            left = deadline - loop.time()
            timeout = min(settings.health_timeout, max(left, 0.1))
            status, body = await get_health(replica.port, timeout)
            if status == 200:
                return
            if body.get("status") == "failed":
                message = str(body.get("message") or "the model failed to load")
                raise DeployFailed(message[:MAX_REASON])
            if left <= 0:
                raise DeployFailed(
                    f"The model server was not ready after {settings.start_timeout:g} seconds "
                    f"(GET /health: {status or 'no answer'}). Last lines:\n"
                    + replica.output.last_lines()
                )
            await asyncio.wait({exited}, timeout=min(pause, max(left, 0)))
            # a loopback GET is cheap, and every pause is time the version is not yet serving
            pause = min(pause * 2, 0.2)

    async def watch(self, replica: Replica) -> int | None:
        """Until the replica exits (or is killed for missing health checks); its exit status."""
        process = replica.process
        assert process is not None  # launched or adopted
        settings = self.settings
        exited = process.exited
        missed = 0
        while True:
            done, _ = await asyncio.wait({exited}, timeout=settings.health_interval)
            if done:
                return process.returncode
            status, _ = await get_health(replica.port, settings.health_timeout)
            if exited.done() or replica.stopping:
                continue
            if status == 200:
                missed = 0
                replica.healthy = True
                continue
            missed += 1
            replica.healthy = False  # not routed to while it does not answer
            if missed >= settings.health_failures:
                replica.version.log.note(
                    f"{replica.source}: missed {missed} health checks; killing it"
                )
                await self.host.kill(replica.cgroup, replica.pid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), self.host.cleanup_timeout)
                return process.returncode

    def failure_reason(self, replica: Replica) -> str:
        """Why a replica exited before it was ready, with its last lines."""
        code = replica.process.returncode if replica.process is not None else None
        text = self.exit_text(replica, code)
        tail = replica.output.last_lines().strip() if replica.output is not None else ""
        reason = f"The model server {text} before it was ready"
        return (f"{reason}:\n{tail}" if tail else f"{reason}.")[:MAX_REASON]

    def exit_text(self, replica: Replica, code: int | None) -> str:
        """How the replica ended, as its log and its owner read it (``was killed by SIGKILL``)."""
        if self.host.oom_killed(replica.cgroup):
            limit = replica.version.spec.profile.mem_limit_bytes
            memory = f"memory limit of {format_memory(limit)}" if limit else "memory limit"
            return f"was killed for using more than the profile's {memory}"
        if code == RECYCLE_EXIT:
            return "exited after a request timed out (recycled)"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        if code is None:  # adopted: another process's child, whose status this one cannot read
            return "exited"
        return f"exited with status {code}"
