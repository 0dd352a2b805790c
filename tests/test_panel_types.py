"""The panel's generated wire types match the services' OpenAPI documents.

labextension/src/api/generated/<service>.ts are written by openapi-typescript from the
documents the scheduler, the deployer, the audit, the usage and the alerts service build from their pydantic
models (labextension/scripts/gen_types.py, ``jlpm gen:types``). A model changed without
regenerating leaves the panel typed against answers the service no longer gives: this
test regenerates into a temporary folder and fails, naming the stale file and the
command, on any difference.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .hubtools import REPO

LABEXT = REPO / "labextension"
SCRIPT = LABEXT / "scripts" / "gen_types.py"
COMMITTED = LABEXT / "src" / "api" / "generated"
COMMAND = "cd labextension && jlpm gen:types"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """The generated files as the script writes them now, in a temporary folder."""
    if shutil.which("node") is None:
        pytest.fail("Node.js is missing: apt-get install -y nodejs npm")
    if not (LABEXT / "node_modules" / "openapi-typescript").is_dir():
        pytest.fail(
            "labextension/node_modules has no openapi-typescript: run `make install` "
            "(or `jlpm install` in labextension/)"
        )
    out = tmp_path_factory.mktemp("generated")
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(SCRIPT), "--out", str(out)],
        cwd=LABEXT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{SCRIPT.name} failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def stale_files(committed: Path, regenerated: Path) -> list[str]:
    """What differs between the committed folder and a regenerated one, file by file."""
    problems = []
    names = {p.name for p in committed.glob("*.ts")} | {p.name for p in regenerated.iterdir()}
    for name in sorted(names):
        have, want = committed / name, regenerated / name
        if not want.exists():
            problems.append(f"{_shown(have)} is not generated any more: delete it")
        elif not have.exists():
            problems.append(f"{_shown(have)} is missing")
        elif have.read_text() != want.read_text():
            diff = difflib.unified_diff(
                have.read_text().splitlines(),
                want.read_text().splitlines(),
                f"{name} (committed)",
                f"{name} (from the documents)",
                lineterm="",
                n=1,
            )
            shown = "\n".join(list(diff)[:40])
            problems.append(f"{_shown(have)} is stale:\n{shown}")
    return problems


def test_generated_types_are_current(regenerated):
    problems = stale_files(COMMITTED, regenerated)
    assert not problems, (
        "the panel's wire types differ from the services' OpenAPI documents; "
        f"regenerate them with `{COMMAND}` and commit the result.\n\n" + "\n\n".join(problems)
    )


def test_each_panel_service_has_a_generated_file(regenerated):
    # the scheduler's, deployer's, audit's, usage's and alerts' answers are what the panel reads
    assert sorted(p.name for p in regenerated.iterdir()) == [
        "alerts.ts",
        "audit.ts",
        "deployer.ts",
        "scheduler.ts",
        "usage.ts",
    ]
    for path in regenerated.iterdir():
        text = path.read_text()
        assert text.startswith("/**\n * GENERATED, DO NOT EDIT"), path.name
        assert COMMAND in text.split("*/", 1)[0], path.name
        assert "export interface components {\n    schemas: {" in text, path.name


def test_a_hand_edit_is_reported_stale(regenerated, tmp_path):
    # the comparison itself: a copy changed by hand is named, with the line that changed
    copy = tmp_path / "generated"
    shutil.copytree(regenerated, copy)
    path = copy / "deployer.ts"
    path.write_text(path.read_text().replace("replicas: number;", "replicas: string;", 1))
    problems = stale_files(copy, regenerated)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path} is stale:")
    assert "-            replicas: string;" in problems[0]
    assert "+            replicas: number;" in problems[0]
