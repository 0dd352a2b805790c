"""The usage ledger: what each cgroup is for, and its last counters, for usage accounting.

The usage service (:mod:`hub_ext.services.usage`) samples the counters of every
cgroup Shipyard made (CPU time, memory now and at peak: :func:`read_counters
<hub_ext.host.cgroups.read_counters>`). A cgroup's name alone does not say
whose it is or what it holds, and its counters vanish with it; the ledger keeps
both, in one small JSON file per cgroup *instance*, written by the process that
makes and removes the cgroup (the hub for servers, the scheduler for runs, the
deployer for replicas, all root on one machine):

- :meth:`UsageLedger.opened`, from :meth:`LocalHost.launch
  <hub_ext.host.local.LocalHost.launch>` when it makes a cgroup: the labels
  (kind, owner, object, profile, GPUs, limits), where the counters are, when
  it started, and a fresh id: a cgroup made again under the same name (a
  server started again) is another instance, whose counters start at zero;
- :meth:`UsageLedger.closed`, from :meth:`CgroupDriver.remove
  <hub_ext.host.cgroups.CgroupDriver.remove>` once the processes are dead and
  before the cgroup is deleted: the final counters, the tail no later sample
  could read.

A container's cgroup is podman's, not a driver's: :class:`ContainerCgroup
<hub_ext.host.cgroups.ContainerCgroup>` answers the ledger for it, and
:meth:`ContainerHost.count_usage
<hub_ext.host.containerhost.ContainerHost.count_usage>` opens its record once
the container runs (with the labels its server, run or replica would have as a
process, under the same parent) and closes it with the last counters it read,
as podman deletes the cgroup with the container's last process.

The files live in ``<c.LocalHost.usage_dir>/<cgroup parent>/``, a folder only
root reads (0700); the labels are trusted because only Shipyard's root
processes write there. The service deletes a closed instance's file once its
last reading is in the database (:meth:`UsageLedger.forget`).

Rejected alternative: labelling by the cgroup's name (``alice``,
``job-<slug>``): a slug is not a username (an unusual name gets a hash), and
the name says neither the profile nor the object.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import stat
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hub_ext.host.cgroups import CgroupDriver, ContainerCgroup, Limits

log = logging.getLogger(__name__)

#: The kinds of object a cgroup holds.
KINDS = ("server", "run", "step", "replica", "warm")


@dataclass(frozen=True)
class UsageLabel:
    """Whose a cgroup is and what it holds, as the caller of a launch knows it.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`: a user's ``server``, a scheduler ``run``, a
        pipeline ``step``, a model ``replica``, or a ``warm`` process waiting
        for a run.
    owner : str
        The hub username (not the account or the slug).
    object : str
        What it is, for the report: ``alice/`` (a server), ``run/42``,
        ``pipeline-run/7/train``, ``model/alice/iris/v3``.
    """

    kind: str
    owner: str
    object: str

    @classmethod
    def server(cls, owner: str, server: str) -> UsageLabel:
        """The label of ``owner``'s server named ``server`` (``""``: the default one)."""
        return cls("server", owner, f"server/{owner}/{server}")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"usage kind {self.kind!r} is not one of {', '.join(KINDS)}")


class UsageLedger:
    """The folder of usage records of this machine's cgroups (see the module's docstring).

    Parameters
    ----------
    directory : Path
        ``c.LocalHost.usage_dir``; made 0700 on first write.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _folder(self, parent: str) -> Path:
        # the ledger itself 0700 too: its file names name users
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.directory.mkdir(exist_ok=True, mode=0o700)
        if stat.S_IMODE(self.directory.stat().st_mode) & 0o077:  # made by an older Shipyard
            self.directory.chmod(0o700)
        folder = self.directory / parent.replace("/", "_")
        folder.mkdir(exist_ok=True, mode=0o700)
        return folder

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)

    def opened(
        self,
        driver: CgroupDriver | ContainerCgroup,
        name: str,
        label: UsageLabel,
        profile: str,
        limits: Limits,
        now: float | None = None,
    ) -> str | None:
        """Record a cgroup just made; its instance id, or None where it has no counters."""
        dirs = driver.counter_dirs(name)
        if not dirs:
            return None
        instance = uuid.uuid4().hex
        record = {
            "id": instance,
            "driver": driver.kind,
            "parent": driver.parent,
            "cgroup": name,
            "dirs": dirs,
            **asdict(label),
            "profile": profile,
            "gpus": len(limits.gpus),
            "cpu_limit": limits.cpu_limit,
            "mem_limit": limits.mem_limit,
            "started": time.time() if now is None else now,
            "final": None,
        }
        self._write(self._folder(driver.parent) / f"{name}~{instance}.json", record)
        return instance

    def closed(
        self, driver: CgroupDriver | ContainerCgroup, name: str, now: float | None = None
    ) -> None:
        """Write the final counters of ``name``'s open record (its processes are dead).

        Only the newest open record of ``name`` is the cgroup's now: an older one
        was left without a final reading (its remover died) and is ended by the
        usage service, never with this cgroup's counters.
        """
        found = self.open_record(driver.parent, name)
        if found is None:
            return
        path, record = found
        counters = driver.counters(name)
        record["final"] = {
            "at": time.time() if now is None else now,
            "cpu_usec": counters.cpu_usec if counters else None,
            "mem_current": None,  # nothing runs: the last sample's level holds
            "mem_peak": counters.mem_peak if counters else None,
        }
        self._write(path, record)

    def open_record(self, parent: str, name: str) -> tuple[Path, dict[str, Any]] | None:
        """The newest record of cgroup ``name`` under ``parent`` without a final reading."""
        folder = self.directory / parent.replace("/", "_")
        if not folder.is_dir():
            return None
        newest: tuple[Path, dict[str, Any]] | None = None
        for path in folder.glob(glob.escape(name) + "~*.json"):
            record = _load(path)
            if record is None or record.get("final") is not None or record["cgroup"] != name:
                continue
            if newest is None or float(record["started"]) > float(newest[1]["started"]):
                newest = (path, record)
        return newest

    def records(self, parents: list[str]) -> list[tuple[Path, dict[str, Any]]]:
        """Every record under ``parents``, open and closed, with its file."""
        found = []
        for parent in parents:
            folder = self.directory / parent.replace("/", "_")
            for path in sorted(folder.glob("*~*.json")) if folder.is_dir() else []:
                record = _load(path)
                if record is not None:
                    found.append((path, record))
        return found

    def forget(self, path: Path) -> None:
        """Delete a closed record whose last reading is counted."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("Unreadable usage record %s: %s", path, e)
        return None
