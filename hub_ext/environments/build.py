"""Building an environment's lock into a virtual environment (``shipyard env build``).

See :mod:`.catalog` for the layout of the environments dir and what a build
guarantees (a new lock is built beside the old one, the link switched when
it is complete).
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hub_ext import __version__
from hub_ext.environments.catalog import (
    BUILD_FORMAT,
    LOCK_NAME,
    MARKER_NAME,
    SHIPYARD_DIST,
    SOURCE_PARTS,
    BuiltEnvironment,
    Environment,
    EnvironmentProblem,
    LockedPackage,
    ProgressFn,
    _repo_root,
    default_envs_dir,
    default_python,
    find_built,
    find_built_at,
)
from hub_ext.environments.check import compare

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

    def shipyard_wheel(self) -> Path:
        """Shipyard's wheel for this checkout: what the images copy (``shipyard image build``)."""
        if self.source is None:
            raise EnvironmentProblem(
                "Shipyard's source is not here: run from a checkout or set SHIPYARD_SOURCE."
            )
        return self._shipyard_wheel(source_digest(self.source))

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
