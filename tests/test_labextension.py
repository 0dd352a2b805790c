"""The JupyterLab extension (labextension/): its unit tests, its build, and JupyterLab seeing it.

The TypeScript unit tests (vitest, labextension/src/__tests__) run here so that CI runs them
with the Python suite; a failure prints their output. The build is `make labextension`'s
(`make install` runs it whenever the extension's sources change); the venv's JupyterLab must
list it enabled, as a user's JupyterLab lists the copy the wheel installs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub_ext import __version__

from .hubtools import REPO

LABEXT = REPO / "labextension"
BUILT = REPO / "server_ext" / "labextension"
#: The venv running the tests: its jlpm (JupyterLab's yarn) and its jupyter.
BIN = Path(sys.executable).parent
NAME = "shipyard-jupyterlab"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CI"] = "1"  # vitest: no watch mode, no interactive output
    env.pop("NODE_OPTIONS", None)
    return env


def _jlpm() -> str:
    jlpm = shutil.which("jlpm", path=str(BIN)) or shutil.which("jlpm")
    if jlpm is None:
        pytest.fail("jlpm (JupyterLab's yarn) is missing: install jupyterlab into the venv")
    return jlpm


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - fixed argv
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def test_js_unit_tests_pass():
    if shutil.which("node") is None:
        pytest.fail("Node.js is missing: apt-get install -y nodejs npm")
    if not (LABEXT / "node_modules" / ".bin" / "vitest").exists():
        # `make install` installs them; a fresh checkout needs the registry once
        install = _run([_jlpm(), "install"], LABEXT, 900)
        assert install.returncode == 0, f"jlpm install failed:\n{install.stdout}\n{install.stderr}"
    proc = _run([_jlpm(), "test"], LABEXT, 600)
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"the extension's unit tests failed:\n{output}"
    assert " passed" in output and " failed" not in output, output
    # vitest strips types without checking them: the specs' fixtures must still match the
    # generated API types, or a changed model goes unnoticed in the tests that use it
    check = _run([_jlpm(), "typecheck"], LABEXT, 600)
    assert check.returncode == 0, f"the extension's tests do not type-check:\n{check.stdout}"


def test_extension_version_is_shipyards():
    package = json.loads((LABEXT / "package.json").read_text())
    assert package["name"] == NAME
    assert package["version"] == __version__, (
        "hub_ext.__version__ comes from labextension/package.json through the build's "
        "hub_ext/_version.py: reinstall (make install) after changing the version"
    )
    assert package["jupyterlab"]["outputDir"] == "../server_ext/labextension"


def test_built_extension_is_listed_enabled():
    built = BUILT / "package.json"
    assert built.is_file(), f"{built} is missing: run `make labextension` (or `make install`)"
    data = json.loads(built.read_text())
    assert data["name"] == NAME
    load = data["jupyterlab"]["_build"]["load"]
    assert (BUILT / load).is_file(), f"the build's entry point {load} is missing: rebuild it"
    assert (BUILT / "static" / "style.js").is_file()

    jupyter = BIN / "jupyter"
    proc = _run([str(jupyter), "labextension", "list"], REPO, 120)
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    lines = [line for line in output.splitlines() if NAME in line]
    assert lines, f"{NAME} is not installed in {BIN.parent}: run `make labextension`\n{output}"
    assert any("enabled" in line and "OK" in line for line in lines), output
