"""Standard environments: ``images/<env>/`` is the one source of truth.

An environment is declared once, as a folder of ``images/``:

- ``requirements.in``: the few packages a person asks for;
- ``requirements.lock``: every package with its exact version and hashes, made
  from the input by ``uv pip compile --generate-hashes`` (the command is in the
  lock's header and in ``images/README.md``);
- ``Dockerfile``: the container image, which installs exactly that lock.

On one machine the same lock becomes a virtual environment, built here by
:class:`EnvironmentBuilder` (``shipyard env build``). The environment's
*digest* is the SHA-256 of its lock file: the image carries it as an OCI label,
and every server, kernel and job sees it as ``SHIPYARD_ENV_DIGEST``, so a
tracked run records exactly which packages ran.

Layout of the environments dir (``/opt/shipyard/envs``, the instance's, when the hub runs as
root, so every user's account can run them; the data dir otherwise)::

    envs/
      .cache/uv/          the installer's cache: a rebuild of a known lock copies from here
      base -> base-3f2a…-9c1d04   the current build of each environment (swapped atomically)
      base-3f2a…-9c1d04/          a virtual environment: its lock's digest, then a build id
        shipyard-env.json written last: a folder without it is an unfinished build

A build never changes the locked packages of an environment in place: a new
lock (or ``--force``) is built beside the old one and the link is switched when
it is complete, so a running server keeps the packages it started with, and a
failed build leaves the previous one in use. Only Shipyard's own package is
replaced in place, when Shipyard changed and the lock did not.

Rejected alternatives: conda environments (a second package manager, and no
hash-checked lock that pip and Docker share); installing into the hub's own
environment (a user's packages would change the hub's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from hub_ext.host import instance

LOCK_NAME = "requirements.lock"
INPUT_NAME = "requirements.in"
MARKER_NAME = "shipyard-env.json"
SHIPYARD_DIST = "shipyard"
#: How builds are made (bytecode, kernelspec, ...). A build of an older format is
#: rebuilt from scratch, even when its lock is unchanged.
BUILD_FORMAT = 2
#: Installed by ``python -m venv`` itself; not drift unless the lock pins them.
INSTALLER_DISTS = frozenset({"pip", "setuptools", "wheel"})
#: The parts of Shipyard's source that go into the wheel installed in each environment.
SOURCE_PARTS = (
    "pyproject.toml",
    "README.md",
    "hub_ext",
    "server_ext",
    "jupyter-config",
    "ipython-config",
)

ProgressFn = Callable[[int, int, str], None]


class EnvironmentProblem(Exception):
    """Something an admin can fix; the message says what (no traceback needed)."""


# ------------------------------------------------------------------ places


def _repo_root() -> Path | None:
    """The source checkout Shipyard runs from, if it runs from one (``make install``)."""
    root = Path(__file__).resolve().parents[2]  # hub_ext/environments/catalog.py
    if (root / "pyproject.toml").is_file() and (root / "server_ext").is_dir():
        return root
    return None


def default_images_dir() -> Path:
    """``$SHIPYARD_IMAGES``, else ``images/`` here, else the checkout's, else the installed copy."""
    if os.environ.get("SHIPYARD_IMAGES"):
        return Path(os.environ["SHIPYARD_IMAGES"]).resolve()
    local = Path("images")
    if (local / "base" / LOCK_NAME).is_file():
        return local.resolve()
    root = _repo_root()
    if root and (root / "images").is_dir():
        return root / "images"
    return Path(sys.prefix) / "share" / "shipyard" / "images"


def default_envs_dir() -> Path:
    """``$SHIPYARD_ENVS_DIR``; else ``/opt/<instance>/envs`` as root; else ``<data dir>/envs``.

    As root the environments must be readable by every user's account, and
    the data dir (mode 0700, it holds secrets) is not. ``<instance>`` is
    ``shipyard`` unless ``$SHIPYARD_INSTANCE`` says otherwise
    (:mod:`hub_ext.host.instance`): two Shipyards on one machine never update each
    other's environments.
    """
    if os.environ.get("SHIPYARD_ENVS_DIR"):
        return Path(os.environ["SHIPYARD_ENVS_DIR"]).resolve()
    if os.geteuid() == 0:
        return Path(instance.system_dir("/opt", "envs"))
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve() / "envs"


def default_python() -> str:
    """The interpreter environments are made from: the one beneath the hub's virtualenv.

    ``make install`` makes the hub's virtualenv from /usr/bin/python3, which
    every account may run (an interpreter under /root would not be).
    """
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


# -------------------------------------------------------------------- locks


@dataclass(frozen=True)
class LockedPackage:
    """One pinned line of a lock file."""

    name: str  # canonical (PEP 503) name
    version: str
    marker: str | None
    line: int
    hashes: int


_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def parse_lock(text: str, path: str = LOCK_NAME) -> list[LockedPackage]:
    """Parse a hash-pinned requirements file; every entry must be ``name==version`` with hashes."""
    packages: list[LockedPackage] = []
    problems: list[str] = []
    logical, start = "", 0
    lines = text.splitlines()
    for number, raw in enumerate(lines, 1):
        stripped = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        entry, logical = logical.strip(), ""
        if not entry:
            continue
        hashes = len(_HASH.findall(entry))
        spec = _HASH.sub("", entry).strip()
        if spec.startswith("-"):
            problems.append(f"{path}:{start}: option {spec.split()[0]!r} is not allowed in a lock")
            continue
        try:
            req = Requirement(spec)
        except InvalidRequirement as e:
            problems.append(f"{path}:{start}: {e}")
            continue
        pins = [s for s in req.specifier if s.operator == "=="]
        if len(req.specifier) != 1 or not pins or "*" in pins[0].version or req.url:
            problems.append(f"{path}:{start}: {req.name} is not pinned to one version with ==")
            continue
        if hashes == 0:
            problems.append(f"{path}:{start}: {req.name} has no --hash; regenerate the lock")
            continue
        packages.append(
            LockedPackage(
                name=canonicalize_name(req.name),
                version=pins[0].version,
                marker=str(req.marker) if req.marker else None,
                line=start,
                hashes=hashes,
            )
        )
    if problems:
        raise EnvironmentProblem("The lock file is not a hash-pinned lock:\n" + "\n".join(problems))
    return packages


# ------------------------------------------------------------ environments


@dataclass(frozen=True)
class Environment:
    """One folder of ``images/``: an input, a lock and a Dockerfile."""

    name: str
    folder: Path

    @property
    def lock_path(self) -> Path:
        return self.folder / LOCK_NAME

    @property
    def input_path(self) -> Path:
        return self.folder / INPUT_NAME

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"

    def lock_bytes(self) -> bytes:
        try:
            return self.lock_path.read_bytes()
        except OSError as e:
            raise EnvironmentProblem(
                f"Cannot read the lock of environment {self.name!r} ({self.lock_path}): "
                f"{e.strerror}. Generate it as images/README.md says."
            ) from None

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the lock file: what SHIPYARD_ENV_DIGEST and the image label carry."""
        return "sha256:" + hashlib.sha256(self.lock_bytes()).hexdigest()

    def packages(self) -> list[LockedPackage]:
        return parse_lock(self.lock_bytes().decode("utf-8"), str(self.lock_path))

    @property
    def python_version(self) -> str | None:
        """The Python ``X.Y`` the lock was compiled for (``--python-version`` in its header)."""
        head = self.lock_bytes()[:2000].decode("utf-8", "replace")
        found = re.search(r"--python-version[= ](\d+\.\d+)", head)
        return found.group(1) if found else None


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def list_environments(images_dir: Path | None = None) -> dict[str, Environment]:
    """Every environment declared under ``images_dir`` (a folder with a lock), by name."""
    images_dir = Path(images_dir or default_images_dir())
    if not images_dir.is_dir():
        return {}
    found = {}
    for folder in sorted(images_dir.iterdir()):
        if folder.is_dir() and _NAME.match(folder.name) and (folder / LOCK_NAME).is_file():
            found[folder.name] = Environment(folder.name, folder)
    return found


def get_environment(name: str, images_dir: Path | None = None) -> Environment:
    envs = list_environments(images_dir)
    if name not in envs:
        known = ", ".join(envs) or "none"
        where = images_dir or default_images_dir()
        raise EnvironmentProblem(
            f"No environment {name!r} in {where} (known: {known}). An environment is a folder "
            f"images/{name}/ with a requirements.lock; see images/README.md."
        )
    return envs[name]


# -------------------------------------------------------- built environments


@dataclass(frozen=True)
class BuiltEnvironment:
    """A virtual environment built from a lock, as found in the environments dir."""

    name: str
    path: Path  # the versioned folder (the link resolved)
    digest: str
    python_version: str
    built_at: str
    installer: str
    shipyard_digest: str | None
    build_format: int = 1

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def env_vars(self) -> dict[str, str]:
        """What servers, kernels and jobs running in this environment are told."""
        return {
            "SHIPYARD_ENV": self.name,
            "SHIPYARD_ENV_DIGEST": self.digest,
            "VIRTUAL_ENV": str(self.path),
        }


def find_built(name: str, envs_dir: Path | None = None) -> BuiltEnvironment | None:
    """The current build of ``name``, or None if it was never (completely) built."""
    link = Path(envs_dir or default_envs_dir()) / name
    try:
        path = link.resolve(strict=True)
    except OSError:
        return None
    return find_built_at(name, path)


def image_environment(name: str) -> BuiltEnvironment | None:
    """``name`` as the image this process runs in, or None outside one.

    In an environment's image (images/<env>/Dockerfile) nothing is built in an
    environments dir: the image *is* the build. Its Dockerfile sets ``SHIPYARD_ENV``,
    ``SHIPYARD_ENV_DIGEST`` and ``VIRTUAL_ENV``, so ``shipyard env check NAME`` inside a
    container checks that virtual environment against the lock.
    """
    venv = os.environ.get("VIRTUAL_ENV")
    digest = os.environ.get("SHIPYARD_ENV_DIGEST")
    if os.environ.get("SHIPYARD_ENV") != name or not venv or not digest:
        return None
    path = Path(venv)
    if not (path / "bin" / "python").exists():
        return None
    return BuiltEnvironment(
        name=name,
        path=path,
        digest=digest,
        python_version="",
        built_at="the image",
        installer="image",
        shipyard_digest=None,
    )


def find_built_at(name: str, path: Path) -> BuiltEnvironment | None:
    """The build in the folder ``path`` itself; None if unfinished (no marker, no python)."""
    try:
        data = json.loads((path / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not (path / "bin" / "python").exists():
        return None
    return BuiltEnvironment(
        name=name,
        path=path.resolve(),
        digest=data["digest"],
        python_version=data.get("python_version", ""),
        built_at=data.get("built_at", ""),
        installer=data.get("installer", ""),
        shipyard_digest=data.get("shipyard_digest"),
        build_format=data.get("build_format", 1),
    )
