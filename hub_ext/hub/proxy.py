"""configurable-http-proxy that outlives a crash of the hub and is adopted by the next one.

JupyterHub starts configurable-http-proxy (CHP) in its own session, so the proxy
survives a hub that is killed (``kill -9``, the OOM killer) and keeps routing to
the user servers and the services, which survive it too (:mod:`hub_ext.hub`).
But the next hub kills that proxy at its start (``_check_previous_process``) and
starts a new one with an empty routing table, and generates a new API token for
it at each start, so it could not talk to the old one anyway. Meanwhile every
request failed: refused connections while no proxy listened, then the new
proxy's own 404 for every path (models included) until the hub had added the
routes again (about 100 refused and 40 404 of 820 model requests at 40 per
second in ``bench/chaos.py``).

:class:`ShipyardProxy` (``c.JupyterHub.proxy_class``) keeps that proxy instead:

* the proxy's API token is kept 0600 beside the pid file (``proxy.token``) and
  reused at the next start, unless ``CONFIGPROXY_AUTH_TOKEN`` is set, which wins
  as in JupyterHub;
* when it starts a proxy, it records the process beside the pid file
  (``proxy.json``: pid, the start time the kernel gives that pid, a digest of
  what the process was started with: command, addresses, the hub's URL for error
  pages, TLS files, the token's digest);
* at the next start it **adopts** the recorded proxy when the pid file names the
  same process, still running (a pid reused since is told apart by its start
  time), started with the same settings, and its API answers this hub with the
  kept token. The routing table is then the old one: JupyterHub's route check
  right after the start adds what is missing and removes what is stale, as for
  any proxy. Otherwise the old proxy is stopped and a new one started, exactly
  as JupyterHub does.

An adopted proxy is watched like one this hub started and is stopped at Ctrl-C
like one this hub started. JupyterHub checks the proxy every
``check_running_interval`` s (5) and starts a new one if it is gone; here the hub
also holds a pidfd of the proxy's process and checks the moment it exits, so a
killed proxy is replaced at once rather than up to 5 s later (every model request
and page fails while no proxy listens).

Not done: adopting a proxy whose settings changed (the new settings would not
apply); a proxy run outside the hub (``should_start = False``) is JupyterHub's
own and unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
from pathlib import Path

from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.ioloop import PeriodicCallback
from traitlets import default

from hub_ext.host.process import is_running, process_identity
from hub_ext.hub.embedded import load_or_create_token

#: Seconds the API of a proxy that may be adopted has to answer.
ADOPT_CHECK_TIMEOUT = 5.0


class AdoptedProcess:
    """The part of ``Popen`` JupyterHub uses, for a proxy process that is not this hub's child.

    Only the recorded process (pid and start time) is polled or signalled, never a
    process that got its pid since.
    """

    def __init__(self, pid: int, started: str):
        self.pid = pid
        self.started = started
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not is_running(self.pid, self.started):
            self.returncode = 0  # not our child: its status is not ours to know
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                self.returncode = 0

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ShipyardProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy that the next hub adopts if it still runs (module docstring)."""

    def _beside_pid_file(self, name: str) -> Path | None:
        if not self.pid_file:
            return None
        return Path(os.path.abspath(self.pid_file)).with_name(name)

    @default("auth_token")
    def _auth_token_default(self) -> str:
        token = os.environ.get("CONFIGPROXY_AUTH_TOKEN", "")
        path = self._beside_pid_file("proxy.token")
        if token or not self.should_start or path is None:
            return super()._auth_token_default()
        path.parent.mkdir(parents=True, exist_ok=True)
        return load_or_create_token(path.parent, path.name)

    def _fingerprint(self) -> str:
        """A digest of what the proxy process is started with (the token only as a digest)."""
        started_with = [
            list(self.command),
            self.public_url,
            self.api_url,
            self.hub.url,
            self.log_level,
            bool(self.app.subdomain_host),
            self.ssl_key,
            self.ssl_cert,
            bool(self.app.internal_ssl),
            hashlib.sha256(self.auth_token.encode()).hexdigest(),
        ]
        return hashlib.sha256(json.dumps(started_with, default=str).encode()).hexdigest()

    def _record(self) -> None:
        path = self._beside_pid_file("proxy.json")
        identity = process_identity(self.proxy_process.pid)
        if path is None or identity is None:
            return
        record = {"pid": self.proxy_process.pid, "started": identity[1]}
        record["config"] = self._fingerprint()
        partial = path.with_name(path.name + ".new")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(partial, path)

    def _remove_process_files(self) -> None:
        super()._remove_process_files()
        path = self._beside_pid_file("proxy.json")
        if path is not None:
            path.unlink(missing_ok=True)

    async def _adoptable(self) -> AdoptedProcess | None:
        """The previous hub's proxy, if it still runs as this hub would start it, and answers."""
        record_path = self._beside_pid_file("proxy.json")
        if record_path is None or self.app.internal_ssl:
            return None  # (internal TLS: the API check below would need the client certs)
        try:
            record = json.loads(record_path.read_text())
            pid = int(Path(os.path.abspath(self.pid_file)).read_text().strip())
        except (OSError, ValueError):
            return None
        started = str(record.get("started"))
        if record.get("pid") != pid or not is_running(pid, started):
            return None
        if record.get("config") != self._fingerprint():
            self.log.warning("The proxy (pid %s) runs with other settings: replacing it", pid)
            return None
        request = HTTPRequest(
            self.api_url.rstrip("/") + "/api/routes",
            headers={"Authorization": f"token {self.auth_token}"},
            request_timeout=ADOPT_CHECK_TIMEOUT,
        )
        try:
            await AsyncHTTPClient().fetch(request)
        except (HTTPClientError, OSError) as e:
            self.log.warning(
                "The proxy (pid %s) does not answer its API (%s): replacing it", pid, e
            )
            return None
        return AdoptedProcess(pid, started)

    _exit_watch: int | None = None
    _exit_check: asyncio.Task | None = None
    _check_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """Adopt the previous hub's proxy if it can be (module docstring), else start one."""
        adopted = await self._adoptable()
        if adopted is None:
            await super().start()
            self._record()
            self._watch_exit()
            return
        self.proxy_process = adopted
        self._watch_exit()
        self.log.info(
            "Adopted configurable-http-proxy (pid %s), left running by the previous hub",
            adopted.pid,
        )

        callback = PeriodicCallback(self.check_running, 1e3 * self.check_running_interval)
        self._check_running_callback = callback
        callback.start()

    async def check_running(self) -> None:
        """JupyterHub's check, one at a time: the periodic one and the exit watch may meet."""
        if self._check_lock is None:
            self._check_lock = asyncio.Lock()
        async with self._check_lock:
            await super().check_running()

    def _watch_exit(self) -> None:
        """Check the proxy the moment its process exits (a pidfd on the event loop)."""
        self._unwatch_exit()
        process = getattr(self, "proxy_process", None)
        if process is None:
            return
        try:
            fd = os.pidfd_open(process.pid)
        except OSError:  # gone already, or no pidfd (Linux < 5.3): the periodic check stays
            return
        self._exit_watch = fd
        loop = asyncio.get_running_loop()

        def exited() -> None:
            self._unwatch_exit()
            self.log.warning("configurable-http-proxy (pid %s) exited", process.pid)
            self._exit_check = loop.create_task(self.check_running())  # kept: not collected

        loop.add_reader(fd, exited)

    def _unwatch_exit(self) -> None:
        fd, self._exit_watch = self._exit_watch, None
        if fd is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                asyncio.get_event_loop().remove_reader(fd)
            os.close(fd)

    def stop(self) -> None:
        """JupyterHub's stop, without the exit watch (a stopped proxy is not replaced)."""
        self._unwatch_exit()
        super().stop()
