"""Domain errors of the secrets service: the shared ones, each carrying its HTTP status.

Re-exported from :mod:`hub_ext.services.common.errors` so that the service's
modules name one place; :class:`NotFound` is also what another user's secret
looks like (SECURITY rule 3).
"""

from __future__ import annotations

from ..common.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    TooLarge,
    Unavailable,
)

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "ServiceError",
    "TooLarge",
    "Unavailable",
]
