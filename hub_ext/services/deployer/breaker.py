"""Circuit breakers: a version that fails most of its requests leaves the traffic split.

One :class:`Breaker` per version, fed by the router with the outcome of
every request it forwarded (an error is a 5xx from the model server,
including its 500 predict errors and 504 timeouts, or no answer at all; a
4xx is the client's mistake and counts as a success). Over a sliding window
(``window`` seconds, at least ``min_requests`` requests), an error rate at or
over ``threshold`` opens it:

- **open**: the router gives the version's share to the other routable
  versions of the split. When it is the only version there is, it keeps
  serving (``serving``: a failing model is better than none, and the owner
  sees why in the API and ``%deployments``);
- **half-open** after ``cooldown`` seconds: the version gets its share
  again, as a probe. ``probes`` successes in a row close it; one failure
  opens it for another cooldown.

State is per deployer process and in memory: a restarted deployer starts
every breaker closed, which is a half-open probe of everything.
Rejected alternative: probing ``/health`` alone, which a model whose
``predict`` raises on every input passes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone

from .models import BreakerState


class Breaker:
    """The breaker of one version (see the module docstring)."""

    def __init__(
        self,
        window: float = 30.0,
        min_requests: int = 20,
        threshold: float = 0.5,
        cooldown: float = 30.0,
        probes: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.window = window
        self.min_requests = min_requests
        self.threshold = threshold
        self.cooldown = cooldown
        self.probes = probes
        self.clock = clock
        self.state = "closed"
        self.reason: str | None = None
        self.since: datetime | None = None
        self.serving = False
        self._events: deque[tuple[float, bool]] = deque()
        self._errors = 0
        self._opened_at = 0.0
        self._probe_successes = 0

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window:
            if not self._events.popleft()[1]:
                self._errors -= 1

    def record(self, ok: bool) -> None:
        """Count one forwarded request's outcome."""
        now = self.clock()
        if self.state == "half_open":
            if not ok:
                self._open(now, f"a probe request failed after the {self.cooldown:g}s cooldown")
                return
            self._probe_successes += 1
            if self._probe_successes >= self.probes:
                self._close()
            return
        if self.state == "open":
            return  # requests still served while it is the only version don't reopen it
        self._events.append((now, ok))
        if not ok:
            self._errors += 1
        self._trim(now)
        total = len(self._events)
        if total >= self.min_requests and self._errors / total >= self.threshold:
            self._open(
                now,
                f"{self._errors} of the last {total} requests failed within {self.window:g}s "
                f"(threshold {self.threshold:.0%})",
            )

    def routable(self) -> bool:
        """Whether the split may route to the version now (an open breaker after its cooldown probes)."""
        if self.state == "open" and self.clock() - self._opened_at >= self.cooldown:
            self.state, self._probe_successes, self.serving = "half_open", 0, False
        return self.state != "open"

    def _open(self, now: float, reason: str) -> None:
        self.state, self.reason, self._opened_at = "open", reason, now
        self.since = datetime.now(timezone.utc)
        self._events.clear()
        self._errors = 0

    def _close(self) -> None:
        self.state, self.reason, self.since, self.serving = "closed", None, None, False
        self._events.clear()
        self._errors = 0

    def describe(self) -> BreakerState:
        return BreakerState(
            open=self.state != "closed",
            reason=self.reason,
            since=self.since,
            serving=self.serving,
        )


class Breakers:
    """The breakers of every version, by version key, made on first use with shared settings."""

    def __init__(self, **settings):
        self.settings = settings
        self._by_key: dict[str, Breaker] = {}

    def __getitem__(self, key: str) -> Breaker:
        breaker = self._by_key.get(key)
        if breaker is None:
            breaker = self._by_key[key] = Breaker(**self.settings)
        return breaker

    def describe(self, key: str) -> BreakerState:
        breaker = self._by_key.get(key)
        return breaker.describe() if breaker else BreakerState()

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)

    def keys(self) -> list[str]:
        """The versions that have a breaker (that were routed to)."""
        return list(self._by_key)
