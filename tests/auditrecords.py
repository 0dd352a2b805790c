"""Reading a test hub's audit trail (the JSON-lines file) in the directory tests."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

#: Whether this checkout has the audit trail; once it does, its records are checked.
AUDITED = importlib.util.find_spec("hub_ext.audit") is not None


def all_records(data_dir: Path) -> list[dict]:
    """Every record of the hub whose data directory is ``data_dir``, oldest first."""
    path = data_dir / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def login_records(data_dir: Path, name: str | None = None) -> list[dict]:
    """The ``login.*`` records, those about the account ``name`` only when given."""
    return [
        r
        for r in all_records(data_dir)
        if r["action"].startswith("login.") and (name is None or r.get("target") == f"user/{name}")
    ]


def directory_changes(data_dir: Path, since: int, source: str) -> list[tuple]:
    """(action, target, details) of the records the directory ``source`` left after ``since``."""
    return [
        (r["action"], r["target"], r["details"])
        for r in all_records(data_dir)[since:]
        if r["actor"] == source and r["actor_kind"] == "system"
    ]
