"""Adaptive batching: concurrent small requests share one ``predict`` call.

A model's ``predict`` costs about the same for 1 row as for 64 (an sklearn
pipeline through MLflow's pyfunc spends ~1.5 ms on validation and schema
enforcement before it touches the data), so under concurrent load the model
server predicts many requests at once:

- every request is validated and converted on its own first (a bad request is
  refused before it can share a batch with others), then :meth:`AdaptiveBatcher.submit`
  queues it and awaits its own result;
- one prediction runs at a time, on :class:`PredictThread`; while it runs,
  arriving requests queue;
- when the thread is free, the next batch takes the queued requests in arrival
  order, up to ``max_rows`` rows, as long as they share a batch key (requests
  with ``params`` or of another shape never share one);
- when idle, a request is dispatched at once: no added latency. Only right after
  a batch ended (the server is busy) does the batcher wait, at most
  ``max_wait`` seconds, for the requests of that batch's clients to come back,
  and stops waiting as soon as as many requests queue as the last batch held.

The batch function gets the items and returns one outcome per item, a value or
an exception, so one failing member never fails the others (the model server
retries a failing batch member by member).

Rejected: a thread pool per request (``asyncio.to_thread``; the pool's threads
are joined at exit, so a predict that never returns would keep a timed-out
server from exiting, and requests would contend for the GIL instead of
batching); a fixed batching window (adds its latency to every idle request).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class PredictThread:
    """One daemon thread that runs blocking calls for an event loop, in order.

    A daemon thread, unlike :func:`asyncio.to_thread`'s pool, never keeps the
    process alive: a server whose ``predict`` hangs can still exit.

    Parameters
    ----------
    name : str
        The thread's name (shows in tracebacks and ``py-spy``).
    """

    def __init__(self, name: str = "predict"):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._calls.get()
            if job is None:
                return
            fn, args, loop, future = job
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(_set_exception, future, e)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)

    def run(self, fn: Callable, *args) -> asyncio.Future:
        """Run ``fn(*args)`` on the thread; the returned future gets its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._calls.put((fn, args, loop, future))
        return future

    def stop(self) -> None:
        """Let the thread end after the calls already queued."""
        self._calls.put(None)


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


@dataclass
class _Pending:
    item: Any
    rows: int
    key: Hashable | None
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class AdaptiveBatcher:
    """Queue requests and run them in batches on a :class:`PredictThread`.

    Parameters
    ----------
    run_batch : callable
        ``run_batch(items) -> outcomes``, blocking, called on the prediction
        thread with the items of one batch; returns one outcome per item, in
        order: a value (the item's answer) or an exception instance (raised to
        that item's caller).
    max_rows : int
        Most rows in one batch (``--max-batch``). A single request with more rows
        runs alone.
    max_wait : float
        Longest a batch waits, in seconds, for more requests, and only while the
        server is busy (``--max-batch-wait-ms`` / 1000).
    on_batch : callable, optional
        ``on_batch(n_requests, n_rows)`` after each batch, on the event loop
        (metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Any]], Sequence[Any]],
        max_rows: int = 64,
        max_wait: float = 0.002,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_rows = max(1, int(max_rows))
        self.max_wait = max(0.0, float(max_wait))
        self.on_batch = on_batch
        self.thread = PredictThread()
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_batch_requests = 0
        self.batches = 0
        self.busy = False

    def start(self) -> None:
        """Start the dispatching task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="batcher")

    async def stop(self) -> None:
        """Stop dispatching (queued requests are not run) and let the thread end."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.thread.stop()

    def submit(self, item: Any, rows: int, key: Hashable | None) -> asyncio.Future:
        """Queue one validated request.

        Parameters
        ----------
        item : object
            What ``run_batch`` gets for this request.
        rows : int
            Its number of rows.
        key : hashable or None
            Requests share a batch only with requests of the same key; ``None``
            always runs alone.

        Returns
        -------
        asyncio.Future
            Resolves to the request's outcome. Cancelling it (a timeout) is fine:
            the batch still runs and its answer is dropped.
        """
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, rows, key, future))
        self._arrived.set()
        return future

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        first = batch[0]
        rows = first.rows
        if first.key is None:
            return batch
        while self._queue:
            nxt = self._queue[0]
            if nxt.key != first.key or rows + nxt.rows > self.max_rows:
                break
            batch.append(self._queue.popleft())
            rows += nxt.rows
        return batch

    def _queued_rows(self) -> int:
        return sum(p.rows for p in self._queue)

    async def _gather_more(self) -> None:
        """Busy: wait up to ``max_wait`` for the last batch's clients to come back."""
        deadline = time.perf_counter() + self.max_wait
        target = self._last_batch_requests
        while len(self._queue) < target and self._queued_rows() < self.max_rows:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    async def _dispatch(self) -> None:
        busy_before = False
        while True:
            if not self._queue:
                busy_before = False
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if busy_before and self.max_wait > 0 and self._last_batch_requests > 1:
                await self._gather_more()
            batch = [p for p in self._take() if not p.future.cancelled()]
            if not batch:
                continue
            self.busy = True
            try:
                outcomes = await self.thread.run(self.run_batch, [p.item for p in batch])
            except BaseException as e:  # noqa: BLE001 - every member gets the error
                if isinstance(e, asyncio.CancelledError):
                    for p in batch:
                        p.future.cancel()
                    raise
                outcomes = [e] * len(batch)
            finally:
                self.busy = False
            self.batches += 1
            self._last_batch_requests = len(batch)
            busy_before = True
            for p, outcome in zip(batch, outcomes, strict=False):
                if p.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    p.future.set_exception(outcome)
                else:
                    p.future.set_result(outcome)
            if self.on_batch is not None:
                try:
                    self.on_batch(len(batch), sum(p.rows for p in batch))
                except Exception:  # metrics must never stop dispatching
                    log.exception("batch callback failed")
