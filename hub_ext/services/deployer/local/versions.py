"""Preparing a version to run: its environment, its owner's account, its folder and its log.

The first steps of a version's start, before any replica (:mod:`.replicas`):

1. the profile's built environment (``shipyard env build``): the model server runs
   on its Python, so the model meets the packages its owner chose;
2. the owner's system account, named and created exactly as the spawner and the
   scheduler do (:func:`hub_ext.host.slugs.account_name`): a model is code and runs
   only as its owner (SECURITY rule 5);
3. the version's log in the service's log folder (:class:`.logs.VersionLog`), and
   its private folder in the runtime folder (the owner's, mode 0700) with the
   training summary (mode 0600); the first replica downloads the model into that
   folder (``--model-cache``), and every later start loads that copy.

A version adopted from an earlier deployer (:mod:`.records`) keeps the folder and
the secret its record names, once they are checked to be the owner's and in the
runtime folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

from hub_ext.environments.catalog import BuiltEnvironment
from hub_ext.host.local import LocalHost

from ..backend import DeployFailed, VersionSpec
from .logs import VersionLog
from .records import Found, owned
from .state import MODEL_CACHE, SUMMARY_NAME, RunningVersion


def has_model_copy(folder: Path) -> bool:
    """Whether a version's folder holds the model's copy its first replica downloaded."""
    return (folder / MODEL_CACHE / "MLmodel").is_file()


class VersionPreparer:
    """Makes a :class:`RunningVersion`: everything a version needs before its first replica.

    Parameters
    ----------
    local_host : LocalHost
        Finds the profile's environment and the owner's account.
    runtime_dir : Path
        ``c.LocalBackend.runtime_dir``, where the versions' private folders are.
    log_dir : Path
        ``c.LocalBackend.log_dir``, where the versions' logs are.
    max_log_bytes : int
        ``c.LocalBackend.max_log_bytes``, the size at which a log is rotated.
    """

    def __init__(self, local_host: LocalHost, runtime_dir: Path, log_dir: Path, max_log_bytes: int):
        self.local_host = local_host
        self.runtime_dir = runtime_dir
        self.log_dir = log_dir
        self.max_log_bytes = max_log_bytes

    def log_path(self, key: str) -> Path:
        """The version's log file (it may not exist: never started here)."""
        return self.log_dir / f"{key}.log"

    async def prepare(self, spec: VersionSpec) -> RunningVersion:
        """Environment, account, log and private folder of a version that starts here.

        Raises
        ------
        DeployFailed
            No environment, no account, a log or folder that cannot be made.
        """
        built = self._find_environment(spec)
        user = await self._account(spec.owner)
        log = await self._open_log(spec)
        try:
            folder = await asyncio.to_thread(self._private_folder, spec, user)
        except BaseException:
            log.close()
            raise
        return RunningVersion(spec, built, user, folder, log)

    async def adopted(self, spec: VersionSpec, found: Found) -> RunningVersion | None:
        """The version whose replicas an earlier deployer left serving, in its folder.

        None when they cannot be adopted: another account's, or a folder that is
        gone or not in the runtime folder.
        """
        built = self._find_environment(spec)
        user = await self._account(spec.owner)
        folder = found.folder
        if (
            user.pw_name != found.account
            or folder.parent != self.runtime_dir
            or folder.is_symlink()
            or not folder.is_dir()
        ):
            return None
        log = await self._open_log(spec)
        return RunningVersion(spec, built, user, folder, log, secret=found.secret)

    def _find_environment(self, spec: VersionSpec) -> BuiltEnvironment:
        return self.local_host.environment(spec.profile, DeployFailed)

    async def _account(self, owner: str) -> pwd.struct_passwd:
        """The owner's account (as root), or the service's own user."""
        return await self.local_host.account(owner, DeployFailed)

    async def _open_log(self, spec: VersionSpec) -> VersionLog:
        try:
            await asyncio.to_thread(self.log_dir.mkdir, 0o700, True, True)
            return await asyncio.to_thread(
                VersionLog, self.log_path(spec.key), self.max_log_bytes, spec.secrets
            )
        except OSError as e:
            raise DeployFailed(f"Cannot open the version's log in {self.log_dir}: {e}") from None

    def _private_folder(self, spec: VersionSpec, user: pwd.struct_passwd) -> Path:
        """The version's folder, the training summary in it; the owner's once complete."""
        runtime = self.runtime_dir
        try:
            runtime.mkdir(mode=0o711, parents=True)
        except FileExistsError:
            if runtime.is_symlink() or not runtime.is_dir() or not owned(runtime):
                raise DeployFailed(
                    f"{runtime} is not a folder of the deployer's own; an admin removes it "
                    "or sets c.LocalBackend.runtime_dir."
                ) from None
        folder = Path(tempfile.mkdtemp(prefix=f"{spec.key}-", dir=runtime))  # 0700, ours
        run_as_root = self.local_host.run_as_root
        try:
            if spec.training_summary is not None:
                # written while the folder is still the service's: the owner cannot have
                # put a link in its place
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(folder / SUMMARY_NAME, flags, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    if run_as_root:
                        os.fchown(f.fileno(), user.pw_uid, user.pw_gid)
                    json.dump(spec.training_summary, f)
            if run_as_root:
                os.chown(folder, user.pw_uid, user.pw_gid, follow_symlinks=False)
        except BaseException:
            shutil.rmtree(folder, True)
            raise
        return folder
