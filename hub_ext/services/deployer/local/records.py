"""The running versions' records, by which a deployer adopts the replicas of one that died.

Each running version has a record in the runtime folder (``<key>.json``, the
service's, mode 0600): the replicas' pids with their start times (a pid reused by
another process is not taken for the replica), ports, cgroups and GPUs, the
version's folder and the secret the replicas answer to. It is written whole to a
new file and renamed over the old one, so a crash mid-write leaves the previous
record.

At start, :meth:`Records.find_serving` reads every record and keeps each replica
of a version the database still wants whose process is the recorded one and that
answers ``GET /health`` with 200 (a :class:`Found`); :meth:`Records.remove_leftovers`
kills and removes everything else under the replicas' cgroup parent and in the
runtime folder. Records an older deployer wrote are read in today's form
(:func:`_read_older_start_time`). The backend then serves the found replicas at
once and adopts them when the service starts their version
(:meth:`LocalBackend.start`); :meth:`Records.stop_found` stops those it does not
adopt.

Rejected: the records in the deployer's database (the database says what should
serve; a record says which processes do, and is the service's alone, like the
replicas' FIFOs beside it), and finding replicas by their cgroups alone (without
cgroups, on the rlimit driver, a pid is all there is, and a pid needs its start
time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from hub_ext.host.localproc import kill_tree
from hub_ext.host.process import start_time

from .health import get_health
from .process import ReplicaHost
from .state import RunningVersion


def _read_older_start_time(replica: dict) -> None:
    """A replica record's ``started`` as an older deployer wrote it, in today's form.

    Older records hold psutil's ``create_time`` (seconds since the epoch, a float) where
    they now hold the kernel's start time of the process (:func:`start_time`). A float
    that names the process running under the pid becomes that process's start time, so
    an upgraded deployer adopts (or stops) the replicas an older one left serving;
    anything else becomes ``""``, which matches no process.
    """
    started = replica.get("started")
    if not isinstance(started, float):
        return
    try:
        pid = int(replica["pid"])
        proc = psutil.Process(pid)
        same = proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - started) < 0.01
    except (psutil.Error, KeyError, TypeError, ValueError):
        same = False
    replica["started"] = (start_time(pid) or "") if same else ""


def owned(path: Path) -> bool:
    """Whether ``path`` is this process's and writable by no one else (the runtime folder)."""
    info = path.lstat()
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


@dataclass
class Found:
    """A version's replicas left by an earlier deployer that still serve: adopted at its start."""

    key: str
    account: str
    folder: Path
    secret: str
    replicas: list[dict]

    @property
    def urls(self) -> list[str]:
        """Where the replicas serve."""
        return [f"http://127.0.0.1:{r['port']}" for r in self.replicas]


class Records:
    """The runtime folder's records and the replicas' FIFOs beside them.

    Parameters
    ----------
    runtime_dir : Path
        ``c.LocalBackend.runtime_dir``: the deployer's own folder.
    host : ReplicaHost
        To kill and remove what no record keeps.
    log : logging.Logger
        The backend's log: what a recovery adopted and removed, a record not written.
    """

    def __init__(self, runtime_dir: Path, host: ReplicaHost, log: logging.Logger):
        self.runtime_dir = runtime_dir
        self.host = host
        self.log = log

    def path(self, key: str) -> Path:
        """The record of the version ``key``."""
        return self.runtime_dir / f"{key}.json"

    def output_path(self, cgroup: str) -> Path:
        """The output FIFO of the replica whose cgroup is ``cgroup``."""
        return self.runtime_dir / f"{cgroup}.out"

    def ours(self) -> bool:
        """Whether the runtime folder exists and is the deployer's own."""
        runtime = self.runtime_dir
        return runtime.is_dir() and not runtime.is_symlink() and owned(runtime)

    def save(self, version: RunningVersion) -> None:
        """The version's record, for a deployer that starts after this one died (mode 0600).

        Written whole to a new file, then renamed over the old one: a crash
        mid-write leaves the previous record. A version without a running replica
        has none.
        """
        path = self.path(version.spec.key)
        replicas = [
            {
                "index": r.index,
                "cgroup": r.cgroup,
                "pid": r.process.pid,
                "started": r.process.started,
                "port": r.port,
                "gpus": r.gpus,
            }
            for _, r in sorted(version.replicas.items())
            if r.process is not None and r.pid is not None
        ]
        if not replicas:
            path.unlink(missing_ok=True)
            return
        record = {
            "key": version.spec.key,
            "account": version.user.pw_name,
            "folder": str(version.folder),
            "secret": version.secret,
            "replicas": replicas,
        }
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with os.fdopen(os.open(temporary, flags, 0o600), "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(temporary, path)
        except OSError as e:
            temporary.unlink(missing_ok=True)
            self.log.warning("Could not record the replicas of %s: %s", version.spec.key, e)

    def read(self) -> list[dict]:
        """Every record in the runtime folder that this process wrote, in today's form."""
        if not self.ours():
            return []
        records = []
        for path in self.runtime_dir.glob("*.json"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    if os.fstat(f.fileno()).st_uid != os.geteuid():
                        continue
                    record = json.loads(f.read())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                for replica in record.get("replicas") or ():
                    if isinstance(replica, dict):
                        _read_older_start_time(replica)
                records.append(record)
        return records

    async def recover(self, wanted: Collection[str], health_timeout: float) -> dict[str, Found]:
        """The replicas of ``wanted`` versions still serving; everything else removed.

        See :meth:`LocalBackend.recover`. What is kept and what is removed is logged.
        """
        records = await asyncio.to_thread(self.read)
        found = await self.find_serving(records, wanted, health_timeout)
        removed = await asyncio.to_thread(self.remove_leftovers, records, found)
        if found:
            self.log.info(
                "Adopting %d replica(s) of %d version(s) left serving by an earlier deployer",
                sum(len(f.replicas) for f in found.values()),
                len(found),
            )
        if removed:
            self.log.warning(
                "Removed %d leftovers of an earlier deployer: %s", len(removed), ", ".join(removed)
            )
        return found

    async def find_serving(
        self, records: list[dict], wanted: Collection[str], health_timeout: float
    ) -> dict[str, Found]:
        """The recorded replicas of ``wanted`` versions that are still theirs and serve."""
        found: dict[str, Found] = {}
        for record in records:
            try:
                item = Found(
                    key=record["key"],
                    account=record["account"],
                    folder=Path(record["folder"]),
                    secret=record["secret"],
                    replicas=[],
                )
                replicas = list(record["replicas"])
            except (KeyError, TypeError):
                continue
            if item.key not in wanted:
                continue
            checks = await asyncio.gather(
                *(self._still_serving(r, health_timeout) for r in replicas)
            )
            item.replicas = [r for r, ok in zip(replicas, checks, strict=True) if ok]
            if item.replicas:
                found[item.key] = item
        return found

    @staticmethod
    async def _still_serving(replica: dict, health_timeout: float) -> bool:
        try:
            pid, started, port = (
                int(replica["pid"]),
                str(replica["started"]),
                int(replica["port"]),
            )
        except (KeyError, TypeError, ValueError):
            return False
        if start_time(pid) != started:
            return False
        status, _ = await get_health(port, health_timeout)
        return status == 200

    def remove_leftovers(self, records: list[dict], found: Mapping[str, Found]) -> list[str]:
        """Kill and remove what ``found`` does not keep (in a thread: it waits for deaths)."""
        kept_cgroups = {r["cgroup"] for f in found.values() for r in f.replicas}
        kept_files = {f"{f.key}.json" for f in found.values()} | {
            f.folder.name for f in found.values()
        }
        kept_files |= {f"{name}.out" for name in kept_cgroups}
        names: set[str] = set()
        # recorded replicas not kept: killed by pid too, for a driver without cgroups
        for record in records:
            for replica in record.get("replicas") or ():
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    if replica["cgroup"] in kept_cgroups:
                        continue
                    if start_time(int(replica["pid"])) == str(replica["started"]):
                        kill_tree(int(replica["pid"]))
                        names.add(replica["cgroup"])
        names.update(self.host.remove_unkept(kept_cgroups))
        if self.ours():
            for entry in self.runtime_dir.iterdir():
                if entry.name in kept_files:
                    continue
                names.add(entry.name)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, True)
                else:
                    entry.unlink(missing_ok=True)
        return sorted(names)

    async def stop_found(self, found: Found, grace: float) -> None:
        """Stop replicas found serving that were never adopted: SIGTERM, ``grace``, then killed.

        Their cgroups, FIFOs, the version's folder and its record go too.
        """
        procs = []
        for record in found.replicas:
            with contextlib.suppress(psutil.Error, KeyError, TypeError, ValueError):
                proc = psutil.Process(int(record["pid"]))
                if start_time(proc.pid) == str(record["started"]):
                    proc.terminate()
                    procs.append(proc)

        def finish() -> None:
            psutil.wait_procs(procs, timeout=grace)
            for record in found.replicas:
                pid = int(record["pid"])
                if start_time(pid) == str(record["started"]):
                    kill_tree(pid)
                self.host.discard(record["cgroup"])
                self.output_path(record["cgroup"]).unlink(missing_ok=True)
            shutil.rmtree(found.folder, True)
            self.path(found.key).unlink(missing_ok=True)

        await asyncio.to_thread(finish)

    def tidy(self) -> None:
        """Remove the runtime folder when nothing is left in it (at a clean stop)."""
        with contextlib.suppress(OSError):  # not ours, or a folder still in it
            if self.ours():
                self.runtime_dir.rmdir()
