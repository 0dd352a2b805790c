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


class ShipyardHub(JupyterHub):
    """JupyterHub whose shutdown stops the services in parallel and tidies the cgroups."""

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
