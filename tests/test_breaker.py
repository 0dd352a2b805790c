"""The circuit breaker's states over time: closed, open, half-open, closed or open again.

The breaker takes its clock as an argument: these tests move a clock by hand, so a
cooldown is crossed without waiting for it. The router's choice of versions is checked
with the same clock (its backend here only lists endpoints; nothing is forwarded).
"""

from __future__ import annotations

from hub_ext.services.deployer.backend import Backend
from hub_ext.services.deployer.breaker import Breaker, Breakers
from hub_ext.services.deployer.router import ModelRouter, Route


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened(clock: Clock, **settings) -> Breaker:
    """A breaker that has just opened: 2 failures of 4 requests (threshold 50%)."""
    breaker = Breaker(
        **{"window": 30, "min_requests": 4, "threshold": 0.5, "cooldown": 60, "probes": 3}
        | settings,
        clock=clock,
    )
    for ok in (True, False, True):
        breaker.record(ok)
        assert breaker.state == "closed" and breaker.routable()
    breaker.record(False)
    assert breaker.state == "open"
    assert "2 of the last 4 requests failed" in breaker.reason
    return breaker


def test_an_open_breaker_keeps_the_version_out_for_its_whole_cooldown():
    clock = Clock()
    breaker = opened(clock)
    assert not breaker.routable()
    described = breaker.describe()
    assert described.open and described.since is not None
    # requests it still serves (as the only version) neither close nor extend it
    clock.now += 30
    for ok in (True,) * 10 + (False,) * 10:
        breaker.record(ok)
    assert breaker.state == "open"
    clock.now += 29.9
    assert not breaker.routable() and breaker.state == "open"
    clock.now += 0.1
    assert breaker.routable(), "after the cooldown: half-open, traffic again as a probe"
    assert breaker.state == "half_open" and breaker.describe().open


def test_probe_successes_close_a_half_open_breaker():
    clock = Clock()
    breaker = opened(clock)
    clock.now += 60
    assert breaker.routable()
    breaker.record(True)
    breaker.record(True)
    assert breaker.state == "half_open", "3 probes must succeed, 2 did"
    breaker.record(True)
    assert breaker.state == "closed" and breaker.routable()
    described = breaker.describe()
    assert not described.open and described.reason is None and described.since is None
    # closed afresh: the failures before it opened count no more
    for ok in (False, True, True):
        breaker.record(ok)
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open", "2 of 4 new requests failed"


def test_a_failed_probe_opens_the_breaker_for_another_cooldown():
    clock = Clock()
    breaker = opened(clock)
    clock.now += 60
    assert breaker.routable()
    breaker.record(True)
    clock.now += 5
    breaker.record(False)
    assert breaker.state == "open" and not breaker.routable()
    assert "a probe request failed after the 60s cooldown" in breaker.reason
    # the new cooldown counts from the failed probe, not from the first opening
    clock.now += 59.9
    assert not breaker.routable()
    clock.now += 0.1
    assert breaker.routable() and breaker.state == "half_open"
    # the successes of the earlier probe do not carry over
    breaker.record(True)
    breaker.record(True)
    assert breaker.state == "half_open"
    breaker.record(True)
    assert breaker.state == "closed"


def test_failures_older_than_the_window_do_not_open_it():
    clock = Clock()
    breaker = Breaker(window=30, min_requests=4, threshold=0.5, cooldown=60, clock=clock)
    breaker.record(False)
    breaker.record(False)
    clock.now += 31
    for _ in range(3):
        breaker.record(True)
    breaker.record(False)
    assert breaker.state == "closed", "1 of the 4 requests in the window failed"
    breaker.record(False)
    assert breaker.state == "closed", "2 of 5 in the window: 40%"
    breaker.record(False)
    assert breaker.state == "open", "3 of 6 in the window: 50%"


class ListedEndpoints(Backend):
    """A backend that lists one endpoint per version key and runs nothing."""

    def endpoints(self, key: str) -> list[str]:
        return [f"http://127.0.0.1:9/{key}"]

    async def start(self, spec):
        raise NotImplementedError

    async def scale(self, spec):
        raise NotImplementedError

    async def stop(self, key, grace=20):
        raise NotImplementedError

    async def sweep(self):
        return

    async def close(self):
        return


async def test_the_router_skips_an_open_version_until_its_cooldown_then_probes_it():
    clock = Clock()
    breakers = Breakers(window=30, min_requests=4, threshold=0.5, cooldown=60, probes=2,
                        clock=clock)  # fmt: skip
    router = ModelRouter(ListedEndpoints(), breakers, None, None, 1024, 5)
    route = Route(
        owner="alice",
        name="churn",
        traffic={1: 50, 2: 50},
        keys={1: "alice-churn-1", 2: "alice-churn-2"},
        ready={1, 2},
        users=frozenset(),
        groups=frozenset(),
        services=frozenset(),
    )
    assert router.candidates(route) == [1, 2]
    for _ in range(4):
        breakers["alice-churn-2"].record(False)
    assert router.candidates(route) == [1], "open: its share goes to version 1"
    assert not breakers["alice-churn-2"].serving
    clock.now += 30
    assert router.candidates(route) == [1], "still cooling down"
    clock.now += 30
    assert router.candidates(route) == [1, 2], "half-open: its share again, as a probe"
    breakers["alice-churn-2"].record(False)
    assert router.candidates(route) == [1], "a failed probe: out for another cooldown"
    clock.now += 60
    assert router.candidates(route) == [1, 2]
    breakers["alice-churn-2"].record(True)
    breakers["alice-churn-2"].record(True)
    assert not breakers.describe("alice-churn-2").open

    # the only version of a split serves while its breaker is open, and says so
    alone = Route(**{**route.__dict__, "traffic": {2: 100}, "weights": {}})
    for _ in range(4):
        breakers["alice-churn-2"].record(False)
    assert router.candidates(alone) == [2]
    assert breakers.describe("alice-churn-2").serving


def test_the_metrics_window_is_the_configured_one_for_new_and_existing_versions():
    router = ModelRouter(ListedEndpoints(), Breakers(), None, None, 1024, 5, window_seconds=15)
    old = router.window("alice-churn-1")
    assert old.seconds == 15
    old.record(0.01, False, 500)
    assert old.summary()["window_seconds"] == 15
    router.set_window(300)  # a deployer restarted with another c.DeployerService.metrics_window
    assert old.seconds == 300 and router.window("alice-churn-2").seconds == 300
    assert old.summary()["window_requests"] == 1, "what the window holds stays"
