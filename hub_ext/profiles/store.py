"""The live profiles: a file re-read when it changes, the last good version kept.

Services and spawners hold one :class:`ProfileStore` per file per process
(:meth:`ProfileStore.for_path`) and call :meth:`~ProfileStore.get` whenever they need
the profiles, so an admin's edit takes effect without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from hub_ext.profiles.loader import ProfilesInvalid, load_profiles
from hub_ext.profiles.model import ProfilesConfig

log = logging.getLogger(__name__)


class ProfileStore:
    """A profiles file that is re-read when it changes, without a hub restart.

    Every call to :meth:`get` costs one ``stat``. When the file changes and the
    new version is invalid, the error is logged (every problem, with lines)
    and the last valid version stays in force.
    """

    _shared: dict[str, ProfileStore] = {}
    _shared_lock = threading.Lock()

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._config: ProfilesConfig | None = None
        self._stamp: tuple[int, int] | None = None
        self.last_error: ProfilesInvalid | None = None

    @classmethod
    def for_path(cls, path: str | os.PathLike) -> ProfileStore:
        """One store per file per process, so all spawners share one parse."""
        key = str(Path(path).resolve())
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(key)
            return cls._shared[key]

    def get(self) -> ProfilesConfig:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if self._config is not None and stamp == self._stamp:
            return self._config
        try:
            config = load_profiles(self.path)
        except ProfilesInvalid as e:
            if self._config is None:
                raise
            if self.last_error is None or str(e) != str(self.last_error):
                log.error(
                    "Profiles file %s changed but is invalid; keeping the previous version.\n%s",
                    self.path,
                    e,
                )
            self.last_error = e
            self._stamp = stamp
            return self._config
        if self._config is not None:
            log.info("Reloaded profiles from %s (%d profiles)", self.path, len(config.profiles))
        self._config, self._stamp, self.last_error = config, stamp, None
        return config
