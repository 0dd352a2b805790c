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

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import __version__, instance

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
    root = Path(__file__).resolve().parent.parent
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
    (:mod:`hub_ext.instance`): two Shipyards on one machine never update each
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


# Runs inside the environment's own interpreter: what is installed, and the
# values markers are evaluated against (packaging's default_environment, in stdlib).
_INSPECT = r"""
import importlib.metadata as m, json, os, platform, sys
impl = sys.implementation
ver = impl.version
iv = f"{ver.major}.{ver.minor}.{ver.micro}"
if ver.releaselevel != "final":
    iv += ver.releaselevel[0] + str(ver.serial)
print(json.dumps({
    "dists": sorted({(d.metadata["Name"], d.version) for d in m.distributions() if d.metadata["Name"]}),
    "markers": {
        "implementation_name": impl.name, "implementation_version": iv,
        "os_name": os.name, "platform_machine": platform.machine(),
        "platform_release": platform.release(), "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"""


@dataclass
class Drift:
    """How an installed environment differs from its lock."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (name, locked version)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (name, installed version)
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # (name, locked, installed)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.changed)

    def lines(self) -> list[str]:
        out = [f"missing  {n}=={v} (in the lock, not installed)" for n, v in self.missing]
        out += [f"extra    {n}=={v} (installed, not in the lock)" for n, v in self.extra]
        out += [f"version  {n}: lock has {lk}, installed {got}" for n, lk, got in self.changed]
        return out


def inspect_python(python: Path | str) -> dict:
    """Installed distributions and marker values of an interpreter."""
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [str(python), "-I", "-c", _INSPECT],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise EnvironmentProblem(
            f"Cannot run {python}: {detail.strip()}. Rebuild it with `shipyard env build --force`."
        ) from None
    return json.loads(out.stdout)


def compare(env: Environment, python: Path | str) -> Drift:
    """Compare what ``python`` has installed with ``env``'s lock."""
    info = inspect_python(python)
    installed = {canonicalize_name(n): v for n, v in info["dists"]}
    locked = {}
    for pkg in env.packages():
        if pkg.marker:
            try:
                if not Marker(pkg.marker).evaluate(info["markers"]):
                    continue
            except InvalidMarker:
                pass
        locked[pkg.name] = pkg.version
    drift = Drift()
    for name, version in sorted(locked.items()):
        if name not in installed:
            drift.missing.append((name, version))
        elif installed[name] != version:
            drift.changed.append((name, version, installed[name]))
    for name, version in sorted(installed.items()):
        if name in locked or name == SHIPYARD_DIST or name in INSTALLER_DISTS:
            continue
        drift.extra.append((name, version))
    return drift


# ------------------------------------------------------------------ builder


def source_digest(root: Path) -> str:
    """A digest of Shipyard's own source, so an environment picks up a changed server_ext."""
    h = hashlib.sha256()
    for part in SOURCE_PARTS:
        path = root / part
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def find_uv() -> str | None:
    """The uv binary: the one installed with Shipyard (PyPI's ``uv``), else one on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


@dataclass(frozen=True)
class BuildResult:
    env: BuiltEnvironment
    reused: bool  # nothing to do: the current build matches the lock and Shipyard's source
    seconds: float


class EnvironmentBuilder:
    """Builds ``images/<env>`` locks into virtual environments (``shipyard env build``).

    Parameters
    ----------
    envs_dir
        Where environments live (see the module docstring).
    python
        Interpreter to base them on; its ``X.Y`` must match the lock's.
    installer
        ``"uv"``, ``"pip"`` or ``"auto"`` (uv when available).
    progress
        Called as ``progress(step, steps, message)`` before each step.
    echo
        Whether the installer's own output (its progress bars) reaches the terminal.
    shipyard_source
        Shipyard's source tree, installed into each environment without
        dependencies (the server extension, magics); defaults to this checkout.
    cache_dir
        The installers' caches (``envs_dir/.cache`` by default): packages of a
        known lock are copied from here instead of downloaded again.
    """

    STEPS = 6

    def __init__(
        self,
        envs_dir: Path | None = None,
        *,
        python: str | None = None,
        installer: str = "auto",
        progress: ProgressFn | None = None,
        echo: bool = False,
        shipyard_source: Path | None = None,
        cache_dir: Path | None = None,
    ):
        self.envs_dir = Path(envs_dir or default_envs_dir())
        self.python = python or default_python()
        self.uv = find_uv() if installer in ("auto", "uv") else None
        if installer == "uv" and not self.uv:
            raise EnvironmentProblem(
                "uv is not installed: `pip install uv`, or use --installer pip."
            )
        self.installer = "uv" if self.uv else "pip"
        self.progress = progress or (lambda step, steps, message: None)
        self.echo = echo
        source = shipyard_source or os.environ.get("SHIPYARD_SOURCE") or _repo_root()
        self.source = Path(source) if source else None
        self.cache_dir = Path(cache_dir or self.envs_dir / ".cache")

    # -------------------------------------------------------------- helpers

    def _run(self, argv: list[str], what: str, env: dict | None = None) -> None:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("VIRTUAL_ENV", None)  # the hub's own; uv and pip must not see it
        full_env["UV_CACHE_DIR"] = str(self.cache_dir / "uv")
        full_env["PIP_CACHE_DIR"] = str(self.cache_dir / "pip")
        output = None if self.echo else subprocess.PIPE
        proc = subprocess.run(  # noqa: S603 - argv built here, never from user input
            argv, env=full_env, stdout=output, stderr=subprocess.STDOUT if output else None
        )
        if proc.returncode:
            tail = (proc.stdout or b"").decode(errors="replace").strip().splitlines()[-15:]
            raise EnvironmentProblem(
                f"{what} failed (exit {proc.returncode}): {' '.join(argv[:4])} …"
                + ("\n" + "\n".join(tail) if tail else "")
            )

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """One build of an environment at a time, also across processes."""
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.envs_dir / f".{name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _check_python(self, env: Environment) -> str:
        try:
            out = subprocess.run(  # noqa: S603
                [self.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise EnvironmentProblem(f"Cannot run the Python {self.python}: {e}") from None
        version = out.stdout.strip()
        wanted = env.python_version
        if wanted and version != wanted:
            raise EnvironmentProblem(
                f"Environment {env.name!r} is locked for Python {wanted} but {self.python} is "
                f"Python {version}: pass --python with a {wanted} interpreter, or regenerate the "
                "lock for this one (images/README.md)."
            )
        return version

    def _shipyard_wheel(self, digest: str) -> Path:
        """Shipyard's own wheel, built once per source digest and kept in the cache."""
        wheels = self.cache_dir / "shipyard-wheels" / digest[:16]
        found = sorted(wheels.glob("shipyard-*.whl"))
        if found:
            return found[0]
        tmp = wheels.with_name(wheels.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if self.uv:
            argv = [self.uv, "build", "--wheel", "--out-dir", str(tmp), str(self.source)]
        else:
            argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp)]
            argv.append(str(self.source))
        self._run(argv, "Building Shipyard's wheel")
        shutil.rmtree(wheels, ignore_errors=True)
        os.replace(tmp, wheels)
        return sorted(wheels.glob("shipyard-*.whl"))[0]

    # ---------------------------------------------------------------- build

    def build(self, env: Environment, force: bool = False) -> BuildResult:
        """Build ``env`` unless its current build already matches; return what is in use."""
        started = time.monotonic()
        if self.source is None:
            raise EnvironmentProblem(
                "Shipyard's source tree is needed to install its server extension into the "
                "environment: set SHIPYARD_SOURCE to a checkout, or run from one."
            )
        digest = env.digest
        packages = env.packages()
        ship_digest = source_digest(self.source)
        with self._locked(env.name):
            current = find_built(env.name, self.envs_dir)
            same_lock = bool(
                current and current.digest == digest and current.build_format == BUILD_FORMAT
            )
            if not force and same_lock and current.shipyard_digest == ship_digest:
                self.progress(self.STEPS, self.STEPS, f"{env.name} is up to date ({digest[:19]})")
                return BuildResult(current, True, time.monotonic() - started)
            old_umask = os.umask(0o022)  # every account must read and run the environment
            try:
                if same_lock and not force:
                    built = self._update_shipyard(env, current, ship_digest)
                else:
                    built = self._build_fresh(env, digest, packages, ship_digest)
            finally:
                os.umask(old_umask)
            self._switch(env.name, built.path)
            self._prune(env.name, keep={built.path, current.path if current else None})
        return BuildResult(built, False, time.monotonic() - started)

    def _build_fresh(
        self, env: Environment, digest: str, packages: list[LockedPackage], ship_digest: str
    ) -> BuiltEnvironment:
        steps = self.STEPS
        self.progress(1, steps, f"Checking {self.python} for environment {env.name!r}")
        version = self._check_python(env)
        # a new folder for every build: a forced rebuild never touches the one in use
        target = (
            self.envs_dir
            / f"{env.name}-{digest.removeprefix('sha256:')[:12]}-{secrets.token_hex(3)}"
        )
        python = target / "bin" / "python"
        self.progress(2, steps, f"Creating the virtual environment {target}")
        if self.uv:
            self._run([self.uv, "venv", "--quiet", "--python", self.python, str(target)], "uv venv")
        else:
            self._run([self.python, "-m", "venv", str(target)], "python -m venv")
        self.progress(
            3,
            steps,
            f"Installing {len(packages)} packages from images/{env.name}/{LOCK_NAME} "
            f"with {self.installer}",
        )
        if self.uv:
            # bytecode now: the users' accounts cannot write __pycache__ into the
            # environment, and without it every server start compiles from source
            argv = [self.uv, "pip", "sync", "--python", str(python), "--require-hashes"]
            argv += ["--strict", "--compile-bytecode", str(env.lock_path)]
        else:
            argv = [str(python), "-m", "pip", "install", "--require-hashes", "--no-deps"]
            argv += ["--disable-pip-version-check", "-r", str(env.lock_path)]
        self._run(argv, f"Installing the lock of {env.name!r}", self._isolated_pip_env())
        self.progress(4, steps, "Installing Shipyard's server extension (no dependencies)")
        self._install_shipyard(python, ship_digest)
        self.progress(5, steps, "Registering the kernelspec")
        self._register_kernel(env, python, digest)
        self.progress(6, steps, "Checking the environment against its lock")
        drift = compare(env, python)
        if drift:
            raise EnvironmentProblem(
                f"The new environment {env.name!r} does not match its lock:\n  "
                + "\n  ".join(drift.lines())
            )
        return self._write_marker(env, target, digest, version, ship_digest)

    def _update_shipyard(
        self, env: Environment, current: BuiltEnvironment, ship_digest: str
    ) -> BuiltEnvironment:
        self.progress(1, 2, f"{env.name}: the lock is unchanged; updating Shipyard's extension")
        self._install_shipyard(current.python, ship_digest)
        self.progress(2, 2, "Registering the kernelspec")
        self._register_kernel(env, current.python, current.digest)
        return self._write_marker(
            env, current.path, current.digest, current.python_version, ship_digest
        )

    @staticmethod
    def _isolated_pip_env() -> dict[str, str]:
        # a site-wide pip.conf (constraints, extra find-links) must not change what a
        # hash-checked lock installs
        return {"PIP_CONFIG_FILE": os.devnull, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": ""}

    def _install_shipyard(self, python: Path, ship_digest: str) -> None:
        wheel = self._shipyard_wheel(ship_digest)
        if self.uv:
            argv = [self.uv, "pip", "install", "--quiet", "--python", str(python)]
            argv += ["--no-deps", "--compile-bytecode", "--reinstall-package", SHIPYARD_DIST]
            argv.append(str(wheel))
        else:
            argv = [str(python), "-m", "pip", "install", "--quiet", "--no-deps"]
            argv += ["--force-reinstall", "--disable-pip-version-check", str(wheel)]
        self._run(argv, "Installing Shipyard's wheel", self._isolated_pip_env())

    def _register_kernel(self, env: Environment, python: Path, digest: str) -> None:
        """Install the environment's kernelspec in its own prefix, with its name and digest.

        It replaces ipykernel's generic ``python3`` there, so the launcher says
        which environment a kernel runs in, and a kernel started by any client
        (papermill included) carries SHIPYARD_ENV and SHIPYARD_ENV_DIGEST.
        """
        if not any(p.name == "ipykernel" for p in env.packages()):
            return  # e.g. the model server's runtime: no kernels
        argv = [str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"]
        argv += ["--display-name", f"Python 3 ({env.name})"]
        argv += ["--env", "SHIPYARD_ENV", env.name, "--env", "SHIPYARD_ENV_DIGEST", digest]
        self._run(argv, "Registering the kernelspec")

    def _write_marker(
        self, env: Environment, target: Path, digest: str, version: str, ship_digest: str
    ) -> BuiltEnvironment:
        data = {
            "name": env.name,
            "digest": digest,
            "python_version": version,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "installer": self.installer,
            "shipyard_version": __version__,
            "shipyard_digest": ship_digest,
            "build_format": BUILD_FORMAT,
            "lock": str(env.lock_path),
        }
        tmp = target / (MARKER_NAME + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, target / MARKER_NAME)
        built = find_built_at(env.name, target)
        assert built is not None
        return built

    def _switch(self, name: str, target: Path) -> None:
        link = self.envs_dir / name
        tmp = self.envs_dir / f".{name}.link{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target.name)
        if link.exists() and not link.is_symlink():
            shutil.rmtree(link)  # a plain folder from some other tool: replaced by the link
        os.replace(tmp, link)

    def _prune(self, name: str, keep: set) -> None:
        """Delete builds of ``name`` other than the current and the previous one.

        The previous one stays for servers that still run on it; the build
        before that has had one whole rebuild's time to be left.
        """
        for path in self.envs_dir.glob(f"{name}-*"):
            if path.is_dir() and not path.is_symlink() and path not in keep:
                if re.fullmatch(re.escape(name) + r"-[0-9a-f]{12}-[0-9a-f]{6}", path.name):
                    shutil.rmtree(path, ignore_errors=True)
