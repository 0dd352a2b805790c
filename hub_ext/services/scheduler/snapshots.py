"""Notebook snapshots: the bytes a job runs, stored by content.

A job points at the SHA-256 digest of its notebook, and every run copies that
digest, so what runs is what was scheduled: editing the notebook in the
user's home changes nothing until the job is given the new bytes.

Requirements and how they are met:

- **Immutable and shared.** Content addressing makes storing idempotent (one
  file however many jobs and versions use it) and a digest always names the
  same bytes, which reading checks.
- **No torn writes.** A snapshot is written to a temporary name and renamed.
- **No user-controlled paths.** Digests are validated before they touch the
  file system.
- **Only runnable notebooks.** :func:`check_notebook` refuses what papermill
  could not run before it is snapshotted, not when the first run fails.

Rejected alternative: notebook bytes in the database. Notebooks with outputs
reach tens of megabytes, and the same notebook would be stored once per job
version instead of once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import Invalid, NotFound

_DIGEST = re.compile(r"^[0-9a-f]{64}$")

#: Largest notebook a job may snapshot. Outputs (images) make notebooks big;
#: anything larger belongs in a data file the notebook reads.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024


class SnapshotStore:
    """Notebook snapshots in files, addressed by the SHA-256 of their bytes.

    Content addressing makes :meth:`put` idempotent (the same notebook is
    stored once, however many jobs and versions use it) and makes a snapshot
    immutable: a digest always names the same bytes, which :meth:`get` checks.
    Files are written to a temporary name and renamed, so a crash never leaves
    a half-written snapshot under a valid digest. Digests are validated as 64
    hex digits before they touch the file system: a path is never taken from a
    user.

    Parameters
    ----------
    directory : str or pathlib.Path
        Where snapshots live (created, mode 0700: notebooks are users' code).
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def digest_of(data: bytes) -> str:
        """Return the digest :meth:`put` gives ``data``."""
        return hashlib.sha256(data).hexdigest()

    def path(self, digest: str) -> Path:
        """Return the file of ``digest`` (which may not exist), after validating it.

        Raises
        ------
        Invalid
            ``digest`` is not 64 lowercase hex digits.
        """
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise Invalid(f"{digest!r} is not a snapshot digest (64 lowercase hex digits)")
        # The suffix is what executors and papermill expect of a notebook path.
        return self.directory / digest[:2] / f"{digest}.ipynb"

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already stored) and return its digest."""
        digest = self.digest_of(data)
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """Return the bytes of ``digest``.

        Raises
        ------
        Invalid
            ``digest`` is malformed.
        NotFound
            No such snapshot.
        RuntimeError
            The file no longer matches its digest (disk corruption, tampering).
        """
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no notebook snapshot {digest}") from None
        if self.digest_of(data) != digest:
            raise RuntimeError(f"notebook snapshot {path} does not match its digest")
        return data

    def exists(self, digest: str) -> bool:
        """Return whether ``digest`` is stored."""
        return self.path(digest).exists()


def check_notebook(data: bytes) -> None:
    """Refuse what papermill could not run, before it is snapshotted.

    Raises
    ------
    Invalid
        Too large, not JSON, or not an nbformat 4 notebook.
    """
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise Invalid(
            f"the notebook is {len(data)} bytes; the limit is {MAX_NOTEBOOK_BYTES}: clear large "
            "outputs or move data to files"
        )
    try:
        notebook = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise Invalid("the notebook is not a .ipynb file (not JSON)") from None
    if (
        not isinstance(notebook, dict)
        or not isinstance(notebook.get("cells"), list)
        or not isinstance(notebook.get("nbformat"), int)
        or notebook["nbformat"] < 4
    ):
        raise Invalid("the notebook is not an nbformat 4 .ipynb file (no 'cells' or 'nbformat')")
