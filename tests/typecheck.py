"""mypy over hub_ext and server_ext, held to a committed baseline that may only shrink.

Usage::

    python -m tests.typecheck            # check; exit 1 on a new error or a stale baseline
    python -m tests.typecheck --update   # write the baseline anew (after fixing errors)

The settings are pyproject.toml's ``[tool.mypy]``. The baseline
(``tests/mypy-baseline.txt``) lists the errors the code had when the checker came in, one
line each, as ``path: [code] message`` without the line number, so that editing a file
does not move its known errors; a count before a line says how often it occurs. A check
fails on any error the baseline does not hold (fix it, or, for an error the checker is
wrong about, a ``# type: ignore[code]`` with the reason) and on baseline lines that no
longer occur (run ``--update`` so the baseline shrinks with the fix).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "tests" / "mypy-baseline.txt"
PACKAGES = ("hub_ext", "server_ext")
HEADER = (
    "# mypy's errors in hub_ext and server_ext that predate the checker: may only shrink.\n"
    "# Regenerate with `python -m tests.typecheck --update`; see tests/typecheck.py.\n"
)


class Finding:
    """One error mypy reported: where it is, and the line-free key the baseline keeps."""

    def __init__(self, record: dict):
        self.path = record["file"]
        self.line = record["line"]
        self.code = record.get("code") or "misc"
        self.message = record["message"]

    @property
    def key(self) -> str:
        return f"{self.path}: [{self.code}] {self.message}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.code}] {self.message}"


def run_mypy() -> list[Finding]:
    """The errors of one mypy run over :data:`PACKAGES` (notes and hints left out)."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--output", "json", *PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        raise RuntimeError(f"mypy failed to run:\n{done.stdout}\n{done.stderr}")
    findings = []
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("severity") == "error":
            findings.append(Finding(record))
    return findings


def read_baseline(path: Path = BASELINE) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        count, _, key = line.partition(" ")
        counts[key] += int(count)
    return counts


def write_baseline(findings: list[Finding], path: Path = BASELINE) -> None:
    counts = Counter(f.key for f in findings)
    lines = [f"{n} {key}" for key, n in sorted(counts.items())]
    path.write_text(HEADER + "\n".join(lines) + ("\n" if lines else ""))


def compare(findings: list[Finding], baseline: Counter[str]) -> tuple[list[Finding], list[str]]:
    """The findings the baseline does not hold, and the baseline lines no longer found."""
    budget = Counter(baseline)
    new = []
    for finding in findings:
        if budget[finding.key] > 0:
            budget[finding.key] -= 1
        else:
            new.append(finding)
    gone = [f"{n} {key}" for key, n in sorted(budget.items()) if n > 0]
    return new, gone


def report(new: list[Finding], gone: list[str]) -> str:
    parts = []
    if new:
        parts.append(
            f"{len(new)} type error(s) that tests/mypy-baseline.txt does not hold; fix them "
            "(or, where mypy is wrong, `# type: ignore[code]` with the reason):\n"
            + "\n".join(f"  {f}" for f in new)
        )
    if gone:
        parts.append(
            f"{len(gone)} baseline line(s) no longer occur: the baseline only shrinks, so "
            "run `python -m tests.typecheck --update` and commit it:\n"
            + "\n".join(f"  {g}" for g in gone)
        )
    return "\n\n".join(parts)


def main(argv: list[str]) -> int:
    findings = run_mypy()
    if "--update" in argv:
        write_baseline(findings)
        print(f"wrote {BASELINE.relative_to(REPO)}: {len(findings)} error(s)")
        return 0
    new, gone = compare(findings, read_baseline())
    if new or gone:
        print(report(new, gone))
        return 1
    print(f"mypy: no error beyond the baseline's {len(findings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
