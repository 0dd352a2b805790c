"""A JSON handler base for hub services: the hub's identity, one error translator.

One contract for every service's handlers, without any service's errors or
core in it, so no service imports another service's package:

- JSON in and out, ``no-store`` and a frame-ancestors CSP on every answer;
- authentication is the hub's (HubOAuth: ``Authorization: token ...`` or the
  hub's cookie); a request without either gets a JSON 401, never a redirect;
- errors are translated in one place (STYLE rule 16): a
  :class:`~.errors.ServiceError` carries its status, pydantic's
  ``ValidationError`` is a 400 listing each bad field, anything else a 500
  whose traceback is only logged;
- request bodies are never logged (they may hold a secret value);
- a request body is streamed in (:func:`tornado.web.stream_request_body`) and kept
  up to the service's limit (:attr:`ServiceHandler.max_body_bytes`); what is over it
  is read and thrown away, up to the discard bound (the application's
  ``max_discard_bytes`` setting, :data:`MAX_DISCARD_BYTES` by default), and the
  handler answers as it would anyway, :meth:`~ServiceHandler.json_body` with the
  JSON 413. Closing the connection at the limit, which tornado's ``max_body_size``
  does, loses that answer behind the hub's proxy: configurable-http-proxy sends a
  body without waiting for ``Expect: 100-continue`` and turns a connection closed
  under it into the hub's HTML 503 page (issue #14, point 2). A ``Content-Length``
  over the discard bound is answered 413 at once and its connection closed; a
  chunked body that grows past it is cut off;
- every JSON body and query string is checked for its shape before anything
  walks it (:func:`check_json`): size, nesting depth, no ``NaN``/``Infinity``
  (not JSON), no lone surrogate that the database could not store; a body or
  query past a limit is a 400 (413 for the byte size), never a
  ``RecursionError`` or ``TypeError`` deep inside a service (issue #14, point 3);
- a method a route does not implement is a 405 with the ``Allow`` header
  listing those it does (RFC 9110, section 15.5.6), also one tornado does not
  know (``QUERY``), and only once the body has come, as every other answer;
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
from tornado.concurrent import Future

from . import audit as audit_trail
from .errors import Invalid, ServiceError, TooLarge
from .hubapi import Caller

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
#: Largest request body read (and thrown away past the service's limit) so that a refusal
#: reaches the client; the application's ``max_discard_bytes`` setting, when it has one,
#: replaces it (:func:`.web.listen`). Reading costs bandwidth, never memory.
MAX_DISCARD_BYTES = 128 * 1024**2
#: What ``request.method`` reads, until the body has come, for a method no route may
#: implement (``QUERY``, ``PROPFIND``): tornado then calls ``_method_not_allowed``.
_NOT_ALLOWED = "_METHOD_NOT_ALLOWED"


class EveryMethod(tuple):
    """``SUPPORTED_METHODS`` that holds every method: tornado refuses any other method
    before the body has come (closing the connection under the proxy), and the handler
    base refuses it after (:meth:`ServiceHandler.prepare`)."""

    def __contains__(self, method: object) -> bool:
        return True


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


@web.stream_request_body
class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """JSON in and out, the hub's identity, one error translator.

    The body is streamed in and, once it has all come, is ``self.request.body`` as
    tornado would have set it; empty when it was over :attr:`max_body_bytes`, which
    :meth:`json_body` answers with 413.
    """

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
    #: Bytes of the body received so far, and whether it is over :attr:`max_body_bytes`.
    _body_size = 0
    _body_over = False
    SUPPORTED_METHODS = EveryMethod(HTTP_METHODS)

    @property
    def core(self) -> Any:
        return self.settings[self.core_setting]

    def prepare(self) -> None:
        self._started = time.perf_counter()
        if self.request.method not in HTTP_METHODS:  # a 405, once the body has come
            self._method_sent = self.request.method
            self.request.method = _NOT_ALLOWED
        self._receive_body()

    def _method_not_allowed(self, *args: Any, **kwargs: Any) -> None:
        self.request.method = self._method_sent  # as sent, for the log and the audit record
        raise web.HTTPError(405)

    # -- the body, streamed

    def _receive_body(self) -> None:
        """Get ready to keep the body up to the limit and read the rest up to the bound."""
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._body_limit = self.max_body_bytes
        discard = max(self.settings.get("max_discard_bytes", MAX_DISCARD_BYTES), self._body_limit)
        length = self.request.headers.get("Content-Length", "")
        announced = int(length) if length.isdigit() else None
        self._body_over = announced is not None and announced > self._body_limit
        # the connection's own bound (``max_body_size``, checked before any handler code for
        # a body that is not streamed) closes the connection without an answer: raise it to
        # the discard bound, so that the body is read and the answer is sent
        set_max_body_size = getattr(self.request.connection, "set_max_body_size", None)
        if announced is not None and announced > discard:
            # too large even to read and drop: answered now, and tornado closes the
            # connection once the answer is written (it does so for a body not read); the
            # bound is the announced length only so that tornado does not write its own
            # bare 400 after this answer
            if set_max_body_size is not None:
                set_max_body_size(announced)
            raise TooLarge(
                f"the request is {announced} bytes, over the limit of {self._body_limit}"
            )
        if set_max_body_size is not None:
            set_max_body_size(discard)
        # tornado resolves this future when the whole body has come and only then calls the
        # method; this callback, added before tornado awaits the future, runs first
        body_future: Future[None] = self.request._body_future
        body_future.add_done_callback(self._body_received)

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:
            self._body_over = True
        if self._body_over:
            self._chunks.clear()  # never kept: read only so that the answer reaches the client
        else:
            self._chunks.append(chunk)

    def _body_received(self, future: Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the client went away
        self.request.body = b"" if self._body_over else b"".join(self._chunks)
        self._chunks = []

    def on_finish(self) -> None:
        if self.request_counter is not None:
            route = getattr(self, "route_name", type(self).__name__)
            self.request_counter.labels(route, self.request.method, str(self.get_status())).inc()
        if not hasattr(self, "path_args"):  # refused by tornado before routing
            self.path_args, self.path_kwargs = [], {}
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
        """The request body, parsed and checked (:func:`check_json`); ``{}`` when empty.

        Raises
        ------
        TooLarge
            The body was over :attr:`max_body_bytes` (it was read and thrown away).
        Invalid
            The body is not JSON, or not JSON a service can walk.
        """
        size = max(self._body_size, len(self.request.body))
        if self._body_over or size > self.max_body_bytes:
            raise TooLarge(f"the request is {size} bytes, over the limit of {self.max_body_bytes}")
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


class UserServiceHandler(ServiceHandler):
    """A :class:`ServiceHandler` whose callers are hub users, known with their groups.

    The scheduler's and the deployer's handlers build on it: a caller that is not
    a hub user (a service's token) is a 403 with :attr:`non_user_message`; the core
    (``core_setting``) answers ``groups_of`` and bounds request bodies
    (``max_request_bytes``). The hub services the app's ``monitors`` setting
    names may read (GET) as an admin would, and change nothing.
    """

    #: The 403 answer to a caller that is not a hub user (a service).
    non_user_message = "Only hub users may do this; services cannot."

    @property
    def max_body_bytes(self) -> int:  # type: ignore[override]
        return self.core.max_request_bytes

    async def caller(self) -> Caller:
        """The hub user making the request; a JSON 401 without a login."""
        user = self.hub_identity()
        if user.get("kind", "user") != "user":
            if user.get("name") in self.settings.get("monitors", ()) and self.request.method in (
                "GET",
                "HEAD",
            ):
                # a monitoring service (the alerts service) reads everyone's state as an
                # admin would, and may change nothing; the app's ``monitors`` trait names it
                return Caller(name=user["name"], groups=(), admin=True)
            raise web.HTTPError(403, self.non_user_message)
        groups = await self.core.groups_of(user["name"], user.get("groups"))
        return Caller(name=user["name"], groups=tuple(groups), admin=bool(user.get("admin")))
