"""LocalHost.launch: the one way a user's code starts on this machine (hub_ext/host/launch.py).

Real processes, as a real test account, in a real cgroup with the profile's limits (as
root; skipped otherwise), for the three ways the callers use it:

- output piped back to the caller (the executor): the process runs as its owner, in its
  cgroup, with exactly the environment it was given, in the folder it was given;
- a second process joining the cgroup the first one's launch made (nbconvert after
  papermill), and a launch refused before anything starts when its cgroup cannot be made;
- the deployer's case: a detached process writing to a FIFO, which outlives the process
  that launched it (killed with SIGKILL) and keeps writing, while a process launched
  without ``detached`` dies with it; and output appended to a log file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from hub_ext.host.cgroups import describe_process
from hub_ext.host.launch import CgroupFailed, LaunchRequest
from hub_ext.host.local import LocalHost

from .conftest import needs_root
from .hubtools import remove_cgroups, remove_test_accounts, session_folder, tagged, wait_for
from .runspecs import profile

PREFIX = tagged("sylch-")
CGROUPS = tagged("shipyard-test-lch")
MiB = 2**20

#: What a launched Python reports about itself, as one JSON line, before it waits.
REPORT = """
import json, os, sys
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
                  "env": dict(os.environ), "sid": os.getsid(0) == os.getpid()}), flush=True)
sys.stdin.read()  # until the caller closes its end (piped), else EOF at once
"""


class Collected(asyncio.SubprocessProtocol):
    """A piped process's output, and its exit."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.exited = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.data += data

    def process_exited(self) -> None:
        self.exited.set_result(None)


@pytest.fixture(scope="module")
def host(home_root):
    host = LocalHost(
        system_user_prefix=PREFIX,
        home_dir_template=str(home_root / "{account}"),
        cgroup_parent=CGROUPS,
        gpu_devices=[],
    )
    yield host
    remove_test_accounts(PREFIX)
    remove_cgroups(CGROUPS)


@pytest.fixture(scope="module")
def place():
    """A world-traversable folder for FIFOs and logs (pytest's tmp is 0700)."""
    path = session_folder("launch-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)  # noqa: S603, S607


def driver_of(host: LocalHost):
    driver = host.open_driver(CGROUPS, "no cgroups: limits are per-process rlimits")
    if not driver.enforces_total:
        pytest.skip("no writable cgroup hierarchy: launch() places processes in no cgroup")
    return driver


def env_for(user) -> dict[str, str]:
    # LANG set: Python would otherwise coerce the C locale and add LC_CTYPE
    return {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "LANG": "C.UTF-8", "ONLY": "this"}


def test_a_request_refuses_what_the_launch_decides_itself():
    fields = {"user": None, "profile": profile(), "argv": ["true"], "env": {}}
    fields.update(driver=None, cgroup="x")
    with pytest.raises(ValueError, match="popen_kwargs may not set env, preexec_fn"):
        LaunchRequest(**fields, popen_kwargs={"preexec_fn": print, "env": {}})
    with pytest.raises(ValueError, match="stdin_pipe needs output='pipe'"):
        LaunchRequest(**fields, output="inherit", stdin_pipe=True)


@needs_root
def test_a_piped_process_runs_as_its_owner_in_its_cgroup_with_only_its_environment(host):
    driver = driver_of(host)

    async def main():
        user = await host.account("ada", RuntimeError)
        env = env_for(user)
        protocol = Collected()
        launched = await host.launch(
            LaunchRequest(
                user=user,
                profile=profile(mem_limit="256Mi", cpu_limit="0.5"),
                argv=["/usr/bin/python3", "-c", REPORT],
                env=env,
                driver=driver,
                cgroup="lch-piped",
                cwd="/",
                stdin_pipe=True,
            ),
            protocol,
        )
        try:
            await asyncio.wait_for(_line(protocol), 30)
            placed = describe_process(launched.pid)
            assert driver.pids("lch-piped") == {launched.pid}
        finally:
            launched.transport.get_pipe_transport(0).close()
            await asyncio.wait_for(protocol.exited, 30)
            returncode = launched.transport.get_returncode()
            launched.transport.close()
        return user, env, json.loads(protocol.data), placed, returncode

    user, env, seen, placed, returncode = asyncio.run(main())
    assert returncode == 0
    assert (seen["uid"], seen["gid"]) == (user.pw_uid, user.pw_gid)
    assert seen["cwd"] == "/"
    assert seen["env"] == env  # nothing of the caller's
    assert seen["sid"] is True  # a session of its own
    assert placed["path"].endswith(f"/{CGROUPS}/lch-piped")
    assert (placed["mem_limit"], placed["cpu_limit"]) == (256 * MiB, 0.5)
    driver.remove("lch-piped")


async def _line(protocol: Collected) -> None:
    while b"\n" not in protocol.data:
        await asyncio.sleep(0.02)


@needs_root
def test_a_second_process_joins_the_cgroup_and_a_refused_cgroup_starts_nothing(host):
    driver = driver_of(host)

    async def main():
        user = await host.account("ada", RuntimeError)
        base = {"user": user, "profile": profile(), "env": env_for(user), "driver": driver}
        first = await host.launch(
            LaunchRequest(**base, argv=["sleep", "60"], cgroup="lch-joined", output="inherit")
        )
        second = await host.launch(
            LaunchRequest(
                **base,
                argv=["sleep", "60"],
                cgroup="lch-joined",
                output="inherit",
                create_cgroup=False,
            )
        )
        both = driver.pids("lch-joined")
        # a cgroup inside a file of another: the launch stops before starting anything
        with pytest.raises(CgroupFailed, match="Could not create cgroup"):
            await host.launch(
                LaunchRequest(
                    **base,
                    argv=["sleep", "60"],
                    cgroup="lch-joined/cgroup.procs/x",
                    output="inherit",
                )
            )
        driver.remove("lch-joined")
        return first, second, both

    first, second, both = asyncio.run(main())
    assert both == {first.pid, second.pid}
    assert first.popen.wait(10) == second.popen.wait(10) == -9


#: Launches, as the deployer does, a detached process writing to a FIFO and an attached
#: one writing to a log file; prints both pids; then waits to be killed.
HELPER = """
import asyncio, sys
from pathlib import Path
from hub_ext.host.launch import LaunchRequest
from hub_ext.host.local import LocalHost
from hub_ext.profiles.model import Profile

prefix, homes, parent, fifo, log = sys.argv[1:]
TICKER = "import os, time\\nfor i in range(3000):\\n    print('tick', i, os.getuid(), flush=True)\\n    time.sleep(0.05)"

async def main():
    host = LocalHost(system_user_prefix=prefix, home_dir_template=homes, cgroup_parent=parent,
                     gpu_devices=[])
    user = await host.account("ada", RuntimeError)
    driver = host.open_driver(parent, "")
    base = dict(user=user, profile=Profile(slug="tiny", display_name="Tiny", mem_limit="128Mi"),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, driver=driver, cwd="/")
    detached = await host.launch(LaunchRequest(
        **base, argv=["/usr/bin/python3", "-c", TICKER], cgroup="lch-detached",
        output=Path(fifo), detached=True))
    attached = await host.launch(LaunchRequest(
        **base, argv=["/bin/sh", "-c", "echo attached $(id -u); exec sleep 600"],
        cgroup="lch-attached", output=Path(log)))
    print(detached.pid, attached.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def read_available(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


@needs_root
def test_a_detached_process_writes_to_its_fifo_after_its_launcher_is_killed(host, place, home_root):
    driver = driver_of(host)
    fifo, log = place / "replica.out", place / "attached.log"
    os.mkfifo(fifo, 0o600)
    # the reader's end is open before the launch, as the deployer opens its own
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    helper = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-c",
            textwrap.dedent(HELPER),
            PREFIX,
            str(home_root / "{account}"),
            CGROUPS,
            str(fifo),
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = helper.stdout.readline()
        assert line, f"the helper exited with {helper.wait(10)}"
        detached, attached = map(int, line.split())
        wait_for(lambda: log.exists() and log.read_text(), timeout=30, what="the log file")
        uid = psutil.Process(attached).uids().real
        assert log.read_text() == f"attached {uid}\n"
        assert oct(log.stat().st_mode & 0o777) == oct(0o600)

        helper.kill()  # SIGKILL: no cleanup of its own
        helper.wait(10)

        def gone(pid: int) -> bool:
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(lambda: gone(attached), timeout=10, what="the attached process to die")
        read_available(reader)  # what it wrote while the helper lived
        time.sleep(0.5)
        after = read_available(reader).decode().splitlines()
        assert after, "the detached process wrote nothing after its launcher died"
        assert all(line.startswith("tick ") and line.endswith(f" {uid}") for line in after)
        assert psutil.Process(detached).is_running()
        assert driver.pids("lch-detached") == {detached}
        assert driver.pids("lch-attached") == set()
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait(10)
        os.close(reader)
        driver.remove("lch-detached")
        driver.remove("lch-attached")
