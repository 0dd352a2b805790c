"""MLflow's scoring protocol: what a request's body may be, and how it becomes model input.

A small JSON body in one of the row formats, with exactly the signature's columns and
values of the signature's JSON types, takes the *fast path*: :meth:`ModelInputs.prepare`
checks its rows and puts them in signature order on the event loop (a few microseconds),
and :meth:`ModelInputs.frame` makes one DataFrame of the signature's dtypes for a whole
batch (~0.2 ms), where MLflow's parser would build one per request (~1 ms); MLflow's
schema enforcement in ``PyFuncModel.predict`` still runs on it, once per batch.
Everything else (CSV, ``params``, other shapes, tensor signatures, type mismatches for
MLflow to convert or refuse) goes through MLflow's own parsing unchanged
(:meth:`ModelInputs.parse`: ``infer_and_parse_data`` / ``parse_csv_input``), so its
answers and errors are MLflow's.

No answer other than 200 leaves the server without being a :class:`ServingError`: JSON
``{"error_code", "message"}``, never a traceback.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

#: JSON bodies up to this size are parsed on the event loop (fast path)
FAST_PARSE_BYTES = 64 * 1024

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
ROW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# JSON value checks per MLflow column type for the fast path; anything else
# (None, bytes, datetimes, arrays) goes to MLflow's own parsing.
_TYPE_CHECKS = {
    "double": lambda v: type(v) is float or type(v) is int,
    "float": lambda v: type(v) is float or type(v) is int,
    "long": lambda v: type(v) is int,
    "integer": lambda v: type(v) is int,
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
}


class ServingError(Exception):
    """An answer other than 200, with its HTTP status and JSON body.

    Parameters
    ----------
    status : int
        HTTP status.
    error_code : str
        ``error_code`` of the JSON body (MLflow's codes where MLflow has one).
    message : str
        What went wrong, for the caller.
    **extra
        More fields for the body (``error_class``).
    """

    def __init__(self, status: int, error_code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.extra = extra

    def response(self) -> Response:
        body = {"error_code": self.error_code, "message": self.message, **self.extra}
        return Response(json.dumps(body), self.status, media_type=CONTENT_TYPE_JSON)


@dataclass
class FastItem:
    """A validated request of rows in signature column order."""

    rows: list


@dataclass
class MlflowItem:
    """A request left to MLflow's parsing, on the prediction thread."""

    content_type: str
    body: Any  # bytes, or the decoded JSON object


def media_type(raw_type: str) -> str:
    """The request's content type without parameters: JSON or CSV, in UTF-8, else 415.

    Parameters
    ----------
    raw_type : str
        The ``Content-Type`` header, ``""`` when missing.
    """
    mime, _, rest = raw_type.partition(";")
    mime = mime.strip().lower()
    if mime not in (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV):
        raise ServingError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"content type must be {CONTENT_TYPE_JSON} or {CONTENT_TYPE_CSV}, "
            f"not {raw_type or 'missing'!r}",
        )
    charset = rest.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=utf8"):
        raise ServingError(415, "UNSUPPORTED_MEDIA_TYPE", "only UTF-8 bodies are accepted")
    return mime


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes: checked on ``Content-Length`` first, then as it streams.

    A larger body is 413 before any of it is parsed (or, with an honest
    ``Content-Length``, read).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ServingError(400, "BAD_REQUEST", "Content-Length is not a number") from None
        if size > limit:
            raise ServingError(
                413, "REQUEST_TOO_LARGE", f"body of {size} bytes is over the limit of {limit}"
            )
    chunks = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise ServingError(
                    413, "REQUEST_TOO_LARGE", f"body is over the limit of {limit} bytes"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise ServingError(400, "BAD_REQUEST", "client disconnected") from None
    return b"".join(chunks)


class ModelInputs:
    """What a loaded model's signature takes, and how a request's body becomes it.

    Parameters
    ----------
    metadata : mlflow.models.Model
        The loaded model's ``metadata``.
    parse_csv_input, infer_and_parse_data : callable
        MLflow's parsers (``mlflow.pyfunc.scoring_server``), passed in so that this
        module does not import MLflow: the server imports it once it listens.
    """

    def __init__(
        self,
        metadata,
        parse_csv_input: Callable[..., Any],
        infer_and_parse_data: Callable[..., Any],
    ):
        self._parse_csv_input = parse_csv_input
        self._infer_and_parse_data = infer_and_parse_data
        self.schema = metadata.get_input_schema()
        from_type_hint = getattr(metadata, "_is_signature_from_type_hint", None)
        self.type_hint = bool(from_type_hint and from_type_hint())
        #: the signature's column names, in order; the fast path is taken only when set
        self.columns: list[str] | None = None
        self._checks: list = []
        self._dtypes: list = []
        if self.schema is None or self.type_hint or self.schema.is_tensor_spec():
            return
        checks = []
        for col in self.schema.inputs:
            check = _TYPE_CHECKS.get(getattr(col.type, "name", ""))
            if check is None or col.name is None:
                return
            checks.append(check)
        self._dtypes = [
            object if getattr(col.type, "name", None) == "string" else col.type.to_numpy()
            for col in self.schema.inputs
        ]
        self.columns = list(self.schema.input_names())
        self._checks = checks

    def expected(self) -> str:
        """The signature's inputs, for error messages."""
        if self.schema is None:
            return ""
        if self.schema.is_tensor_spec():
            return f" Expected input: {self.schema}."
        cols = ", ".join(
            f"{c.name} ({getattr(c.type, 'name', c.type)}{'' if c.required else ', optional'})"
            for c in self.schema.inputs
        )
        return f" Expected columns: {cols}."

    # ------------------------------------------------------------- event loop

    def prepare(self, body: bytes, content_type: str) -> tuple[Any, int, str | None]:
        """Validate one request on the event loop: ``(item, rows, batch key)``."""
        if content_type == CONTENT_TYPE_CSV or len(body) > FAST_PARSE_BYTES:
            return MlflowItem(content_type, body), 1, None
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServingError(
                400,
                "BAD_REQUEST",
                f"Ensure that input is a valid JSON formatted string. Error: {e}",
            ) from None
        if not isinstance(doc, dict):
            raise ServingError(
                400,
                "BAD_REQUEST",
                "The input must be a JSON dictionary with exactly one of the input fields "
                f"{set(ROW_FORMATS)}. Received a {type(doc).__name__}.",
            )
        rows = self._fast_rows(doc, self.columns) if self.columns is not None else None
        if rows is None:
            return MlflowItem(content_type, doc), 1, None
        return FastItem(rows), len(rows), "rows"

    def _fast_rows(self, doc: dict, names: list[str]) -> list | None:
        """The rows of ``doc`` in the order of ``names`` (the columns), or None: off the fast path."""
        if len(doc) != 1:
            return None
        ((fmt, value),) = doc.items()
        n = len(names)
        if fmt == "dataframe_split":
            if not isinstance(value, dict) or set(value) - {"columns", "data", "index"}:
                return None
            cols, data = value.get("columns"), value.get("data")
            if not isinstance(cols, list) or not isinstance(data, list):
                return None
            if cols == names:
                rows = data
            elif len(cols) == n and set(cols) == set(names):
                order = [cols.index(c) for c in names]
                rows = []
                for row in data:
                    if not isinstance(row, list) or len(row) != n:
                        return None
                    rows.append([row[i] for i in order])
            else:
                return None
        elif fmt in ROW_FORMATS:
            if not isinstance(value, list):
                return None
            rows = []
            for rec in value:
                if not isinstance(rec, dict) or len(rec) != n:
                    return None
                try:
                    rows.append([rec[c] for c in names])
                except KeyError:
                    return None
        else:
            return None
        if not rows:
            return None
        checks = self._checks
        for row in rows:
            if not isinstance(row, list) or len(row) != n:
                return None
            for v, check in zip(row, checks, strict=True):
                if not check(v):
                    return None
        return rows

    # ------------------------------------------------------ prediction thread

    def frame(self, rows: list):
        """The fast path's rows (of one request or a batch) as one DataFrame."""
        # One numpy array per column in the signature's dtype (~0.2 ms for a batch,
        # where MLflow's parser takes ~1 ms); only values of the column's JSON type
        # reach here, and predict() still runs MLflow's schema enforcement on it.
        import numpy as np
        import pandas as pd

        return pd.DataFrame(
            {
                name: np.array([row[i] for row in rows], dtype=dtype)
                for i, (name, dtype) in enumerate(zip(self.columns, self._dtypes, strict=True))
            }
        )

    def parse(self, item: MlflowItem, enforce: bool = True) -> tuple[Any, dict | None]:
        """MLflow's own parsing, for everything off the fast path: ``(data, params)``.

        ``enforce=False`` parses without the signature (no types enforced): what the
        data-quality checks look at in a request the signature refused.
        """
        schema = self.schema if enforce else None
        if item.content_type == CONTENT_TYPE_CSV:
            try:
                text = item.body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ServingError(400, "BAD_REQUEST", f"body is not UTF-8: {e}") from None
            return self._parse_csv_input(io.StringIO(text), schema=schema), None
        doc = item.body
        if isinstance(doc, bytes):
            try:
                doc = json.loads(doc)
            except (ValueError, UnicodeDecodeError) as e:
                raise ServingError(
                    400,
                    "BAD_REQUEST",
                    f"Ensure that input is a valid JSON formatted string. Error: {e}",
                ) from None
            if not isinstance(doc, dict):
                raise ServingError(400, "BAD_REQUEST", "The input must be a JSON dictionary")
        params = doc.get("params")
        data = {k: v for k, v in doc.items() if k in ROW_FORMATS}
        if self.type_hint:
            if "inputs" not in data:
                raise ServingError(
                    400, "BAD_REQUEST", "this model takes its input under the 'inputs' key"
                )
            return data["inputs"], params
        if not data:
            raise ServingError(
                400,
                "BAD_REQUEST",
                f"The input must be a JSON dictionary with exactly one of the input fields "
                f"{set(ROW_FORMATS)}. Received fields: {sorted(doc)}.",
            )
        return self._infer_and_parse_data(data, schema), params


def split_predictions(preds, sizes: list[int]) -> list | None:
    """Cut a batch's predictions back into per-request parts, or None if they do not cut."""
    total = sum(sizes)
    try:
        if len(preds) != total:
            return None
    except TypeError:
        return None
    if hasattr(preds, "iloc"):
        slicer = preds.iloc
    elif isinstance(preds, (list, tuple)) or hasattr(preds, "shape"):
        slicer = preds
    else:  # dicts of arrays and other shapes: predict members alone
        return None
    parts, start = [], 0
    for n in sizes:
        parts.append(slicer[start : start + n])
        start += n
    return parts
