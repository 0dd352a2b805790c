"""API models of the audit service (STYLE rule 11: apart from the table).

A record is returned exactly as it was hashed (the JSON line of
``audit.jsonl``), so a client can recompute its hash; :class:`AuditRecord`
documents its fields for the OpenAPI document and the panel's types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditRecord(BaseModel):
    """One record, as stored and hashed (fields of schema record.v1 plus the chain)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    seq: int = Field(description="Position in the trail: 1, 2, 3, ...")
    timestamp: str = Field(alias="__timestamp__", description="When, ISO 8601 UTC.")
    action: str = Field(description="'<object type>.<verb>', e.g. job.create.")
    actor: str | None = Field(description="Who acted (hub user or service); null if anonymous.")
    actor_kind: str = Field(description="user, service, job, system or anonymous.")
    on_behalf_of: str | None = None
    target: str | None = Field(description="'<type>/<id or name>'.")
    owner: str | None = Field(description="The user who owns the target.")
    outcome: str = Field(description="allowed, denied or failed.")
    reason: str | None = Field(description="Why denied or failed.")
    client: str | None = Field(description="The client address.")
    source: str | None = Field(None, description="The component that wrote it.")
    details: dict[str, Any] | None = None
    prev_hash: str = Field(description="The hash of the record before it.")
    hash: str = Field(description="SHA-256 of the canonical JSON of the other fields.")


class ListRecordsQuery(BaseModel):
    """Filters of ``GET api/records`` (all optional)."""

    user: str | None = Field(None, description="Records where this user acted or owned the target.")
    action: str | None = Field(None, description="An action (job.create) or a family (job).")
    since: str | None = Field(None, description="ISO time, or an age: 30m, 2h, 7d, 4w.")
    limit: int | None = Field(None, description="At most this many records (1-1000; 100).")
    before: int | None = Field(None, description="Only records with a seq below this (paging).")


class ListRecordsResponse(BaseModel):
    """A page of records, newest first."""

    records: list[AuditRecord]
    next_before: int | None = Field(
        description="Pass as ``before`` for the next (older) page; null on the last page."
    )


class Problem(BaseModel):
    """One break in the trail."""

    where: str = Field(description="file, table or both.")
    seq: int | None
    kind: str = Field(description="edited, deleted, inserted, reordered, mismatch or malformed.")
    message: str


class VerifyResponse(BaseModel):
    """What ``GET api/verify`` found."""

    ok: bool
    file_records: int
    table_records: int
    first_seq: int | None
    last_seq: int | None
    problems: list[Problem]


class ErrorResponse(BaseModel):
    """Every error: ``message`` says what to fix."""

    status: int
    message: str
