"""Checking the trail: the file, the table, and their agreement.

:func:`verify` reads every record (the dated archives and ``audit.jsonl``, in
order; the table by ``seq``) and reports each break as a :class:`Problem`
that names the record and what is wrong with it:

- **edited**: a record's hash is not the SHA-256 of its contents, or (in the
  table) a query column says something else than the stored record;
- **deleted**: a gap in ``seq``, or a first record that is neither the
  genesis record nor an anchor written by retention;
- **inserted**: a ``seq`` that appears twice, or a record whose ``prev_hash``
  is not the hash of the record before it;
- **reordered**: a record that comes after one with a higher ``seq``;
- **mismatch**: the file and the table hold different records for a ``seq``,
  or one holds a record the other lacks;
- **malformed**: a line that is not a JSON record.

Checks work by ``seq`` rather than by position, so a swap of two lines is
reported as a reorder of those two, not as a cascade of broken links.
Deleting the newest records of the file alone is found by comparing with the
table (and the other way round); deleting them from both, with nothing
shipped elsewhere, is the one change a hash chain cannot show.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .chain import GENESIS, record_hash
from .db import make_engine, upgrade
from .orm import AuditAnchor, AuditRecord
from .settings import AuditSettings
from .writer import archive_paths, parse_time

#: Query columns of the table and the record field each must equal.
COLUMNS = ("action", "actor", "owner", "target", "outcome", "prev_hash", "hash")


@dataclass
class Problem:
    """One break in the trail."""

    where: str  # "file", "table" or "both"
    seq: int | None
    kind: str  # edited, deleted, inserted, reordered, mismatch, malformed
    message: str

    def __str__(self) -> str:
        at = f"seq {self.seq}" if self.seq is not None else "-"
        return f"{self.where}: {at}: {self.kind}: {self.message}"


@dataclass
class Report:
    """What :func:`verify` found."""

    file_records: int = 0
    table_records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "file_records": self.file_records,
            "table_records": self.table_records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "problems": [asdict(p) for p in self.problems],
        }


def read_file_records(directory: Path, report: Report) -> list[dict[str, Any]]:
    """Every record of the archives and the current file, in file order."""
    records = []
    for path in [*archive_paths(directory), directory / "audit.jsonl"]:
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    int(record["seq"])
                except (ValueError, KeyError, TypeError):
                    report.problems.append(
                        Problem(
                            "file", None, "malformed", f"{path.name} line {number} is not a record"
                        )
                    )
                    continue
                records.append(record)
    return records


def _anchors(records: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """``(seq, prev_hash)`` pairs that retention declared as the start of the kept trail."""
    found = set()
    for r in records:
        d = r.get("details") or {}
        if r.get("action") == "audit.retention" and "first_seq" in d:
            found.add((int(d["first_seq"]), str(d.get("first_prev_hash"))))
    return found


def check_chain(
    records: list[dict[str, Any]],
    where: str,
    anchors: set[tuple[int, str]],
) -> tuple[list[Problem], dict[int, dict[str, Any]]]:
    """The problems of one sequence of records (in stored order), and the records by seq.

    Where a ``seq`` appears more than once, the genuine copy is the one the
    next record links to (its hash is the next record's ``prev_hash``); the
    others are reported as inserted.
    """
    problems: list[Problem] = []
    copies: dict[int, list[dict[str, Any]]] = {}
    highest: int | None = None
    for r in records:
        seq = int(r["seq"])
        if highest is not None and seq < highest and seq not in copies:
            problems.append(Problem(where, seq, "reordered", f"it comes after seq {highest}"))
        copies.setdefault(seq, []).append(r)
        highest = seq if highest is None else max(highest, seq)
    by_seq: dict[int, dict[str, Any]] = {}
    for seq, found in copies.items():
        genuine = found[0]
        if len(found) > 1:
            linked = {r.get("prev_hash") for r in copies.get(seq + 1, [])}
            valid = [r for r in found if record_hash(r) == r.get("hash")]
            genuine = next((r for r in valid if r.get("hash") in linked), None) or (
                valid[0] if valid else found[0]
            )
            for r in found:
                if r is not genuine:
                    problems.append(
                        Problem(where, seq, "inserted", "a second record with this seq")
                    )
        if record_hash(genuine) != genuine.get("hash"):
            problems.append(Problem(where, seq, "edited", "its hash does not match its contents"))
        by_seq[seq] = genuine
    if not by_seq:
        return problems, by_seq
    first, last = min(by_seq), max(by_seq)
    head = by_seq[first]
    if (
        not (first == 1 and head.get("prev_hash") == GENESIS)
        and (
            first,
            head.get("prev_hash"),
        )
        not in anchors
    ):
        problems.append(
            Problem(
                where,
                first,
                "deleted",
                f"the records before seq {first} are missing and no audit.retention "
                "record accounts for them",
            )
        )
    missing_from = None
    for seq in range(first, last + 2):
        if seq not in by_seq and seq <= last:
            missing_from = seq if missing_from is None else missing_from
            continue
        if missing_from is not None:
            span = (
                f"seq {missing_from}"
                if missing_from == seq - 1
                else f"seqs {missing_from}-{seq - 1}"
            )
            problems.append(Problem(where, missing_from, "deleted", f"{span} missing"))
            missing_from = None
        if seq > last:
            break
        prev = by_seq.get(seq - 1)
        if prev is not None and by_seq[seq].get("prev_hash") != prev.get("hash"):
            problems.append(
                Problem(
                    where,
                    seq,
                    "inserted",
                    f"its prev_hash is not the hash of seq {seq - 1}: "
                    "a record was inserted or replaced here",
                )
            )
    return problems, by_seq


def _row_problems(row: AuditRecord) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        record = json.loads(row.record)
    except ValueError:
        return None, [Problem("table", row.seq, "malformed", "its record column is not JSON")]
    problems = []
    if record.get("seq") != row.seq:
        problems.append(
            Problem("table", row.seq, "edited", f"its record says seq {record.get('seq')}")
        )
        record = dict(record, seq=row.seq)
    for column in COLUMNS:
        if getattr(row, column) != record.get(column):
            problems.append(
                Problem("table", row.seq, "edited", f"column {column} differs from the record")
            )
    try:
        same_time = parse_time(record["__timestamp__"]) == _aware(row.time)
    except (KeyError, ValueError, TypeError):
        same_time = False
    if not same_time:
        problems.append(Problem("table", row.seq, "edited", "column time differs from the record"))
    return record, problems


def _aware(value):
    from datetime import timezone

    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def read_table(settings: AuditSettings, report: Report):
    """The table's records in ``seq`` order and its anchor row (or None)."""
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as session:
            rows = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
            anchor = session.scalars(select(AuditAnchor)).first()
            records = []
            for row in rows:
                record, problems = _row_problems(row)
                report.problems.extend(problems)
                if record is not None:
                    records.append(record)
            anchor_pair = (anchor.seq, anchor.prev_hash) if anchor else None
    finally:
        engine.dispose()
    return records, anchor_pair


def verify(settings: AuditSettings) -> Report:
    """Check the file, the table and their agreement; see the module docstring."""
    report = Report()
    file_records = read_file_records(settings.path, report)
    report.file_records = len(file_records)
    anchors = _anchors(file_records)
    table_records, anchor_row = read_table(settings, report)
    report.table_records = len(table_records)
    anchors |= _anchors(table_records)
    found, in_file = check_chain(file_records, "file", anchors)
    report.problems.extend(found)
    table_anchors = set(anchors)
    if anchor_row is not None:
        table_anchors.add(anchor_row)
    found, in_table = check_chain(table_records, "table", table_anchors)
    report.problems.extend(found)
    if anchor_row is not None and anchor_row not in anchors:
        report.problems.append(
            Problem(
                "table",
                anchor_row[0],
                "edited",
                "the anchor row matches no audit.retention record",
            )
        )
    report.problems.extend(compare(in_file, in_table))
    seqs = [int(r["seq"]) for r in file_records] + [int(r["seq"]) for r in table_records]
    if seqs:
        report.first_seq, report.last_seq = min(seqs), max(seqs)
    return report


def compare(
    in_file: dict[int, dict[str, Any]], in_table: dict[int, dict[str, Any]]
) -> list[Problem]:
    """Differences between the file and the table (records by seq), over the range both keep."""
    if not in_file or not in_table:
        if in_file and not in_table:
            return [
                Problem("table", min(in_file), "mismatch", "the table is empty but the file is not")
            ]
        if in_table and not in_file:
            return [
                Problem("file", min(in_table), "mismatch", "the file is empty but the table is not")
            ]
        return []
    start = max(min(in_file), min(in_table))
    problems = []
    for seq in sorted(set(in_file) | set(in_table)):
        if seq < start:
            continue
        f, t = in_file.get(seq), in_table.get(seq)
        if f is None:
            problems.append(Problem("file", seq, "mismatch", "in the table but not in the file"))
        elif t is None:
            problems.append(Problem("table", seq, "mismatch", "in the file but not in the table"))
        elif f != t:
            problems.append(
                Problem("both", seq, "mismatch", "the file and the table hold different records")
            )
    return problems
