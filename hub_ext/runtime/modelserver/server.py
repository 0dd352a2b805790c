"""The model server's state: one MLflow model, loaded once, and the invocations it answers.

The server starts listening before the model is loaded, and imports MLflow only then
(``import mlflow.pyfunc`` alone takes ~1.5 s): ``/health`` answers ``loading``
meanwhile. A model that fails to load is reported by ``/health`` for
:data:`~.contract.FAILED_LINGER_SECONDS` before the process exits with
:data:`~.contract.EXIT_LOAD_FAILED`.

How an invocation goes, and why:

1. The content type must be JSON or CSV (415), the body at most
   ``--max-body-bytes``, checked on ``Content-Length`` before reading and again
   while the body streams in (413), before any parsing (:mod:`.protocol`).
2. The request is validated on the event loop: the fast path's rows, or the body
   left to MLflow's parsing on the prediction thread (:class:`~.protocol.ModelInputs`).
3. :class:`~.batching.AdaptiveBatcher` runs one batch at a time on a daemon
   thread, the event loop keeps accepting meanwhile. Only fast-path requests share a
   batch; a batch whose ``predict`` raises is retried member by member, so only the
   bad request fails.
4. Each request's inputs are checked against the signature and the training summary
   (:mod:`hub_ext.runtime.quality`, ``--data-quality``) on the prediction thread: a
   batch once it predicted, a request alone before its ``predict`` (so that what
   MLflow's schema enforcement refuses is counted too, parsed again without the
   signature). The issues are counted, never refused.
5. Errors are JSON ``{"error_code", "message"}``, never a traceback (logged on
   stderr instead): a schema mismatch is 400 with the expected columns and
   types appended to MLflow's message; ``predict`` raising is 500
   ``MODEL_ERROR`` with ``error_class``. Past ``--timeout`` a request gets 504
   and the server stops: it refuses new requests (503), finishes the others
   and exits with :data:`~.contract.EXIT_TIMEOUT` (75, ``EX_TEMPFAIL``), since a
   stuck ``predict`` cannot be interrupted; the deployer starts a fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .batching import AdaptiveBatcher
from .contract import EXIT_LOAD_FAILED, EXIT_TIMEOUT, FAILED_LINGER_SECONDS
from .protocol import (
    CONTENT_TYPE_JSON,
    FastItem,
    ModelInputs,
    ServingError,
    media_type,
    read_body,
    split_predictions,
)
from .stats import Metrics, RequestStats

log = logging.getLogger("shipyard.modelserver")


class ModelServer:
    """Loads the model once and answers invocations; the routes call its methods.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (see :func:`~.contract.parse_args`).
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = "loading"
        self.reason = ""
        self.model = None
        #: the signature and how requests become its input, once the model is loaded
        self.inputs: ModelInputs | None = None
        self.loaded_in: float | None = None
        self.started = time.monotonic()
        self.exit_code = 0
        self.stopping = False
        self.uvicorn: Any = None
        #: the Prometheus series; None with ``--metrics off``
        self.metrics: Metrics | None = Metrics() if getattr(args, "metrics", "on") == "on" else None
        self.stats = RequestStats()
        self.drift = None
        #: data-quality counts (:mod:`hub_ext.runtime.quality`), once the model is loaded
        self.quality = None
        self.batcher: AdaptiveBatcher | None = None
        self._mlflow: dict[str, Any] = {}
        self._summary: dict | None = None
        if args.training_summary:
            from hub_ext.runtime.drift import DriftTracker

            with open(args.training_summary) as f:
                self._summary = json.load(f)
            self.drift = DriftTracker(self._summary)

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
                "predictions_to_json": predictions_to_json,
            }
            self.inputs = ModelInputs(model.metadata, parse_csv_input, infer_and_parse_data)
            if getattr(self.args, "data_quality", "on") == "on":
                self.quality = self._quality_tracker()
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

    def _quality_tracker(self):
        """The data-quality checks of this model: its signature's columns and the summary."""
        from hub_ext.runtime.quality import Column, Expectations, QualityTracker

        columns = []
        inputs = self.inputs
        schema = None if inputs is None or inputs.type_hint else inputs.schema
        if schema is not None and not schema.is_tensor_spec():
            columns = [
                Column(c.name, getattr(c.type, "name", "other"), bool(c.required))
                for c in schema.inputs
                if c.name is not None
            ]
        expect = Expectations.build(
            columns, self._summary, getattr(self.args, "data_quality_margin", 0.0)
        )
        if expect.empty:
            return None
        if self.metrics is None:
            return QualityTracker(expect)
        self.metrics.declare_inputs(expect.pairs())
        return QualityTracker(expect, on_counts=self.metrics.observe_inputs)

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
        if self.inputs is None:
            return ""
        return self.inputs.expected()

    # ----------------------------------------------------------------- requests

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
            if self.metrics is not None:
                self.metrics.observe(elapsed, status)
            self.stats.record(elapsed, status)

    async def _invoke(self, request: Request, t0: float) -> Response:
        if self.stopping:
            raise ServingError(503, "UNAVAILABLE", "the model server is stopping")
        if self.state != "ready":
            message = self.reason if self.state == "failed" else "the model is loading"
            raise ServingError(503, "UNAVAILABLE", message)
        mime = media_type(request.headers.get("content-type", ""))
        body = await read_body(request, self.args.max_body_bytes)
        item, rows, key = self.inputs.prepare(body, mime)
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

    def _predict_rows(self, items: Sequence[FastItem]) -> list:
        rows = [row for item in items for row in item.rows]
        df = self.inputs.frame(rows)
        preds = self.model.predict(df)
        sizes = [len(item.rows) for item in items]
        parts = split_predictions(preds, sizes)
        if parts is None:
            raise ValueError("predictions do not split by rows")
        self._check(df)
        self._seen(df)
        return [self._encode(p) for p in parts]

    def _predict_one(self, item: Any) -> bytes | ServingError:
        mlflow_error = self._mlflow["MlflowException"]
        try:
            params = None
            if isinstance(item, FastItem):
                data = self.inputs.frame(item.rows)
            else:
                data, params = self.inputs.parse(item)
        except ServingError as e:
            return e
        except mlflow_error as e:
            self._check_refused(item)
            return ServingError(400, e.error_code, e.message + self.expected())
        except Exception as e:
            self._check_refused(item)
            return ServingError(400, "BAD_REQUEST", f"{type(e).__name__}: {e}{self.expected()}")
        self._check(data)  # before predict: what its schema enforcement refuses counts too
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

    def _encode(self, preds) -> bytes:
        out = io.StringIO()
        self._mlflow["predictions_to_json"](preds, out)
        return out.getvalue().encode()

    def _check(self, data) -> None:
        if self.quality is None or not hasattr(data, "columns"):
            return  # tensors, lists and dicts of type-hinted models are not checked
        try:
            self.quality.update(data)
        except Exception:
            log.exception("checking the data quality of inputs failed")

    def _check_refused(self, item: Any) -> None:
        """Count the issues of a request the signature refused: parsed again without it."""
        if self.quality is None or isinstance(item, FastItem):
            return
        try:
            data, _ = self.inputs.parse(item, enforce=False)
        except Exception:  # noqa: BLE001 - not a table at all: nothing to count per feature
            return
        self._check(data)

    def _seen(self, data) -> None:
        if self.drift is None:
            return
        try:
            self.drift.update(data)
        except Exception:
            log.exception("counting rows for drift failed")

    def _on_batch(self, n_requests: int, n_rows: int) -> None:
        if self.metrics is None:
            return
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
        if self.metrics is not None:
            for feature, value in values.items():
                self.metrics.drift.labels(feature=feature).set(value)
        return values

    def stats_body(self) -> dict:
        body = self.stats.snapshot()
        body["drift"] = self.drift_psi()
        body["rows_seen"] = self.drift.rows_seen if self.drift is not None else 0
        if self.quality is not None:
            body["rows_checked"] = self.quality.rows_checked
            body["input_issues"] = self.quality.totals()
        body["batches"] = self.batcher.batches if self.batcher is not None else 0
        return body
