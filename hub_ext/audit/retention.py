"""Retention: rotate the JSON-lines file by day, prune what is past retention.

The current ``audit.jsonl`` is only ever appended to. Once a day (the audit
service runs :func:`prune` every hour; ``shipyard audit prune`` runs it by
hand) the file is renamed to a dated archive,
``audit-YYYYMMDD-<first seq>.jsonl``, and writers start a new one: a rename,
so ``tail -F audit.jsonl`` and log shippers that follow by name (Fluent Bit,
Vector, Promtail) pick the new file up and every line is shipped once,
unchanged. Rejected: truncating the file in place (a shipper would lose or
resend lines) and rewriting it without the old lines (the same, and the
file would no longer be append-only).

Archives whose newest record is older than ``retention_days`` are deleted,
oldest first, and the same records are deleted from the table (by ``seq``,
so the file and the table always keep the same range). The first kept
record's ``seq`` and ``prev_hash`` become the anchor: written in an
``audit.retention`` record (itself part of the chain, so it cannot be
forged without breaking it) and in the ``audit_anchor`` row.
``shipyard audit verify`` accepts a trail that starts at an anchor.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete

from .orm import AuditAnchor, AuditRecord
from .writer import TrailWriter, archive_paths, last_line, parse_time

log = logging.getLogger(__name__)


def _first_record(path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return json.loads(line)
    return None


def rotate(writer: TrailWriter, now: datetime) -> str | None:
    """Rename ``audit.jsonl`` to a dated archive if its first record is from before today.

    Call with the writer's lock held. Returns the archive's name, or None.
    """
    current = writer.settings.jsonl_path
    if not current.exists() or current.stat().st_size == 0:
        return None
    first = _first_record(current)
    if first is None:
        return None
    started = parse_time(first["__timestamp__"])
    if started.date() >= now.date():
        return None
    archive = current.with_name(f"audit-{started:%Y%m%d}-{int(first['seq']):012d}.jsonl")
    os.rename(current, archive)
    return archive.name


def prune(now: datetime | None = None) -> dict[str, Any]:
    """Rotate, then delete archives and rows past retention; returns what was done.

    Uses this process's writer (:func:`hub_ext.audit.get_writer`), whose lock
    it holds throughout, so the ``audit.retention`` record it appends is the
    next link after the rotation, whoever else is writing.
    """
    from . import emit, get_writer

    writer = get_writer()
    settings = writer.settings
    now = now or datetime.now(timezone.utc)
    result: dict[str, Any] = {"rotated": None, "archives_deleted": [], "rows_deleted": 0}
    with writer.locked():
        result["rotated"] = rotate(writer, now)
        if settings.retention_days <= 0:
            return result
        cutoff = now - timedelta(days=settings.retention_days)
        archives = archive_paths(settings.path)
        for path in archives:
            last = last_line(path)
            newest = parse_time(json.loads(last)["__timestamp__"]) if last else None
            if newest is not None and newest >= cutoff:
                break  # keep this one and every newer one: the trail stays contiguous
            path.unlink()
            result["archives_deleted"].append(path.name)
        if not result["archives_deleted"]:
            return result
        remaining = [p for p in archive_paths(settings.path)] + [settings.jsonl_path]
        first = None
        for path in remaining:
            if path.exists():
                first = _first_record(path)
                if first is not None:
                    break
        if first is None:
            # everything was past retention: the next record anchors on the last deleted hash
            seq, prev = writer.read_head()
            first_seq, first_prev = seq + 1, prev
        else:
            first_seq, first_prev = int(first["seq"]), str(first["prev_hash"])
        with writer.engine.begin() as conn:
            deleted = conn.execute(delete(AuditRecord).where(AuditRecord.seq < first_seq))
            result["rows_deleted"] = deleted.rowcount or 0
            conn.execute(delete(AuditAnchor))
            conn.execute(
                AuditAnchor.__table__.insert().values(
                    id=1, seq=first_seq, prev_hash=first_prev, time=now
                )
            )
        emit(
            "audit.retention",
            actor="audit",
            actor_kind="system",
            target="audit/trail",
            details={
                "first_seq": first_seq,
                "first_prev_hash": first_prev,
                "cutoff": cutoff.isoformat(),
                "archives_deleted": len(result["archives_deleted"]),
                "rows_deleted": result["rows_deleted"],
            },
        )
    log.info("audit retention: %s", result)
    return result
