"""`make up` installs what the platform needs and nothing more, and says what it does.

The check runs make's dry run (``make -n``) in a fresh copy of the checkout's
tracked files with no virtual environment, which is what a new machine's
``make up`` would execute; ``make test`` is checked the same way.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The checkout's tracked files (as they are now) in a new folder: a fresh clone."""
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.fail("make and git are needed (apt-get install -y make git)")
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "Makefile", "pyproject.toml", "labextension"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    clone = tmp_path_factory.mktemp("fresh-clone")
    for name in filter(None, tracked):
        source, target = ROOT / name.decode(), clone / name.decode()
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return clone


def dry_run(clone: Path, target: str) -> str:
    # as a newcomer's shell runs it: not as a sub-make of `make test`, whose MAKEFLAGS
    # and MAKELEVEL would add "Entering directory" lines and pass its own options
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "-n", target], cwd=clone, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_up_installs_only_what_the_platform_needs(fresh_clone):
    commands = dry_run(fresh_clone, "up")
    assert "pip install --progress-bar off -e ." in commands
    assert "configurable-http-proxy" in commands
    assert commands.rstrip().endswith(".venv/bin/shipyard up")
    for test_only in ("[test]", "chromium", "slapd", "install -y -q", "playwright"):
        assert test_only not in commands, f"`make up` must not install {test_only}"


def test_make_up_shows_each_step_and_its_time(fresh_clone):
    commands = dry_run(fresh_clone, "up")
    steps = [f"[{n}/4]" for n in range(1, 5)]
    positions = [commands.find(step) for step in steps]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), commands
    assert commands.count("done in") == 4, "each step prints how long it took"
    assert "--quiet -e" not in commands, "no minutes of silence while pip installs"


def test_make_test_installs_the_test_tools(fresh_clone):
    commands = dry_run(fresh_clone, "test")
    assert "-e '.[test]'" in commands
    # apt-get waits for another apt or dpkg's lock rather than failing at once
    apt = "apt-get -o DPkg::Lock::Timeout=600"
    assert f"{apt} install -y -q chromium" in commands
    assert f"{apt} install -y -q slapd" in commands
    assert commands.rstrip().endswith("python -m tests.run")
