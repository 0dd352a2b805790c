"""The drills' load: an open-loop stream of one-row model requests, every answer counted.

Open loop, because a closed loop (the next request once the last one answered) sends
nothing while a part is down and so hides the outage it should measure: a clock thread
hands each request, at its due time, to a pool of threads, so a slow or hung answer never
delays the next one. *ok* is a 200 with the model's prediction (:data:`PREDICTION` for
:data:`ROW`); anything else failed, with a short reason (:func:`describe`). Latency is from
the due time to the answer, so time spent waiting for a free thread counts too.

The requests are the model's public invocations URL with the user's token, as a caller
outside the hub makes them, not the deployer's client: the load measures what a model's
callers see, answer by answer, and a client that turns refusals into exceptions would hide
the status codes the report counts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from . import until

#: The one row every request sends; the drill's model is y = 2x + 1.
ROW = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}
PREDICTION = 3.0


@dataclass
class Answer:
    """One request of the load and how it was answered."""

    due: float  # when the request was due (monotonic)
    done: float  # when its answer (or error) came
    ok: bool
    what: str  # "" when ok, else a short reason: the status code or the error's kind


class Load:
    """An open-loop load of ``rate`` requests per second; every answer kept."""

    def __init__(self, url: str, token: str, rate: float, timeout: float):
        self.url, self.token, self.rate, self.timeout = url, token, rate, timeout
        self.answers: list[Answer] = []
        self.pending: set[float] = set()  # due times of requests not answered yet
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.local = threading.local()
        # enough threads for every request of a full request timeout at a low rate; at
        # 40/s a queue forms only while answers take longer than the pool lasts
        self.pool = ThreadPoolExecutor(max(16, min(200, int(rate * 4))), "chaos-load")
        self.clock = threading.Thread(target=self._tick, name="chaos-clock", daemon=True)

    def start(self) -> Load:
        """Start sending; the load itself, to keep."""
        self.clock.start()
        return self

    def stop(self) -> None:
        """Send no more, and wait for the answers to those sent (or their timeouts)."""
        self.stopping.set()
        if self.clock.is_alive():
            self.clock.join()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _tick(self) -> None:
        interval = 1 / self.rate
        due = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                self.pending.add(due)
            self.pool.submit(self._one, due)
            due += interval
            self.stopping.wait(max(0.0, due - time.monotonic()))

    def _one(self, due: float) -> None:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.headers["Authorization"] = f"token {self.token}"
        try:
            r = session.post(self.url, json=ROW, timeout=self.timeout)
            if r.status_code == 200:
                try:
                    ok = abs(r.json()["predictions"][0] - PREDICTION) < 1e-6
                except (ValueError, KeyError, IndexError, TypeError):
                    ok = False
                what = "" if ok else "200 without the prediction"
            else:
                ok, what = False, describe(r)
        except requests.Timeout:
            ok, what = False, "no answer in time"
        except requests.ConnectionError:
            ok, what = False, "connection error"
        except requests.RequestException as e:
            ok, what = False, type(e).__name__
        with self.lock:
            self.answers.append(Answer(due, time.monotonic(), ok, what))
            self.pending.discard(due)

    def settled(self, since: float, seconds: float) -> bool:
        """Whether ``seconds`` of requests due after ``since`` and after the last failure
        are all answered, and ok."""
        with self.lock:
            later = [a for a in self.answers if a.due >= since]
            failures = [a.due for a in later if not a.ok]
            start = max(failures, default=since - 1e-3) + 1e-3
            if any(start <= d <= start + seconds for d in self.pending):
                return False
        return max((a.due for a in later), default=0.0) >= start + seconds

    def recent_ok(self, seconds: float = 1.0) -> bool:
        """Whether the requests due in the last ``seconds`` that have answered were all ok."""
        now = time.monotonic()
        with self.lock:
            recent = [a for a in self.answers if a.due >= now - seconds - 0.5]
        return len(recent) >= self.rate * seconds * 0.5 and all(a.ok for a in recent)

    def window(self, start: float, end: float) -> list[Answer]:
        """The answers to the requests due in ``[start, end]``, once all have come."""
        until(lambda: not any(start <= d <= end for d in list(self.pending)), self.timeout + 10)
        with self.lock:
            return sorted((a for a in self.answers if start <= a.due <= end), key=lambda a: a.due)


def describe(r: requests.Response) -> str:
    """A failed answer in a few words: status, and the deployer's error code or the page."""
    kind = "html" if "html" in r.headers.get("Content-Type", "") else ""
    with contextlib.suppress(ValueError, AttributeError):
        kind = r.json().get("error_code") or kind
    return f"{r.status_code} {kind}".strip()
