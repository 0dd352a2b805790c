"""The import rules of the layout (``[tool.importlinter]`` in ``pyproject.toml``) hold.

hub_ext/'s folders say where code runs: services side by side over
``services/common``, ``runtime`` in the user's environment, ``profiles`` a leaf;
server_ext never imports hub-side code, and hub_ext reaches it only through its clients.
import-linter checks every contract over the whole import graph; this test runs
it as CI and ``make test`` do, and fails with its report.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The contracts pyproject.toml declares (a contract dropped from the file fails here too).
CONTRACTS = {
    "services-independent",
    "runtime-alone",
    "services-not-server-ext",
    "profiles-leaf",
    "server-ext-not-hub-side",
    "cli-uses-clients-only",
}


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("lint-imports")
    if not command.exists():
        pytest.fail(f"{command} is missing: install the test extras (make test-install)")
    return subprocess.run(
        [str(command), "--no-cache", "--no-logo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_rule_is_kept():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_each_rule_is_declared(contract):
    result = lint_imports("--contract", contract)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout, result.stdout
