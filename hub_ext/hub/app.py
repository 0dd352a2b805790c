"""Shipyard's JupyterHub: services that start together, outlive a crash, and stop together.

``shipyard up`` runs ``python -m hub_ext.hub -f jupyterhub_config.py``, which is
JupyterHub with its managed services (tracking, scheduler, deployer, secrets,
audit, the idle culler) handled differently, through subclass hooks only:

* they are started **at the same time**, and each is taken as up the moment it
  answers HTTP (checked every 0.1 s; JupyterHub starts them one after another and
  checks with a back-off that let a service that was up in 3.5 s wait until 6 s);
* one that exits is restarted **the moment it exits**: the hub watches the process
  itself (a pidfd, readable when the process ends) instead of polling it every
  ``poll_interval`` (30 s by default, so an outage lasted up to half a minute). One
  that keeps failing is restarted after a growing delay, up to
  ``service_restart_max_delay``, so a service that cannot start does not spin;
* they **outlive a crash of the hub** (kill -9, the OOM killer), as user servers
  do: each runs in its own session and process group (JupyterHub starts them so)
  and none asks to die with its parent any more, so models, jobs, tracking and
  secrets keep answering through the proxy while the hub is down. Each one's pid,
  the start time the kernel gives that pid (``/proc/<pid>/stat``: a pid the system
  has reused since is told apart) and a digest of its configuration are recorded in
  ``service_state_dir`` (``$SHIPYARD_DATA_DIR/services``, 0700). The next hub
  **adopts** a recorded service that still runs with the same configuration,
  instead of starting a second one (which could not even bind the port): it
  watches it (a pidfd works on any process; no waitpid, it is not the hub's
  child), restarts it if it exits, and stops it at Ctrl-C like one it started. A
  recorded service whose configuration changed is stopped and started anew, and
  one no longer configured is stopped. The idle culler is the exception: it only
  talks to the hub, so it dies with it (:mod:`hub_ext.hub.culler`) and the next hub
  starts a new one;
* each service keeps **one API token** across hub restarts (kept 0600 next to the
  records, reused while the hub's database still knows it): an adopted service
  goes on using the token and OAuth client secret it was started with.
  JupyterHub generates a new one at each start and never revokes the old ones;
* Ctrl-C (:meth:`ShipyardHub.cleanup`) stops them **at the same time**, adopted
  ones included, each stop logged with how long it took, and forgets their
  records; JupyterHub's own cleanup stops them in turn, so a stop took the sum of
  their shutdowns. A hub that fails to start stops the services it started or
  adopted before it exits. After the servers have stopped, the spawner's parent
  cgroup (``shipyard``) is removed when nothing is left in it.

With ``c.LocalHost.placement = "container"``, the hub spawns servers as podman
containers: a configured ``shipyard-local`` spawner becomes ``shipyard-containers``
(:mod:`hub_ext.spawners.containers`), which takes the servers' settings given to
``c.LocalProfileSpawner`` that it shares (the profiles file, the tracking URL), and
before the servers are polled the hub makes sure podman's API service answers on
``c.ContainerPlacement.podman_socket``, starting it as its child when nothing does
(:class:`hub_ext.host.containers.PodmanService`) and stopping it at Ctrl-C.

Everything else (configuration, the database, the proxy, the servers' own cleanup)
is JupyterHub's, unchanged.

Not done here, and why: a systemd unit per service (``systemd-run``) would give the
same survival with the journal as the log, but only where systemd runs (not in
containers, not on the test machines); the process group plus the record works
everywhere and keeps one code path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from jupyterhub import orm
from jupyterhub.app import JupyterHub

# JupyterHub's own spawner of services, and the user stand-in it gives it: an adopted
# service gets the same kind of spawner, only without a process of this hub's to poll
from jupyterhub.services.service import _MockUser, _ServiceSpawner
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Float, Unicode, default

from hub_ext.host.containers import ContainerPlacement, PodmanService
from hub_ext.host.local import LocalHost
from hub_ext.host.passing import passed_on
from hub_ext.host.process import is_running, process_identity, write_private
from hub_ext.hub.metrics import register_data_dir

#: How often a starting service is asked whether it answers yet.
UP_CHECK_INTERVAL = 0.1
#: A service that ran at least this long before it exited is restarted at once again.
STABLE_RUN = 30.0
#: How long a recorded service that must go (its configuration changed) has to stop
#: after SIGTERM before it is killed.
REPLACE_TIMEOUT = 10.0


class AdoptedServiceSpawner(_ServiceSpawner):
    """The spawner of a service that an earlier hub started: not this hub's child.

    It has no ``Popen`` handle, so it polls and signals by pid, and only the process
    that has the recorded start time: a pid that the system has given to another
    process since is never signalled.
    """

    started = Unicode(help="The process's start time, from /proc/<pid>/stat.")

    def start(self):
        raise RuntimeError("an adopted service is not started again; start a new one")

    async def poll(self):
        if self.pid and is_running(self.pid, self.started):
            return None
        self.clear_state()
        return 0

    async def _signal(self, sig):
        if not (self.pid and is_running(self.pid, self.started)):
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


class ShipyardHub(JupyterHub):
    """JupyterHub whose services start together, outlive its crash, and stop together."""

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

    service_state_dir = Unicode(
        help="""
        Folder where the hub records its managed services' processes and tokens.

        One ``<name>.json`` per running service (pid, process start time, a digest of
        its configuration) and one ``<name>.token`` (its API token, 0600). The
        services outlive a hub that crashes; the next hub started with the same
        folder adopts those still running instead of starting them again, and stops
        those it cannot adopt. Keep it private to the hub's account (it is made 0700).

        Defaults to ``services`` beside ``JupyterHub.pid_file``, or in the current
        folder when there is no pid file. ``shipyard up``: ``$SHIPYARD_DATA_DIR/services``.

        Example::

            c.ShipyardHub.service_state_dir = "/var/lib/shipyard/services"

        .. versionadded:: 0.13
        """,
    ).tag(config=True)

    @default("service_state_dir")
    def _default_service_state_dir(self) -> str:
        base = os.path.dirname(os.path.abspath(self.pid_file)) if self.pid_file else os.getcwd()
        return os.path.join(base, "services")

    data_dir_metrics_path = Unicode(
        help="""
        Folder whose filesystem's free and total bytes the hub exports at ``/hub/metrics``
        (``shipyard_data_dir_filesystem_avail_bytes`` and ``..._size_bytes``), for the
        alert rule on the data directory filling up.

        Defaults to the folder above :attr:`service_state_dir` (``$SHIPYARD_DATA_DIR`` in
        the embedded default). Empty string: not exported.
        """,
    ).tag(config=True)

    @default("data_dir_metrics_path")
    def _default_data_dir_metrics_path(self) -> str:
        return os.path.dirname(os.path.abspath(self.service_state_dir))

    _service_starts: dict[str, asyncio.Future] | None = None
    _stopping = False
    _podman_service: PodmanService | None = None

    # ------------------------------------------------------------ placement

    def init_hub(self):
        """JupyterHub's, then the spawner that ``c.LocalHost.placement`` asks for."""
        super().init_hub()
        self._choose_spawner()
        if self.data_dir_metrics_path:
            register_data_dir(self.data_dir_metrics_path)

    def _choose_spawner(self) -> None:
        """``container``: Shipyard's local spawner becomes its container spawner.

        Only Shipyard's own local spawner is replaced: an admin who configured another
        spawner class (Kubernetes, a custom one) keeps it, with a warning.
        """
        if LocalHost(parent=self).placement != "container":
            return
        from hub_ext.spawners.containers import ContainerProfileSpawner
        from hub_ext.spawners.spawner import LocalProfileSpawner

        chosen = self.spawner_class
        if isinstance(chosen, type) and issubclass(chosen, ContainerProfileSpawner):
            return
        if not (isinstance(chosen, type) and issubclass(chosen, LocalProfileSpawner)):
            self.log.warning(
                "c.LocalHost.placement is 'container' but the spawner is %s: keeping it", chosen
            )
            return
        self.log.info("Placement 'container': servers are spawned by ContainerProfileSpawner")
        self.set_trait("spawner_class", ContainerProfileSpawner)
        # the servers' settings written for the local spawner hold for containers too
        shared = ContainerProfileSpawner.class_traits(config=True)
        given = self.config.get("LocalProfileSpawner", {})
        own = self.config.ContainerProfileSpawner
        for name, value in given.items():
            if name in shared and name not in own:
                own[name] = value

    async def init_spawners(self):
        """Make sure podman's API service answers (container placement), then JupyterHub's."""
        # imported only where it is the spawner (then its module is loaded already): a hub of
        # processes does not pay for importing dockerspawner and docker-py at every start
        containers = sys.modules.get("hub_ext.spawners.containers")
        chosen = self.spawner_class
        if (
            containers is not None
            and isinstance(chosen, type)
            and issubclass(chosen, containers.ContainerProfileSpawner)
        ):
            from hub_ext.host.containerhost import ContainerFailed, ContainerHost

            host = ContainerHost(ContainerPlacement(config=self.config, log=self.log), self.log)
            try:
                await host.ready()
            except ContainerFailed as e:
                raise RuntimeError(str(e)) from None
            finally:
                host.close()
            self._podman_service = host.service
        return await super().init_spawners()

    # ------------------------------------------------------------ records

    def _state_path(self, name: str, suffix: str) -> Path:
        folder = Path(self.service_state_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        return folder / f"{name}{suffix}"

    def _read_record(self, name: str) -> dict | None:
        try:
            record = json.loads(self._state_path(name, ".json").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _record(self, service) -> None:
        """Record a service's process, so that the next hub can adopt it."""
        pid = service.spawner.pid
        identity = process_identity(pid)
        if identity is None:
            return  # already gone (and reaped): nothing to adopt
        record = {"pid": pid, "started": identity[1], "config": self._fingerprint(service)}
        write_private(self._state_path(service.name, ".json"), json.dumps(record))

    def _forget(self, name: str) -> None:
        self._state_path(name, ".json").unlink(missing_ok=True)

    def _fingerprint(self, service) -> str:
        """A digest of what a service's process was started with (no secret in clear)."""
        started_with = [
            service.command,
            service.url,
            sorted(service.environment.items()),
            service.cwd,
            service.user,
            service.api_token,  # a new token means a new process: the old one's may be gone
            self.hub.url,
        ]
        return hashlib.sha256(json.dumps(started_with, default=str).encode()).hexdigest()

    # ------------------------------------------------------------ tokens

    def service_from_spec(self, spec, from_config=True):
        """Give a managed service its token of the previous hub, and the hub's host sections.

        JupyterHub generates a token for a managed service at each start ("generated at
        startup") and never revokes the old ones; a service adopted from the previous
        hub needs the one it runs with, which is also its OAuth client secret.
        """
        name = spec.get("name")
        if from_config and spec.get("command"):
            # c.LocalHost and c.KubePlacement configure the scheduler's runs and the
            # deployer's models as they configure the servers (hub_ext/host/passing.py)
            environment = {**spec.get("environment", {}), **passed_on(self.config)}
            spec = {**spec, "environment": environment}
        keep = bool(from_config and name and spec.get("command") and not spec.get("api_token"))
        if keep:
            token = self._kept_token(name)
            if token:
                spec = {**spec, "api_token": token}
        service = super().service_from_spec(spec, from_config)
        if keep and service is not None and service.api_token:
            path = self._state_path(name, ".token")
            if not path.exists() or path.read_text().strip() != service.api_token:
                write_private(path, service.api_token)
        return service

    def _kept_token(self, name: str) -> str | None:
        """The token kept for service ``name``, if the hub's database still has it as theirs."""
        try:
            token = self._state_path(name, ".token").read_text().strip()
        except OSError:
            return None
        found = orm.APIToken.find(self.db, token) if token else None
        if found is None or found.service is None or found.service.name != name:
            return None
        if found.expires_at is not None:
            return None  # not one the hub generated for the service: let it make a new one
        return token

    # ------------------------------------------------------------ start and adopt

    async def start(self):
        """JupyterHub's start; if it fails (a service that did not come up), stop the services."""
        try:
            await super().start()
        except BaseException:
            await self._stop_managed()
            raise

    async def start_service(self, service_name, service, ssl_context=None) -> bool:
        """Start (or adopt) every managed service at once on the first call; wait for this one.

        JupyterHub calls this once per service, in turn, and waits for each; the
        first call starts them all, so the later calls find theirs running or up.
        """
        if self._service_starts is None:
            await self._stop_unconfigured()
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
        """Adopt or start ``service``, watch its process, and wait until it answers HTTP."""
        started = time.monotonic()
        if not await self._adopt(name, service):
            self.log.info("Starting managed service %s at %s", name, service.url or "(no URL)")
            try:
                await service.start()
            except Exception:
                self.log.critical("Failed to start service %s", name, exc_info=True)
                return False
            self._record(service)
        service._shipyard_started = started
        self._watch(service)
        if not service.url:
            return True
        client = AsyncHTTPClient()
        deadline = started + service.timeout
        while time.monotonic() < deadline:
            if service.spawner is None or await service.spawner.poll() is not None:
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

    async def _adopt(self, name: str, service) -> bool:
        """Take over ``service``'s process left running by the previous hub, if there is one.

        Returns False when there is none to adopt: none recorded, the recorded one has
        ended, or it runs with another configuration (then it is stopped first, so
        that the new one can have its port).
        """
        record = self._read_record(name)
        if record is None:
            return False
        pid, started = record.get("pid"), str(record.get("started"))
        if not isinstance(pid, int) or not is_running(pid, started):
            self._forget(name)
            return False
        if record.get("config") != self._fingerprint(service):
            self.log.warning(
                "Service %s (pid %s) runs with an earlier configuration: replacing it", name, pid
            )
            await self._end_recorded(name, pid, started)
            return False
        service.spawner = AdoptedServiceSpawner(
            cmd=service.command,
            environment=service.environment,
            api_token=service.api_token,
            oauth_client_id=service.oauth_client_id,
            _service_name=name,
            cookie_options=service.cookie_options,
            cwd=service.cwd,
            hub=self.hub,
            user=_MockUser(
                name=service.user, service=service, server=service.orm.server, host=service.host
            ),
            pid=pid,
            started=started,
        )
        service.proc = None
        self.log.info("Adopted service %s (pid %s), left running by the previous hub", name, pid)
        return True

    async def _end_recorded(self, name: str, pid: int, started: str) -> None:
        """Stop a recorded service process that this hub does not adopt; forget it."""
        for sig, wait in ((signal.SIGTERM, REPLACE_TIMEOUT), (signal.SIGKILL, 5.0)):
            if not is_running(pid, started):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while is_running(pid, started) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._forget(name)

    async def _stop_unconfigured(self) -> None:
        """Stop the recorded services that the configuration no longer has."""
        managed = {name for name, s in self._service_map.items() if s.managed}
        folder = Path(self.service_state_dir)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            name = path.stem
            record = self._read_record(name)
            if name in managed or record is None:
                continue
            pid, started = record.get("pid"), str(record.get("started"))
            if isinstance(pid, int) and is_running(pid, started):
                self.log.warning("Stopping service %s (pid %s): no longer configured", name, pid)
            await self._end_recorded(name, pid if isinstance(pid, int) else 0, started)

    # ------------------------------------------------------------ watch and restart

    def _watch(self, service) -> None:
        """Restart ``service`` the moment its process exits, instead of at the next poll."""
        spawner = service.spawner
        spawner.stop_polling()  # JupyterHub's timer-driven restart: replaced by this watch
        loop = asyncio.get_running_loop()
        pid = spawner.pid
        try:
            # any process, child or not: an adopted service is the previous hub's child
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd (old kernel), or already gone: poll
            pidfd = None

        def exited() -> None:
            if pidfd is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            if self._stopping or service.spawner is not spawner:
                return
            # a child's status; an adopted process's parent was the previous hub
            returncode = spawner.proc.poll() if spawner.proc is not None else None
            asyncio.ensure_future(self._restart(service, returncode))

        if pidfd is not None:
            loop.add_reader(pidfd, exited)
            return

        async def poll() -> None:
            while await spawner.poll() is None:
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
            "unknown (adopted)" if returncode is None else returncode,
            lived,
            f"in {delay:.0f} s ({failures} exits in a row)" if delay else "now",
        )
        self._forget(service.name)
        if delay:
            await asyncio.sleep(delay)
        if self._stopping:
            return
        await self._start_managed(service.name, service)

    # ------------------------------------------------------------ stop

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
        if not await spawner._signal(signal.SIGINT):  # an adopted one: only the recorded process
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
        self._forget(service.name)
        self.log.info("Service %s stopped (%.1f s)", service.name, time.monotonic() - started)

    async def _stop_managed(self) -> None:
        """Stop every managed service this hub started or adopted, all at once."""
        self._stopping = True  # an exit from now on is expected: no restart
        for starting in (self._service_starts or {}).values():
            starting.cancel()
        if self._service_starts:
            await asyncio.gather(*self._service_starts.values(), return_exceptions=True)
        managed = [s for s in self._service_map.values() if s.managed and s.spawner is not None]
        if managed:
            self.log.info(
                "Stopping %d services at once: %s", len(managed), ", ".join(s.name for s in managed)
            )
            await asyncio.gather(*(self._stop_service(s) for s in managed))

    async def cleanup(self) -> None:
        """Stop the managed services together, then JupyterHub's cleanup, then the cgroups."""
        started = time.monotonic()
        await self._stop_managed()
        # JupyterHub's cleanup would stop each service again, one by one (a no-op for a
        # stopped one, but it logs "Cleaning up N services"): hand it no services
        services, self._service_map = self._service_map, {}
        try:
            await super().cleanup()
        finally:
            self._service_map = services
        self._remove_empty_cgroup_parent()
        if self._podman_service is not None:  # after the servers: their stop needs it
            await asyncio.to_thread(self._podman_service.stop)
        self.log.info("Shipyard stopped in %.1f s", time.monotonic() - started)

    def _remove_empty_cgroup_parent(self) -> None:
        """Remove the local spawner's parent cgroup if no server is left in it."""
        from hub_ext.spawners.spawner import LocalProfileSpawner

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
