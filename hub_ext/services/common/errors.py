"""Domain errors that carry the HTTP status a handler answers with, for any service.

A service's core raises these (or its own subclasses) and nothing else for
expected failures, so each service needs one error translator
(:class:`~.handlers.ServiceHandler.write_error`; STYLE rule 16) instead of an
``except`` ladder per verb. Anything else is a bug: a 500 with a logged
traceback. The scheduler keeps its own ``SchedulerError`` family (subclasses of
these); the deployer and the secrets service use these.

:class:`NotFound` is also what another user's object looks like (SECURITY
rule 3): its message names only what the caller sent, so a missing object and
a hidden one answer with the same body.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class of a service's expected errors.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it. Shown to the caller as is,
        so it never contains secrets or other users' data.

    Attributes
    ----------
    status : int
        The HTTP status code the service answers with.
    """

    status: int = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(ServiceError):
    """The request is malformed or a value is not allowed."""

    status = 400


class Forbidden(ServiceError):
    """The caller is known but may not do this."""

    status = 403


class NotFound(ServiceError):
    """The object does not exist, or the caller may not see it."""

    status = 404


class Conflict(ServiceError):
    """The object's state forbids the operation."""

    status = 409


class TooLarge(ServiceError):
    """The request body, or a value in it, is over a size limit."""

    status = 413


class Unavailable(ServiceError):
    """A backend the service depends on (a database, the Kubernetes API) does not answer."""

    status = 503
