"""Domain errors of the scheduler, each carrying the HTTP status a handler answers with.

The store raises these and nothing else for expected failures, so the service
needs one error translator (STYLE rule 16: JupyterHub ``APIHandler.write_error``,
MLflow ``catch_mlflow_exception``) instead of an ``except`` ladder per verb.
Anything that is not a :class:`SchedulerError` is a bug and becomes a 500
with a logged traceback.

:class:`NotFound` is also what another user's job looks like (SECURITY rule
3): its message names only the id the caller sent, so a missing job and a
hidden one answer with the same body.
"""

from __future__ import annotations

from ..common.errors import ServiceError


class SchedulerError(ServiceError):
    """Base class of the scheduler's expected errors (one family with every service's).

    Parameters
    ----------
    message : str
        What went wrong and, where possible, what to do about it. Shown to the
        user as is, so it never contains secrets or other users' data.

    Attributes
    ----------
    status : int
        The HTTP status code the service answers with.
    """

    status: int = 500


class Invalid(SchedulerError):
    """The request is malformed: a bad value that no model validation could catch."""

    status = 400


class Forbidden(SchedulerError):
    """The caller may see the object but not do this to it (a group share is read-only)."""

    status = 403


class NotFound(SchedulerError):
    """The object does not exist, or the caller may not see it."""

    status = 404


class Conflict(SchedulerError):
    """The object's state forbids the operation (a run in progress, a stale version)."""

    status = 409
