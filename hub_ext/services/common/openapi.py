"""The OpenAPI 3.1 builder both services use for their documents.

Shared because the scheduler's and the deployer's documents are built the same
way (STYLE rule 18: one source for the REST schema, the pydantic models the
handlers parse); each service keeps only its table of operations, its title and
description, and the few points where its API differs (error codes, which
request bodies are optional).

An operation is a dict, keyed by ``(path, method)``:

- ``summary``: the operation's summary, also the description of its answer;
- ``params`` and ``query``: lists of parameter objects (``query`` follows
  ``params``);
- ``request`` and ``response``: pydantic models of the JSON bodies;
- ``raw``: instead of ``response``, ``"object"`` (any JSON object), a media
  type (a JSON object for ``+json`` types, else a string), or a tuple of media
  types when the answer's type depends on the request (a run's output);
- ``status``: the success status (200 by default);
- ``auth``: False for routes without a hub login.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hub_ext import __version__

#: Error statuses every operation documents, unless a service names others.
ERROR_CODES = ("400", "401", "403", "404", "409")

#: How a client authenticates: a hub API token in the Authorization header.
HUB_TOKEN_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": "'token <hub API token>'",
}


def _always_required(method: str, op: Mapping[str, Any]) -> bool:
    return True


def build_document(
    operations: Mapping[tuple[str, str], Mapping[str, Any]],
    *,
    error_model: type[BaseModel],
    title: str,
    description: str,
    prefix: str,
    error_codes: Iterable[str] = ERROR_CODES,
    body_required: Callable[[str, Mapping[str, Any]], bool] = _always_required,
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of a service's operations.

    Parameters
    ----------
    operations : mapping of (str, str) to mapping
        ``(path under the prefix, method)`` to the operation (see the module's
        docstring), in the order the document lists them.
    error_model : type of pydantic.BaseModel
        The JSON body of every error answer.
    title : str
        The document's ``info.title``.
    description : str
        The document's ``info.description``.
    prefix : str
        The URL prefix the service is served under (``/services/<name>/``);
        the document's server URL.
    error_codes : iterable of str, optional
        The error statuses documented for every operation.
    body_required : callable, optional
        ``body_required(method, operation)``: whether the request body is
        required; by default always.

    Returns
    -------
    dict
        The document, ready to be served as JSON.
    """
    models = {error_model}
    for op in operations.values():
        models.update(m for m in (op.get("request"), op.get("response")) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    keys, schemas = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    ref = {m: keys[(m, "validation")]["$ref"] for m in ordered}
    error = {
        "description": "What went wrong and what to fix.",
        "content": {"application/json": {"schema": {"$ref": ref[error_model]}}},
    }
    codes = tuple(error_codes)
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op in operations.items():
        if "response" in op:
            ok = {
                "description": op["summary"],
                "content": {"application/json": {"schema": {"$ref": ref[op["response"]]}}},
            }
        elif "raw" in op:
            raw = op["raw"] if isinstance(op["raw"], tuple) else (op["raw"],)
            content = {}
            for media in ("application/json" if m == "object" else m for m in raw):
                json_like = media.endswith("/json") or media.endswith("+json")
                content[media] = {"schema": {"type": "object" if json_like else "string"}}
            ok = {"description": op["summary"], "content": content}
        else:
            ok = {"description": op["summary"]}
        responses = {str(op.get("status", 200)): ok}
        for code in codes:
            responses[code] = error
        operation: dict[str, Any] = {
            "operationId": f"{method}_{path.replace('/', '_').replace('{', '').replace('}', '')}",
            "summary": op["summary"],
            "parameters": op.get("params", []) + op.get("query", []),
            "responses": responses,
        }
        if "request" in op:
            operation["requestBody"] = {
                "required": body_required(method, op),
                "content": {"application/json": {"schema": {"$ref": ref[op["request"]]}}},
            }
        if op.get("auth", True) is False:
            operation["security"] = []
        paths.setdefault(f"/{path}", {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "servers": [{"url": prefix.rstrip("/")}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"hubToken": dict(HUB_TOKEN_SCHEME)},
        },
        "security": [{"hubToken": []}],
        "paths": paths,
    }
