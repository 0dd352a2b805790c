"""The hash chain: canonical form of a record and its SHA-256.

Each record carries ``seq`` (1, 2, 3, ...), ``prev_hash`` (the ``hash`` of the
record before it; :data:`GENESIS` for the first) and ``hash``: SHA-256 over
the canonical JSON of every other field. Editing a field changes the hash;
deleting, inserting or reordering records breaks ``seq`` or ``prev_hash``.

Canonical JSON is ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8: the same bytes for the same record in
every process and on every Python, and a form anyone can recompute with
``jq -cS`` and ``sha256sum`` (JSON Canonicalization Scheme, RFC 8785, would
also fix number formatting; the records hold only strings, integers, null and
small objects of such, for which the two agree). The chain is tamper-evident,
not tamper-proof: someone who can rewrite the whole file and the table can
recompute every hash; shipping the lines to a log system as they are written
(the file is append-only) keeps a copy they cannot rewrite.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: ``prev_hash`` of the first record of a trail.
GENESIS = "0" * 64

#: Fields the writer adds; every other field of a line is the event.
CHAIN_FIELDS = ("seq", "prev_hash", "hash")


def canonical(record: dict[str, Any]) -> bytes:
    """The canonical bytes of ``record`` without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form of ``record`` (its ``hash`` field excluded)."""
    return hashlib.sha256(canonical(record)).hexdigest()


def seal(event: dict[str, Any], seq: int, prev_hash: str) -> dict[str, Any]:
    """Return ``event`` with ``seq``, ``prev_hash`` and its ``hash`` added."""
    record = dict(event, seq=seq, prev_hash=prev_hash)
    record["hash"] = record_hash(record)
    return record


def dumps_line(record: dict[str, Any]) -> str:
    """One JSON line for the file (canonical, so the line itself can be hashed)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
