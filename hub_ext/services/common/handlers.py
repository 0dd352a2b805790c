"""A JSON handler base for hub services: the hub's identity, one error translator.

The same contract as the scheduler's handler base (which the deployer reuses),
without any service's errors or core in it, so a newer service (secrets) can
build on it without importing another service's package:

- JSON in and out, ``no-store`` and a frame-ancestors CSP on every answer;
- authentication is the hub's (HubOAuth: ``Authorization: token ...`` or the
  hub's cookie); a request without either gets a JSON 401, never a redirect;
- errors are translated in one place (STYLE rule 16): a
  :class:`~.errors.ServiceError` carries its status, pydantic's
  ``ValidationError`` is a 400 listing each bad field, anything else a 500
  whose traceback is only logged;
- request bodies are never logged (they may hold a secret value);
- every JSON body and query string is checked for its shape before anything
  walks it (:func:`check_json`): size, nesting depth, no ``NaN``/``Infinity``
  (not JSON), no lone surrogate that the database could not store; a body or
  query past a limit is a 400 (413 for the byte size), never a
  ``RecursionError`` or ``TypeError`` deep inside a service (issue #14, point 3);
- a method a route does not implement is a 405 with the ``Allow`` header
  listing those it does (RFC 9110, section 15.5.6);
- what a route does is recorded in the audit trail from data on the handler
  (``audit_actions``, ``audit_target``: :mod:`.audit`), once the outcome is known.

Every service's handlers build on it (scheduler, deployer, secrets, audit). A
service subclasses it, sets :attr:`service_name`, :attr:`request_counter`
and :attr:`core_setting`, and mixes in :mod:`.web`'s routes.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated
from pydantic import BaseModel, ValidationError
from tornado import web

from . import audit as audit_trail
from .errors import Invalid, ServiceError, TooLarge

log = logging.getLogger("shipyard.services")

#: Deepest nesting of arrays and objects a request body may have. Far beyond any real
#: request (a notebook is 5 levels deep, parameters at most 32), and far below Python's
#: recursion limit, so no code that walks a body recursively can overflow.
MAX_JSON_DEPTH = 64
#: Most query arguments one request may carry, and the longest value of one.
MAX_QUERY_ARGUMENTS = 32
MAX_QUERY_VALUE = 4096
#: The methods a route may implement, in the order ``Allow`` lists them.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _not_json_constant(name: str) -> Any:
    raise Invalid(f"the request body holds {name}, which is not JSON: send a number or null")


def check_json(value: Any, max_depth: int = MAX_JSON_DEPTH, what: str = "the request body") -> Any:
    """Return ``value`` (parsed JSON) when every part of it is one a service can walk.

    Iterative, so a body nested deeper than Python's recursion limit is refused here
    instead of crashing whatever walks it next; strings (and keys) must be valid
    Unicode (a lone surrogate from ``"\\ud800"`` cannot be stored or sent on).

    Raises
    ------
    Invalid
        Nested deeper than ``max_depth``, or a string that is not valid Unicode.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node, what)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise Invalid(
                f"{what} nests arrays and objects deeper than {max_depth} levels: flatten it"
            )
        if isinstance(node, dict):
            for key, item in node.items():
                _check_text(key, what)
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node)
    return value


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(
            f"{what} holds a string that is not valid Unicode (a lone surrogate such as "
            "\\ud800): send UTF-8 text"
        ) from None


def error_list(error: ValidationError) -> list[dict[str, Any]]:
    """Each bad field of ``error``: ``{"field", "message"}``, without the input sent.

    The input is left out on purpose: it may be a secret value.
    """
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in error.errors(include_url=False, include_input=False, include_context=False)
    ]


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """JSON in and out, the hub's identity, one error translator."""

    #: Named in 500 answers and in the log.
    service_name = "service"
    #: A prometheus Counter labelled (route, method, status); None counts nothing.
    request_counter: Any = None
    #: The application setting that holds the service's core.
    core_setting = "core"
    #: Largest request body read, in bytes.
    max_body_bytes = 1024**2
    #: Audited methods and their actions, and the target's form (:mod:`.audit`).
    audit_actions: dict[str, audit_trail.Action] = {}
    audit_target = ""

    @property
    def core(self) -> Any:
        return self.settings[self.core_setting]

    def prepare(self) -> None:
        self._started = time.perf_counter()

    def on_finish(self) -> None:
        if self.request_counter is not None:
            route = getattr(self, "route_name", type(self).__name__)
            self.request_counter.labels(route, self.request.method, str(self.get_status())).inc()
        if not hasattr(self, "path_args"):  # refused before routing: a form body tornado
            self.path_args, self.path_kwargs = [], {}  # could not parse (multipart, no boundary)
        audit_trail.record(self)

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")

    def check_xsrf_cookie(self) -> None:
        # Token requests need no XSRF check; HubOAuth refuses a cookie-authenticated
        # write without the XSRF token itself.
        return

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        errors: list[dict[str, Any]] = []
        if isinstance(error, ServiceError):
            message = error.message
        elif isinstance(error, ValidationError):
            errors = error_list(error)
            message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        elif isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif status_code >= 500:
            message = (
                f"Internal error in the {self.service_name} service; "
                "the admin finds the details in its log."
            )
        else:
            message = self._reason
        self.audit_reason = message
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"status": status_code, "message": message, "errors": errors}))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ServiceError):
            log.info("%s %s: %s %s", self.request.method, self.request.path, typ.__name__, value)
            return
        if isinstance(value, ValidationError):
            fields = ", ".join(e["field"] for e in error_list(value))
            log.info("%s %s: invalid %s", self.request.method, self.request.path, fields)
            return
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            log.info("%s %s: %s", self.request.method, self.request.path, value.log_message)
            return
        log.error(
            "Uncaught error in %s %s\n%s",
            self.request.method,
            self.request.path,
            "".join(traceback.format_exception(typ, value, tb)),
        )

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ServiceError | ValidationError):
            status = e.status if isinstance(e, ServiceError) else 400
            self.log_exception(type(e), e, e.__traceback__)
            self.send_error(status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The methods this route implements (what a 405's ``Allow`` header lists)."""
        return [
            m
            for m in HTTP_METHODS
            if getattr(cls, m.lower(), None) is not getattr(web.RequestHandler, m.lower(), None)
        ]

    # -- identity

    def hub_identity(self) -> dict[str, Any]:
        """The hub model of the caller (a user or a service); a JSON 401 without a login."""
        model = self.current_user
        if not model:
            raise web.HTTPError(
                401,
                "A hub login is needed: send 'Authorization: token <hub API token>' (in a "
                "Shipyard server, $JUPYTERHUB_API_TOKEN) or log in to the hub.",
            )
        return model

    @property
    def client_address(self) -> str | None:
        return self.request.remote_ip

    # -- bodies

    def json_body(self) -> Any:
        if len(self.request.body) > self.max_body_bytes:
            raise TooLarge(
                f"the request is {len(self.request.body)} bytes, over the limit of "
                f"{self.max_body_bytes}"
            )
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body, parse_constant=_not_json_constant)
        except RecursionError:
            raise Invalid(
                f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} "
                "levels: flatten it"
            ) from None
        except (ValueError, UnicodeDecodeError):
            raise Invalid("the request body is not JSON") from None
        return check_json(body)

    def parse(self, model: type[BaseModel]) -> Any:
        body = self.json_body()
        if not isinstance(body, dict):
            raise Invalid("the request body must be a JSON object")
        return model.model_validate(body)

    def query_arguments(self) -> dict[str, str]:
        """The query arguments, the last of each, checked for number, size and Unicode.

        As sent: tornado's ``get_query_argument`` would turn control characters into
        spaces and strip them, so ``?owner=%18`` would pass for no owner at all.
        """
        if len(self.request.query_arguments) > MAX_QUERY_ARGUMENTS:
            raise Invalid(f"the query has more than {MAX_QUERY_ARGUMENTS} arguments")
        args = {}
        for name, values in self.request.query_arguments.items():
            value = self.decode_argument(values[-1], name=name)
            if len(name) > MAX_QUERY_VALUE or len(value) > MAX_QUERY_VALUE:
                raise Invalid(f"a query argument is longer than {MAX_QUERY_VALUE} characters")
            check_json([name, value], what="the query")
            args[name] = value
        return args

    def query(self, model: type[BaseModel], **fixed: Any) -> Any:
        """The query arguments (the last of each), and ``fixed`` values, validated as ``model``."""
        return model.model_validate({**self.query_arguments(), **fixed})

    def send(self, value: Any, status: int = 200) -> None:
        self.audit_result = value  # the audit record takes the owner and id from it
        self.set_status(status)
        if isinstance(value, BaseModel):  # by alias: a field may be named as on the wire
            self.finish(value.model_dump_json(by_alias=True))
        else:
            self.finish(json.dumps(value, default=str))

    def no_content(self) -> None:
        """Finish with a 204 and no body."""
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()
