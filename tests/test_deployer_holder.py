"""The deployer's listening socket outlives a deployer killed with -9 (holder.py, issue 15
point 2): a connection made while no deployer runs waits in the backlog and is answered by
the next one; a clean stop closes the port and ends the holder."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from hub_ext.services.deployer.holder import HeldSocket

from .hubtools import free_port, wait_for

DEPLOYER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hub_ext.services.deployer.holder import HeldSocket

    held = HeldSocket.take("127.0.0.1", int(sys.argv[1]), Path(sys.argv[2]))
    print("listening", flush=True)
    time.sleep(300)
    """
)


def _holders(path: Path) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE
        and "hub_ext.services.deployer.holder" in (p.info["cmdline"] or [])
        and str(path) in (p.info["cmdline"] or [])
    ]


def test_a_connection_waits_for_the_next_deployer(tmp_path):
    port, path = free_port(), tmp_path / "listener.sock"
    deployer = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", DEPLOYER, str(port), str(path)],
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).parent.parent),
    )
    try:
        assert deployer.stdout.readline() == b"listening\n"
        assert len(_holders(path)) == 1
    finally:
        deployer.send_signal(signal.SIGKILL)
        deployer.wait()
    # no deployer: the connection is made all the same, and the request waits
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(b"ping")
    held = HeldSocket.take("127.0.0.1", port, path)  # the next deployer: the same socket
    try:
        assert len(_holders(path)) == 1
        held.listener.setblocking(True)
        held.listener.settimeout(5)
        conn, _ = held.listener.accept()
        with conn:
            assert conn.recv(4) == b"ping"
            conn.sendall(b"pong")
        assert client.recv(4) == b"pong"
    finally:
        client.close()
        holder = _holders(path)
        held.release()
    # a clean stop: the holder exits and the port is closed
    wait_for(lambda: not _holders(path), 10, 0.05, "the holder to exit")
    for pid in holder:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused
    assert not path.exists()


def test_the_holder_gives_up_when_no_deployer_comes_back(tmp_path):
    """A deployer that died and is not replaced: after ``linger`` the port closes, so callers
    are refused instead of waiting without end."""
    port, path = free_port(), tmp_path / "listener.sock"
    listener = HeldSocket._bind("127.0.0.1", port)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    holder = subprocess.Popen(  # noqa: S603
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
            "--linger",
            "0.5",
        ],
        pass_fds=(listener.fileno(), server.fileno()),
        cwd=str(Path(__file__).parent.parent),
    )
    listener.close()
    server.close()
    assert holder.wait(30) == 0
    assert not path.exists()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused
