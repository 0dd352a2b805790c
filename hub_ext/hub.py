"""Shipyard's JupyterHub: the stock application with a shutdown that says what it does.

``shipyard up`` runs ``python -m hub_ext.hub -f jupyterhub_config.py``, which is
JupyterHub with one change, in :meth:`ShipyardHub.cleanup` (what Ctrl-C runs):

* the managed services (tracking, scheduler, deployer, secrets, audit, the
  idle culler) are stopped **at the same time**, not one after another, and
  each one's stop is logged with how long it took; JupyterHub's own cleanup
  stops them in turn, so a stop took the sum of their shutdowns;
* after the servers have stopped, the spawner's parent cgroup (``shipyard``)
  is removed when nothing is left in it, so a stopped Shipyard leaves no
  empty cgroup behind.

At start, and while it runs:

* the managed services are started **at the same time**, and each is taken as up the
  moment it answers HTTP (checked every 0.1 s; JupyterHub starts them one after
  another and checks with a back-off that let a service that was up in 3.5 s wait
  until 6 s);
* a managed service that exits is restarted **the moment it exits**: the hub watches
  the process itself (a pidfd, readable when the process ends) instead of polling it
  every ``poll_interval`` (30 s by default, so an outage lasted up to half a minute).
  One that keeps failing is restarted after a growing delay, up to
  ``service_restart_max_delay``, so a service that cannot start does not spin.

Everything else (configuration, the database, the proxy, the servers' own
cleanup) is JupyterHub's, unchanged. Recovery does not depend on how the hub
stops: the services keep their state in their databases and pick it up at the
next start, and a kill -9 of the hub still leaves nothing that the next start
cannot clean.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from jupyterhub.app import JupyterHub
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Float

#: How often a starting service is asked whether it answers yet.
UP_CHECK_INTERVAL = 0.1
#: A service that ran at least this long before it exited is restarted at once again.
STABLE_RUN = 30.0


class ShipyardHub(JupyterHub):
    """JupyterHub that starts, watches and stops its services in parallel."""

    service_restart_max_delay = Float(
        30.0,
        help="""
        Longest wait before restarting a managed service that keeps exiting.

        A service that exits is restarted at once; if it exits again within 30 s of
        its start, the next restart waits 1 s, then 2, 4... up to this many seconds,
        so a service that cannot start is retried without spinning. One that then
        runs for 30 s is restarted at once again the next time.
        """,
    ).tag(config=True)

    _service_starts: dict[str, asyncio.Future] | None = None
    _stopping = False

    async def start_service(self, service_name, service, ssl_context=None) -> bool:
        """Start every managed service at once on the first call; wait for this one.

        JupyterHub calls this once per service, in turn, and waits for each; the
        first call starts them all, so the later calls find theirs running or up.
        """
        if self._service_starts is None:
            self._service_starts = {
                name: asyncio.ensure_future(self._start_managed(name, svc, ssl_context))
                for name, svc in self._service_map.items()
                if svc.managed
            }
        started = self._service_starts.pop(service_name, None)
        if started is None:
            return await super().start_service(service_name, service, ssl_context)
        return await started

    async def _start_managed(self, name: str, service, ssl_context=None) -> bool:
        """Start ``service``, watch its process, and wait until it answers HTTP."""
        self.log.info("Starting managed service %s at %s", name, service.url or "(no URL)")
        started = time.monotonic()
        try:
            await service.start()
        except Exception:
            self.log.critical("Failed to start service %s", name, exc_info=True)
            return False
        service._shipyard_started = started
        self._watch(service)
        if not service.url:
            return True
        client = AsyncHTTPClient()
        deadline = started + service.timeout
        while time.monotonic() < deadline:
            if service.spawner is None or service.spawner.proc.poll() is not None:
                self.log.critical("Service %s exited while starting", name)
                return False
            try:
                await client.fetch(service.url, request_timeout=2, follow_redirects=False)
            except HTTPClientError as e:
                if e.code != 599:  # it answered: an error status is still an answer
                    break
            except OSError:
                pass  # not listening yet
            else:
                break
            await asyncio.sleep(UP_CHECK_INTERVAL)
        else:
            self.log.critical("Service %s did not answer within %s s", name, service.timeout)
            return False
        self.log.info("Service %s is up (%.1f s)", name, time.monotonic() - started)
        return True

    def _watch(self, service) -> None:
        """Restart ``service`` the moment its process exits, instead of at the next poll."""
        spawner = service.spawner
        spawner.stop_polling()  # JupyterHub's timer-driven restart: replaced by this watch
        loop = asyncio.get_running_loop()
        pid = spawner.pid
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): check 5 times a second
            pidfd = None

        def exited() -> None:
            if pidfd is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            if self._stopping or service.spawner is not spawner:
                return
            returncode = spawner.proc.poll()
            asyncio.ensure_future(self._restart(service, returncode))

        if pidfd is not None:
            loop.add_reader(pidfd, exited)
            return

        async def poll() -> None:
            while spawner.proc.poll() is None:
                await asyncio.sleep(0.2)
            exited()

        service._shipyard_poll = asyncio.ensure_future(poll())

    async def _restart(self, service, returncode) -> None:
        """Start an exited service again, at once or after its back-off."""
        lived = time.monotonic() - getattr(service, "_shipyard_started", 0.0)
        failures = 0 if lived >= STABLE_RUN else getattr(service, "_shipyard_failures", 0) + 1
        service._shipyard_failures = failures
        delay = 0.0 if failures <= 1 else min(2.0 ** (failures - 2), self.service_restart_max_delay)
        self.log.error(
            "Service %s exited with status %s after %.1f s; restarting it %s",
            service.name,
            returncode,
            lived,
            f"in {delay:.0f} s ({failures} exits in a row)" if delay else "now",
        )
        if delay:
            await asyncio.sleep(delay)
        if self._stopping:
            return
        await self._start_managed(service.name, service)

    async def _interrupt(self, service) -> None:
        """SIGINT the service and watch it closely until it exits (or its interrupt timeout).

        JupyterHub's own stop sends the same signal but checks for the exit with an
        exponential back-off (up to 1.6 s between checks after a second), which made
        a service that exits in 1 s look like one that takes 3.
        """
        spawner = service.spawner
        if spawner is None or not spawner.pid or await spawner.poll() is not None:
            return
        spawner.stop_polling()  # its exit is expected: no automatic restart
        try:
            os.kill(spawner.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + spawner.interrupt_timeout
        while await spawner.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _stop_service(self, service) -> None:
        started = time.monotonic()
        self.log.info("Stopping service %s...", service.name)
        try:
            await self._interrupt(service)
            await service.stop()  # SIGTERM/SIGKILL if still running; JupyterHub's bookkeeping
        except Exception as e:  # one service's failure must not keep the others running
            self.log.error("Service %s did not stop cleanly: %s", service.name, e)
            return
        self.log.info("Service %s stopped (%.1f s)", service.name, time.monotonic() - started)

    async def cleanup(self) -> None:
        """Stop the managed services together, then JupyterHub's cleanup, then the cgroups."""
        started = time.monotonic()
        self._stopping = True  # an exit from now on is expected: no restart
        managed = [s for s in self._service_map.values() if s.managed]
        if managed:
            self.log.info(
                "Stopping %d services at once: %s", len(managed), ", ".join(s.name for s in managed)
            )
            await asyncio.gather(*(self._stop_service(s) for s in managed))
        # JupyterHub's cleanup would stop each service again, one by one (a no-op for a
        # stopped one, but it logs "Cleaning up N services"): hand it no services
        services, self._service_map = self._service_map, {}
        try:
            await super().cleanup()
        finally:
            self._service_map = services
        self._remove_empty_cgroup_parent()
        self.log.info("Shipyard stopped in %.1f s", time.monotonic() - started)

    def _remove_empty_cgroup_parent(self) -> None:
        """Remove the local spawner's parent cgroup if no server is left in it."""
        from .spawner import LocalProfileSpawner

        spawner_class = self.spawner_class
        if not (isinstance(spawner_class, type) and issubclass(spawner_class, LocalProfileSpawner)):
            return
        try:
            spawner = spawner_class(config=self.config)
            if spawner.driver.enforces_total and spawner.driver.remove_parent():
                self.log.info("Removed the empty cgroup %s", spawner.cgroup_parent)
        except OSError as e:
            self.log.warning("Could not remove the servers' parent cgroup: %s", e)


main = ShipyardHub.launch_instance

if __name__ == "__main__":
    main()
