"""The deployer's listening socket, kept open while the deployer restarts.

Model traffic reaches the replicas through the deployer: the hub's proxy sends
``/services/deployer/`` to its port. When the deployer dies (a crash, ``kill -9``),
the replicas serve on (:mod:`.local` adopts them), but until the next deployer
listens, which takes the seconds its start takes, the proxy found the port closed
and answered its HTML 503 page to every model request.

So the listening socket is not the deployer's alone. A small process, started by
the first deployer (``python -m hub_ext.services.deployer.holder``), holds a
duplicate of it and does nothing else: it never accepts. While no deployer runs,
the kernel still completes the proxy's connections into the socket's backlog; the
next deployer asks the holder for the socket over a Unix socket in its state
folder (the service's, mode 0700; the fd passes with ``SCM_RIGHTS``) and accepts
those connections: requests wait for the restart instead of failing. Requests the
dead deployer was already handling are lost (the proxy does not resend them).

The holder keeps a connection from the deployer that took the socket, and so knows
when it is gone: a clean stop says ``stop`` and the holder exits, closing the
port, so a stopped Shipyard leaves nothing; a deployer that died is waited for
``linger`` seconds, after which the holder exits too (no deployer is coming back:
callers get a refused connection, not a wait without end).

Rejected alternatives: the hub passing the socket to the service (the hub's code
is JupyterHub's, which starts a service as a plain command), ``SO_REUSEPORT`` (the
port would still be closed between the death of one process and the start of the
next), and a router process of its own in front of the replicas (a second hop
for every request, and a second authorizing process to keep in step).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

from hub_ext.host import telemetry

#: The backlog of the listening socket: the connections that may wait for a deployer
#: that restarts (40 requests per second for 5 s is 200; the kernel caps it at
#: ``net.core.somaxconn``).
BACKLOG = 4096
#: Seconds the holder waits for a deployer after the last one died.
LINGER = 60.0
#: The only variables of the deployer's environment the holder gets.
HOLDER_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ")
#: Seconds a starting deployer waits for the holder to give it the socket.
TAKE_TIMEOUT = 5.0
#: Longest Unix socket path (``sun_path``, with its terminating NUL).
MAX_UNIX_PATH = 107


def _receive(control: socket.socket) -> socket.socket | None:
    try:
        message, fds, _, _ = socket.recv_fds(control, 16, 1)
    except OSError:
        return None
    if message != b"socket" or not fds:
        for fd in fds:
            os.close(fd)
        return None
    listener = socket.socket(fileno=fds[0])
    listener.setblocking(False)
    return listener


class HeldSocket:
    """The deployer's end: the listening socket, and the connection to its holder."""

    def __init__(self, listener: socket.socket, control: socket.socket | None):
        self.listener = listener
        self.control = control

    @classmethod
    def take(cls, host: str, port: int, path: Path) -> HeldSocket:
        """The socket a holder keeps at ``path``, or a new one (and its holder) on ``host:port``.

        Without a usable path (too long for a Unix socket) the socket is the
        deployer's alone, as before: the port closes when it dies.
        """
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            return cls(cls._bind(host, port), None)
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # a holder serves one deployer at a time: while another one runs (it has the
        # socket), this one binds the port itself, and fails as two deployers always did
        control.settimeout(TAKE_TIMEOUT)
        try:
            control.connect(str(path))
            listener = _receive(control)
        except OSError:
            listener = None
        if listener is not None:
            control.settimeout(None)
            return cls(listener, control)
        control.close()
        listener = cls._bind(host, port)
        return cls(listener, cls._start_holder(listener, path))

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(BACKLOG)
        listener.setblocking(False)
        return listener

    @staticmethod
    def _start_holder(listener: socket.socket, path: Path) -> socket.socket | None:
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            server.bind(str(path))  # 0600: only the service reaches it
        finally:
            os.umask(old)
        server.listen(4)
        subprocess.Popen(  # noqa: S603 - our own module, with our own Python
            [
                sys.executable,
                "-m",
                "hub_ext.services.deployer.holder",
                "--listen-fd",
                str(listener.fileno()),
                "--control-fd",
                str(server.fileno()),
                "--path",
                str(path),
            ],
            pass_fds=(listener.fileno(), server.fileno()),
            stdin=subprocess.DEVNULL,
            # it needs none of the deployer's variables (its hub token among them); the
            # telemetry setting every process of Shipyard's carries
            env={
                **{k: v for k, v in os.environ.items() if k in HOLDER_ENV},
                **telemetry.environment(),
            },
            start_new_session=True,  # not stopped with the deployer's process group
        )
        server.close()
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.settimeout(TAKE_TIMEOUT)
        try:
            control.connect(str(path))
            held = _receive(control)
        except OSError:
            control.close()
            return None
        control.settimeout(None)
        if held is not None:
            held.close()  # the same socket as ours
        return control

    def release(self) -> None:
        """At a clean stop: the holder exits and the port closes (after the listener is closed)."""
        with contextlib.suppress(OSError):
            self.listener.close()
        if self.control is not None:
            with contextlib.suppress(OSError):
                self.control.sendall(b"stop")
                self.control.settimeout(5)
                self.control.recv(16)  # closed when the holder has exited
            self.control.close()
            self.control = None


def hold(listener: int, server: socket.socket, path: str, linger: float) -> None:
    """Give ``listener`` to each deployer that connects; exit on ``stop`` or after ``linger``."""
    while True:
        server.settimeout(linger)
        try:
            conn, _ = server.accept()
        except TimeoutError:
            break
        with conn:
            try:
                socket.send_fds(conn, [b"socket"], [listener])
                conn.settimeout(None)
                message = conn.recv(16)  # until the deployer stops or dies
            except OSError as e:
                if e.errno not in (errno.ECONNRESET, errno.EPIPE):
                    raise
                message = b""
            if message.startswith(b"stop"):
                break
    with contextlib.suppress(OSError):
        os.unlink(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--linger", type=float, default=LINGER)
    args = parser.parse_args(argv)
    server = socket.socket(fileno=args.control_fd)
    hold(args.listen_fd, server, args.path, args.linger)


if __name__ == "__main__":
    main()
