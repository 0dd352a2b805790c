"""API models every service answers with the same shape.

The scheduler's and the deployer's error answers were one model, kept in the
scheduler's ``api`` module and imported by the deployer; it lives here so
neither service imports the other (ARCHITECTURE: services share a kit, not
each other).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error: ``message`` says what to fix; ``errors`` lists each bad field (400)."""

    status: int
    message: str
    errors: list[dict[str, Any]] = Field(default_factory=list)
