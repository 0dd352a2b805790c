"""Shipyard's model server: one MLflow model behind MLflow's scoring protocol, one process per replica.

::

    python -m hub_ext.runtime.modelserver --model-uri URI --host 127.0.0.1 --port PORT
        [--name OWNER/NAME/VERSION] [--max-body-bytes 10485760] [--timeout 30]
        [--max-batch 64] [--max-batch-wait-ms 2] [--training-summary PATH] [--workers 1]

The deployer starts it as the model's owner, on the profile's environment
(``images/model-server``), so this module imports only the standard library,
starlette, uvicorn, prometheus_client, numpy, pandas and MLflow, and MLflow only
once the server listens (``import mlflow.pyfunc`` alone takes ~1.5 s): ``/health``
answers ``loading`` meanwhile. See docs/deploy-contract.md section 1.

Routes:

- ``POST /invocations``: MLflow's scoring protocol, as ``mlflow models serve``
  speaks it (``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs``, ``params``; ``application/json`` or ``text/csv``), answering
  ``{"predictions": ...}`` encoded by MLflow's own ``predictions_to_json``.
- ``GET /health`` (``ready`` 200; ``loading``, ``failed``, ``stopping`` 503),
  ``GET /ping`` and ``GET /version`` (what MLflow's ``ScoringServerClient`` calls),
  ``GET /metrics`` (Prometheus, own registry) and ``GET /stats`` (JSON for the
  deployer).

How a request goes, and why:

1. The content type must be JSON or CSV (415), the body at most
   ``--max-body-bytes``, checked on ``Content-Length`` before reading and again
   while the body streams in (413), before any parsing.
2. A small JSON body in one of the row formats, with exactly the signature's
   columns and values of the signature's JSON types, takes the *fast path*: its
   rows are checked and put in signature order on the event loop (a few
   microseconds), and batched. MLflow's parser would build a pandas DataFrame per
   request (~1 ms); here the batch's rows become one DataFrame of the signature's
   dtypes (~0.2 ms) and pass MLflow's schema enforcement in ``PyFuncModel.predict``
   once per batch.
3. Everything else (CSV, ``params``, other shapes, tensor signatures, type
   mismatches for MLflow to convert or refuse) goes through MLflow's parsing
   unchanged (``infer_and_parse_data`` / ``parse_csv_input``) on the prediction
   thread, and is predicted alone, so its answers and errors are MLflow's.
4. :class:`~.batching.AdaptiveBatcher` runs one batch at a time on a daemon
   thread, the event loop keeps accepting meanwhile. A batch whose ``predict``
   raises is retried member by member, so only the bad request fails.
5. Errors are JSON ``{"error_code", "message"}``, never a traceback (logged on
   stderr instead): a schema mismatch is 400 with the expected columns and
   types appended to MLflow's message; ``predict`` raising is 500
   ``MODEL_ERROR`` with ``error_class``. Past ``--timeout`` a request gets 504
   and the server stops: it refuses new requests (503), finishes the others
   and exits with :data:`EXIT_TIMEOUT` (75, ``EX_TEMPFAIL``), since a stuck
   ``predict`` cannot be interrupted; the deployer starts a fresh process.
   SIGTERM: uvicorn stops accepting and waits up to :data:`GRACE_SECONDS` for
   the requests in flight, then the process exits 0. A model that fails to load
   is reported by ``/health`` for :data:`FAILED_LINGER_SECONDS` before the
   process exits with :data:`EXIT_LOAD_FAILED` (3).

``--workers`` above 1 starts that many processes on one socket (uvicorn's
supervisor), each loading the model; each then batches on its own.

uvicorn uses httptools and uvloop when they are installed (``http="auto"``,
``loop="auto"``), else h11 and asyncio; the image's lock has neither yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from hub_ext.runtime.batching import AdaptiveBatcher

log = logging.getLogger("shipyard.modelserver")

#: exit status after a request timed out (``EX_TEMPFAIL``): start a fresh process
EXIT_TIMEOUT = 75
#: exit status when the model could not be loaded
EXIT_LOAD_FAILED = 3
#: seconds ``/health`` reports a failed load before the process exits
FAILED_LINGER_SECONDS = 5.0
#: seconds in-flight requests get after SIGTERM or a timeout (contract: 20 s)
GRACE_SECONDS = 20
#: JSON bodies up to this size are parsed on the event loop (fast path)
FAST_PARSE_BYTES = 64 * 1024
#: ``/stats`` window, seconds
WINDOW_SECONDS = 60

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


class RequestStats:
    """Totals and a sliding window of latencies for ``/stats``.

    Errors are 5xx answers other than 503 (loading or stopping: the deployer knows
    those states from ``/health``, and they are not the model's failures).
    """

    def __init__(self, window: float = WINDOW_SECONDS):
        self.window = window
        self.requests = 0
        self.errors = 0
        self._recent: deque[tuple[float, float, bool]] = deque(maxlen=200_000)

    def record(self, seconds: float, status: int) -> None:
        error = status >= 500 and status != 503
        self.requests += 1
        self.errors += error
        self._recent.append((time.monotonic(), seconds * 1000.0, error))

    def snapshot(self) -> dict:
        cutoff = time.monotonic() - self.window
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        latencies = sorted(r[1] for r in self._recent)

        def pct(q: float) -> float:
            if not latencies:
                return 0.0
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
            "window": {
                "seconds": self.window,
                "requests": len(latencies),
                "errors": sum(1 for r in self._recent if r[2]),
            },
        }


class Metrics:
    """The Prometheus series, in a registry of their own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shipyard_model_requests",
            "Invocations answered, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipyard_model_request_seconds",
            "Time from reading an invocation to answering it.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "shipyard_model_batch_rows",
            "Rows per predict call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "shipyard_model_batch_requests",
            "Requests per predict call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.drift = Gauge(
            "shipyard_model_drift_psi",
            "Population stability index of each input feature against the training data.",
            ["feature"],
            registry=self.registry,
        )
        self._by_status: dict[int, Any] = {}

    def observe(self, seconds: float, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(status=str(status))
        child.inc()
        self.latency.observe(seconds)


class ModelServer:
    """Loads the model once and answers invocations; the routes call its methods.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (see :func:`parse_args`).
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = "loading"
        self.reason = ""
        self.model = None
        self.schema = None
        self.columns: list[str] | None = None  # fast path allowed when set
        self._checks: list = []
        self.loaded_in: float | None = None
        self.started = time.monotonic()
        self.exit_code = 0
        self.stopping = False
        self.uvicorn: Any = None
        self.metrics = Metrics()
        self.stats = RequestStats()
        self.drift = None
        self.batcher: AdaptiveBatcher | None = None
        self._mlflow: dict[str, Any] = {}
        if args.training_summary:
            from hub_ext.runtime.drift import DriftTracker

            with open(args.training_summary) as f:
                self.drift = DriftTracker(json.load(f))

    # ----------------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        loop = asyncio.get_running_loop()
        self.batcher = AdaptiveBatcher(
            self.run_batch,
            max_rows=self.args.max_batch,
            max_wait=self.args.max_batch_wait_ms / 1000.0,
            on_batch=self._on_batch,
        )
        self.batcher.start()
        threading.Thread(target=self._load, args=(loop,), name="load-model", daemon=True).start()
        try:
            yield
        finally:
            await self.batcher.stop()

    def _local_copy(self) -> str:
        """Where to load the model from: ``--model-cache`` once it holds a copy, else the URI.

        A replica restarted later (after a crash, a recycle, a scale-up) loads the copy the
        first one downloaded, so it needs neither the tracking server nor a token that may
        have expired by then. Replicas starting together each download into a folder of
        their own and rename it into place; the first rename wins.
        """
        cache = self.args.model_cache
        if not cache or os.path.isdir(self.args.model_uri):
            return self.args.model_uri
        if os.path.exists(os.path.join(cache, "MLmodel")):
            return cache
        import tempfile

        import mlflow.artifacts

        parent = os.path.dirname(os.path.abspath(cache))
        fresh = tempfile.mkdtemp(prefix=".model-", dir=parent)
        copy = mlflow.artifacts.download_artifacts(artifact_uri=self.args.model_uri, dst_path=fresh)
        try:
            os.rename(copy, cache)
        except OSError:  # another replica's copy is in place
            pass
        if os.path.exists(os.path.join(cache, "MLmodel")):
            import shutil

            shutil.rmtree(fresh, ignore_errors=True)
            return cache
        return copy

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        t0 = time.monotonic()
        try:
            import mlflow.pyfunc
            from mlflow.exceptions import MlflowException
            from mlflow.pyfunc.scoring_server import (
                infer_and_parse_data,
                parse_csv_input,
                predictions_to_json,
            )

            # suppress_warnings: the dependency-mismatch check reads every installed
            # distribution's metadata (~1 s); the profile's environment is built from a lock.
            model = mlflow.pyfunc.load_model(self._local_copy(), suppress_warnings=True)
            self._mlflow = {
                "MlflowException": MlflowException,
                "infer_and_parse_data": infer_and_parse_data,
                "parse_csv_input": parse_csv_input,
                "predictions_to_json": predictions_to_json,
            }
            self._init_schema(model)
            # Move everything imported and loaded so far out of the garbage collector's
            # reach: mlflow, sklearn and scipy leave millions of objects whose full
            # collections otherwise stall requests for ~50-80 ms (p99).
            gc.collect()
            gc.freeze()
        except BaseException as e:  # noqa: BLE001 - any failure is the reason shown
            log.exception("loading %s failed", self.args.model_uri)
            loop.call_soon_threadsafe(self._load_failed, f"{type(e).__name__}: {e}")
            return
        self.model = model
        self.loaded_in = time.monotonic() - t0
        log.info("model %s loaded in %.2fs", self.args.model_uri, self.loaded_in)
        loop.call_soon_threadsafe(setattr, self, "state", "ready")

    def _init_schema(self, model) -> None:
        self.schema = model.metadata.get_input_schema()
        from_type_hint = getattr(model.metadata, "_is_signature_from_type_hint", None)
        self.type_hint = bool(from_type_hint and from_type_hint())
        if self.schema is None or self.type_hint or self.schema.is_tensor_spec():
            return
        checks = []
        for col in self.schema.inputs:
            check = _TYPE_CHECKS.get(getattr(col.type, "name", None))
            if check is None or col.name is None:
                return
            checks.append(check)
        self._dtypes = [
            object if getattr(col.type, "name", None) == "string" else col.type.to_numpy()
            for col in self.schema.inputs
        ]
        self.columns = list(self.schema.input_names())
        self._checks = checks

    def _load_failed(self, reason: str) -> None:
        self.state = "failed"
        self.reason = reason
        asyncio.get_running_loop().call_later(
            FAILED_LINGER_SECONDS, self.request_exit, EXIT_LOAD_FAILED
        )

    def request_exit(self, code: int) -> None:
        """Stop taking requests, let uvicorn finish those in flight, then exit ``code``."""
        if not self.stopping:
            log.warning("stopping: exit status %s once requests in flight are answered", code)
        self.stopping = True
        self.exit_code = self.exit_code or code
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True

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

    # ----------------------------------------------------------------- requests

    async def read_body(self, request: Request) -> bytes:
        limit = self.args.max_body_bytes
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
        rows = self._fast_rows(doc) if self.columns is not None else None
        if rows is None:
            return MlflowItem(content_type, doc), 1, None
        return FastItem(rows), len(rows), "rows"

    def _fast_rows(self, doc: dict) -> list | None:
        if len(doc) != 1:
            return None
        ((fmt, value),) = doc.items()
        names = self.columns
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

    async def invoke(self, request: Request) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await self._invoke(request, t0)
            status = response.status_code
            return response
        except ServingError as e:
            status = e.status
            return e.response()
        finally:
            elapsed = time.perf_counter() - t0
            self.metrics.observe(elapsed, status)
            self.stats.record(elapsed, status)

    async def _invoke(self, request: Request, t0: float) -> Response:
        if self.stopping:
            raise ServingError(503, "UNAVAILABLE", "the model server is stopping")
        if self.state != "ready":
            message = self.reason if self.state == "failed" else "the model is loading"
            raise ServingError(503, "UNAVAILABLE", message)
        raw_type = request.headers.get("content-type", "")
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
        body = await self.read_body(request)
        item, rows, key = self.prepare(body, mime)
        future = self.batcher.submit(item, rows, key)
        remaining = self.args.timeout - (time.perf_counter() - t0)
        try:
            outcome = await asyncio.wait_for(future, max(remaining, 0.001))
        except TimeoutError:
            self.request_exit(EXIT_TIMEOUT)
            raise ServingError(
                504,
                "TIMEOUT",
                f"prediction took longer than {self.args.timeout:g}s; this replica restarts",
            ) from None
        return Response(outcome, 200, media_type=CONTENT_TYPE_JSON)

    # ------------------------------------------------------ prediction thread

    def run_batch(self, items: Sequence[Any]) -> list:
        """Predict one batch (on the prediction thread): one outcome per item."""
        if len(items) > 1 and all(isinstance(i, FastItem) for i in items):
            try:
                return self._predict_rows(items)
            except Exception:
                log.info("batch of %d failed; predicting its members one by one", len(items))
        return [self._predict_one(item) for item in items]

    def _frame(self, rows: list):
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

    def _predict_rows(self, items: Sequence[FastItem]) -> list:
        rows = [row for item in items for row in item.rows]
        df = self._frame(rows)
        preds = self.model.predict(df)
        sizes = [len(item.rows) for item in items]
        parts = _split(preds, sizes)
        if parts is None:
            raise ValueError("predictions do not split by rows")
        self._seen(df)
        return [self._encode(p) for p in parts]

    def _predict_one(self, item: Any) -> bytes | ServingError:
        mlflow_error = self._mlflow["MlflowException"]
        try:
            params = None
            if isinstance(item, FastItem):
                data = self._frame(item.rows)
            else:
                data, params = self._parse(item)
        except ServingError as e:
            return e
        except mlflow_error as e:
            return ServingError(400, e.error_code, e.message + self.expected())
        except Exception as e:
            return ServingError(400, "BAD_REQUEST", f"{type(e).__name__}: {e}{self.expected()}")
        try:
            preds = self.model.predict(data, params=params) if params else self.model.predict(data)
        except mlflow_error as e:
            if e.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
                return ServingError(400, e.error_code, e.message + self.expected())
            log.exception("predict failed")
            return ServingError(500, "MODEL_ERROR", e.message, error_class=type(e).__name__)
        except Exception as e:
            log.exception("predict failed")
            return ServingError(500, "MODEL_ERROR", str(e), error_class=type(e).__name__)
        self._seen(data)
        try:
            return self._encode(preds)
        except Exception as e:
            log.exception("encoding predictions failed")
            return ServingError(
                500,
                "MODEL_ERROR",
                f"predictions are not JSON-serialisable: {e}",
                error_class=type(e).__name__,
            )

    def _parse(self, item: MlflowItem) -> tuple[Any, dict | None]:
        """MLflow's own parsing, for everything off the fast path."""
        if item.content_type == CONTENT_TYPE_CSV:
            try:
                text = item.body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ServingError(400, "BAD_REQUEST", f"body is not UTF-8: {e}") from None
            return self._mlflow["parse_csv_input"](io.StringIO(text), schema=self.schema), None
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
        return self._mlflow["infer_and_parse_data"](data, self.schema), params

    def _encode(self, preds) -> bytes:
        out = io.StringIO()
        self._mlflow["predictions_to_json"](preds, out)
        return out.getvalue().encode()

    def _seen(self, data) -> None:
        if self.drift is None:
            return
        try:
            self.drift.update(data)
        except Exception:
            log.exception("counting rows for drift failed")

    def _on_batch(self, n_requests: int, n_rows: int) -> None:
        self.metrics.batch_rows.observe(n_rows)
        self.metrics.batch_requests.observe(n_requests)

    # ------------------------------------------------------------ read routes

    def health(self) -> Response:
        if self.stopping:
            body, status = {"status": "stopping", "message": "the model server is stopping"}, 503
        elif self.state == "ready":
            body = {
                "status": "ready",
                "name": self.args.name,
                "model_uri": self.args.model_uri,
                "load_seconds": round(self.loaded_in or 0.0, 3),
                "uptime_seconds": round(time.monotonic() - self.started, 1),
            }
            status = 200
        elif self.state == "failed":
            body, status = {"status": "failed", "message": self.reason}, 503
        else:
            body, status = {"status": "loading"}, 503
        return Response(json.dumps(body), status, media_type=CONTENT_TYPE_JSON)

    def drift_psi(self) -> dict[str, float]:
        if self.drift is None:
            return {}
        values = self.drift.psi()
        for feature, value in values.items():
            self.metrics.drift.labels(feature=feature).set(value)
        return values

    def stats_body(self) -> dict:
        body = self.stats.snapshot()
        body["drift"] = self.drift_psi()
        body["rows_seen"] = self.drift.rows_seen if self.drift is not None else 0
        body["batches"] = self.batcher.batches if self.batcher is not None else 0
        return body


def _split(preds, sizes: list[int]) -> list | None:
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


#: The environment variable a replica's secret arrives in, and the header callers send it
#: in. Replicas listen on loopback, which every account of the machine reaches: without
#: the secret, anyone could call a model directly, past the deployer's authorization.
REPLICA_SECRET_ENV = "SHIPYARD_REPLICA_SECRET"
REPLICA_SECRET_HEADER = "x-shipyard-replica-secret"
#: What answers without the secret: the probes, which say nothing about the model's data.
OPEN_PATHS = frozenset({"/health", "/ping"})


class RequireSecret:
    """ASGI wrapper: every HTTP request but :data:`OPEN_PATHS` must carry the replica secret."""

    def __init__(self, app, secret: str):
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            sent = next(
                (v for k, v in scope["headers"] if k == REPLICA_SECRET_HEADER.encode()), b""
            )
            if not hmac.compare_digest(sent, self.secret):
                await ServingError(
                    403,
                    "PERMISSION_DENIED",
                    "Call models through the deployer: /services/deployer/models/<owner>/<name>/",
                ).response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(server: ModelServer) -> Starlette:
    """The ASGI app: routes to ``server``'s methods, every error as JSON."""

    async def invocations(request: Request) -> Response:
        return await server.invoke(request)

    async def health(request: Request) -> Response:
        return server.health()

    async def ping(request: Request) -> Response:
        ready = server.state == "ready" and not server.stopping
        return Response("\n", 200 if ready else 503, media_type=CONTENT_TYPE_JSON)

    async def version(request: Request) -> Response:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        for dist in ("mlflow", "mlflow-skinny"):
            try:
                return Response(dist_version(dist), media_type=CONTENT_TYPE_JSON)
            except PackageNotFoundError:
                continue
        return Response("unknown", media_type=CONTENT_TYPE_JSON)

    async def metrics(request: Request) -> Response:
        server.drift_psi()
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        return Response(json.dumps(server.stats_body()), media_type=CONTENT_TYPE_JSON)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return ServingError(
            exc.status_code, "NOT_FOUND" if exc.status_code == 404 else "BAD_REQUEST", exc.detail
        ).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return ServingError(
            500, "INTERNAL_ERROR", f"{type(exc).__name__}: internal error"
        ).response()

    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/version", version, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=server.lifespan,
    )


#: Every option may come from the environment instead: ``--model-uri`` from
#: ``SHIPYARD_MODELSERVER_MODEL_URI``, ``--port`` from ``SHIPYARD_MODELSERVER_PORT``...
#: (the command line wins). Every account of the machine reads a process's command line
#: (``ps``, ``/proc/<pid>/cmdline``), which would show the owner's MLflow run id, model
#: name and port to all; only the owner (and root) reads its environment. The deployer
#: passes every option so (:func:`options_environment`).
OPTIONS_ENV_PREFIX = "SHIPYARD_MODELSERVER_"


def options_environment(args: Sequence[str]) -> dict[str, str]:
    """The environment that gives a model server the options ``args`` would give it.

    Parameters
    ----------
    args : sequence of str
        Options as on the command line: ``["--model-uri", "runs:/.../model", "--port",
        "8080"]``, each followed by its value (no flags without one).

    Returns
    -------
    dict of str to str
        ``{"SHIPYARD_MODELSERVER_MODEL_URI": "runs:/.../model", ...}``, read back by
        :func:`parse_args`.
    """
    if len(args) % 2:
        raise ValueError(f"an option without its value in {list(args)!r}")
    env = {}
    for option, value in zip(args[::2], args[1::2], strict=True):
        if not option.startswith("--"):
            raise ValueError(f"not an option: {option!r}")
        env[OPTIONS_ENV_PREFIX + option[2:].replace("-", "_").upper()] = value
    return env


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """The command line of docs/deploy-contract.md section 1, or its environment.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; ``sys.argv[1:]`` by default.
    environ : mapping of str to str, optional
        Where options missing from ``argv`` are read (:data:`OPTIONS_ENV_PREFIX`);
        this process's environment by default.
    """
    p = argparse.ArgumentParser(
        prog="python -m hub_ext.runtime.modelserver",
        description="Serve one MLflow model over MLflow's scoring protocol.",
    )
    p.add_argument(
        "--model-uri",
        required=True,
        help="local directory, or models:/ or runs:/ URI read through $MLFLOW_TRACKING_URI",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument("--name", default="", help="OWNER/NAME/VERSION, for logs and /health")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=10 * 1024 * 1024,
        help="largest request body; larger ones get 413",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds per request; past it 504, then the process exits 75",
    )
    p.add_argument("--max-batch", type=int, default=64, help="most rows in one predict call")
    p.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=2.0,
        help="longest wait for a fuller batch, only while busy",
    )
    p.add_argument(
        "--training-summary",
        default=None,
        help="JSON file from drift.summarize(); enables drift in /stats and /metrics",
    )
    p.add_argument(
        "--model-cache",
        default=None,
        help="folder that keeps a downloaded copy of a models:/ or runs:/ model; "
        "later starts load the copy",
    )
    p.add_argument("--workers", type=int, default=1, help="processes, each loading the model")
    p.add_argument("--log-level", default="info", help="logging level")
    environ = os.environ if environ is None else environ
    for action in p._actions:
        name = OPTIONS_ENV_PREFIX + action.dest.upper()
        if action.option_strings and name in environ:
            # a string default goes through the option's type, as a command-line value
            action.default = environ[name]
            action.required = False
    return p.parse_args(argv)


def _ignore_sigterm_after_shutdown(signum, frame) -> None:
    """Installed before uvicorn runs: uvicorn re-raises SIGTERM once shut down, this absorbs it.

    The contract wants exit 0 after a graceful SIGTERM; uvicorn's default would die of
    the signal (status -15).
    """


def _serve(args: argparse.Namespace, sockets=None) -> int:
    import uvicorn

    disable_created_metrics()  # no *_created series: the deployer reads totals only
    # taken out of the environment before the model (code) is loaded in this process
    secret = os.environ.pop(REPLICA_SECRET_ENV, "")
    server = ModelServer(args)
    app = create_app(server)
    config = uvicorn.Config(
        RequireSecret(app, secret) if secret else app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=GRACE_SECONDS,
        lifespan="on",
        backlog=4096,
    )
    server.uvicorn = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, _ignore_sigterm_after_shutdown)
    server.uvicorn.run(sockets=sockets)
    if not server.uvicorn.started and not server.exit_code:
        return 1  # could not bind, or startup failed (uvicorn logged why)
    return server.exit_code


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s",
        stream=sys.stderr,
    )


def _worker(args: argparse.Namespace, sockets) -> None:
    _setup_logging(args.log_level)
    sys.exit(_serve(args, sockets))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the model server until SIGTERM, a timeout or a failed load; return the exit status."""
    args = parse_args(argv)
    _setup_logging(args.log_level)
    if args.workers <= 1:
        return _serve(args)
    import multiprocessing

    import uvicorn

    # One socket, several processes, as uvicorn --workers: each child loads the model
    # and batches on its own; a child that exits is not replaced here (its supervisor
    # restarts the whole replica once all have exited).
    sock = uvicorn.Config(create_app, host=args.host, port=args.port).bind_socket()
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_worker, args=(args, [sock])) for _ in range(args.workers)]
    for child in children:
        child.start()

    def forward(signum, frame):
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for child in children:
        child.join()
        codes.append(child.exitcode or 0)
    return max(codes, key=abs) if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
