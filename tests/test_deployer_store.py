"""The deployer's store on SQLite and PostgreSQL: versions, traffic rules, recovery, migrations."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData

from hub_ext.services.common.errors import Conflict, NotFound
from hub_ext.services.deployer.backend import version_key
from hub_ext.services.deployer.db import make_engine, upgrade
from hub_ext.services.deployer.models import (
    CanaryPolicy,
    CreateDeployment,
    CreateVersion,
    Grants,
)
from hub_ext.services.deployer.orm import Base
from hub_ext.services.deployer.store import DeploymentStore, scale_split

from .conftest import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/deployer.sqlite"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def store(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    yield DeploymentStore(engine)
    engine.dispose()


def deploy(store, owner="alice", name="churn", uri="/models/1"):
    return store.create(owner, CreateDeployment(name=name, model_uri=uri), "tiny")


def test_migrations_match_metadata(db_url):
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    engine = make_engine(db_url)
    reflected = MetaData()
    reflected.reflect(engine)
    engine.dispose()
    for table in Base.metadata.tables.values():
        assert table.name in reflected.tables
        assert set(table.columns.keys()) == set(reflected.tables[table.name].columns.keys())
    assert "deployer_alembic_version" in reflected.tables


def test_create_and_first_ready(store):
    change = deploy(store)
    assert change.start == [1]
    d = change.deployment
    assert d.url == "/services/deployer/models/alice/churn/invocations"
    assert d.versions[0].state == "starting" and d.traffic == {}
    with pytest.raises(Conflict):
        deploy(store)
    ready = store.mark_ready("alice", "churn", 1)
    assert ready.deployment.traffic == {"1": 100} and ready.drain == []
    # others' deployments look missing; the same name is free for another owner
    with pytest.raises(NotFound):
        store.get("bob", "churn")
    deploy(store, owner="bob")
    assert [d.owner for d in store.list()] == ["alice", "bob"]
    assert [d.owner for d in store.list("bob")] == ["bob"]


def test_new_version_failure_leaves_traffic(store):
    deploy(store)
    store.mark_ready("alice", "churn", 1)
    change, v2 = store.add_version("alice", "churn", CreateVersion(model_uri="/m/2"), "tiny")
    assert v2.version == 2 and change.start == [2]
    store.mark_failed("alice", "churn", 2, "model not found")
    d = store.get("alice", "churn")
    assert d.traffic == {"1": 100}
    assert d.versions[1].state == "failed" and d.versions[1].reason == "model not found"
    with pytest.raises(Conflict, match="failed to start"):
        store.send_all("alice", "churn", 2, rollback=False)


def test_canary_then_promote_then_rollback(store):
    deploy(store)
    store.mark_ready("alice", "churn", 1)
    store.add_version("alice", "churn", CreateVersion(model_uri="/m/2", canary_percent=10), "tiny")
    change = store.mark_ready("alice", "churn", 2)
    assert change.deployment.traffic == {"1": 90, "2": 10} and change.drain == []
    change = store.send_all("alice", "churn", 2, rollback=False)
    assert change.deployment.traffic == {"2": 100} and change.drain == [1]
    assert change.deployment.previous_version == 1
    store.mark_stopped("alice", "churn", 1)
    # rollback to the stopped version: it starts; traffic stays until it is ready
    change = store.send_all("alice", "churn", None, rollback=True)
    assert change.start == [1] and change.deployment.traffic == {"2": 100}
    assert store.get_version("alice", "churn", 1).state == "starting"
    change = store.mark_ready("alice", "churn", 1)
    assert change.deployment.traffic == {"1": 100} and change.drain == [2]
    assert change.deployment.previous_version == 2


def test_explicit_split_and_cancelled_pending(store):
    deploy(store)
    store.mark_ready("alice", "churn", 1)
    store.add_version("alice", "churn", CreateVersion(model_uri="/m/2", canary_percent=0), "tiny")
    change = store.mark_ready("alice", "churn", 2)
    assert change.deployment.traffic == {"1": 100}  # canary 0: ready, unrouted, kept
    assert store.is_wanted("alice", "churn", 2)
    change = store.set_traffic("alice", "churn", {1: 50, 2: 50})
    assert change.deployment.traffic == {"1": 50, "2": 50}
    with pytest.raises(NotFound):
        store.set_traffic("alice", "churn", {1: 50, 7: 50})
    store.add_version("alice", "churn", CreateVersion(model_uri="/m/3"), "tiny")
    with pytest.raises(Conflict, match="only ready versions"):
        store.set_traffic("alice", "churn", {3: 100})
    # an explicit split cancels what version 3 would have taken
    change = store.set_traffic("alice", "churn", {2: 100})
    assert change.drain == [1, 3]
    assert store.mark_ready("alice", "churn", 3).drain == [3]
    assert store.get("alice", "churn").traffic == {"2": 100}


def canary(percent=10, window=60.0, **thresholds):
    return CreateVersion(
        model_uri="/m/2",
        canary=CanaryPolicy(percent=percent, window_seconds=window, **thresholds),
    )


def test_watched_canary_decided_once_across_a_restart(store):
    deploy(store)
    store.mark_ready("alice", "churn", 1)
    _, v = store.add_version("alice", "churn", canary(10, 30), "tiny")
    assert v.canary.state == "waiting" and v.canary.ends_at is None
    assert store.watches() == []  # not ready yet: nothing to judge
    change = store.mark_ready("alice", "churn", 2)
    assert change.deployment.traffic == {"1": 90, "2": 10}
    watch = change.deployment.versions[1].canary
    assert watch.state == "watching" and watch.baseline_version == 1
    assert (watch.ends_at - watch.started_at).total_seconds() == 30
    [w] = store.watches()
    assert (w.owner, w.name, w.version, w.baseline, w.ready) == ("alice", "churn", 2, 1, True)
    assert w.ends_at == watch.ends_at and w.policy.min_requests == 20
    # the deployer restarts: the same window resumes once the version is ready again
    store.recover()
    [w] = store.watches()
    assert not w.ready
    store.mark_ready("alice", "churn", 2)
    store.mark_ready("alice", "churn", 1)
    [w] = store.watches()
    assert w.ready and w.ends_at == watch.ends_at
    assert store.get("alice", "churn").traffic == {"1": 90, "2": 10}
    # a rollback: all traffic to the baseline, recorded with its reason and figures, once
    figures = {"canary": {"requests": 25, "error_rate": 0.5}, "baseline": {"requests": 200}}
    change = store.decide_canary("alice", "churn", 2, False, "error rate 0.5 > 0.1", figures)
    assert change.deployment.traffic == {"1": 100} and change.drain == [2]
    decided = store.get_version("alice", "churn", 2).canary
    assert decided.state == "rolled_back" and decided.reason == "error rate 0.5 > 0.1"
    assert decided.canary.requests == 25 and decided.baseline.requests == 200
    assert decided.decided_at is not None
    assert store.decide_canary("alice", "churn", 2, True, "again", figures) is None
    assert store.get("alice", "churn").traffic == {"1": 100}
    assert store.watches() == []


def test_watched_canary_promoted_and_stopped_by_hand(store):
    deploy(store)
    store.mark_ready("alice", "churn", 1)
    store.add_version("alice", "churn", canary(60, 10), "tiny")
    store.mark_ready("alice", "churn", 2)  # 60 %: the canary has most of the traffic
    assert store.watches()[0].baseline == 1
    change = store.decide_canary("alice", "churn", 2, True, "clean", {"canary": {}})
    assert change.deployment.traffic == {"2": 100} and change.drain == [1]
    assert store.get_version("alice", "churn", 2).canary.state == "promoted"
    # a split by hand during the window ends the watch, saying so
    store.add_version("alice", "churn", canary(20, 10), "tiny")
    store.mark_ready("alice", "churn", 3)
    store.set_traffic("alice", "churn", {2: 50, 3: 50})
    watch = store.get_version("alice", "churn", 3).canary
    assert watch.state == "stopped" and "traffic was set by hand" in watch.reason
    assert store.decide_canary("alice", "churn", 3, False, "late", {}) is None
    # so does a promote by hand, even before the canary is ready
    store.add_version("alice", "churn", canary(20, 10), "tiny")
    store.send_all("alice", "churn", 2, rollback=False)
    watch = store.get_version("alice", "churn", 4).canary
    assert watch.state == "stopped" and "version 2 was promoted by hand" in watch.reason


def test_watched_canary_needs_a_serving_version(store):
    deploy(store)
    with pytest.raises(Conflict, match="no version serving yet"):
        store.add_version("alice", "churn", canary(), "tiny")


def test_recover_and_delete(store):
    deploy(store)
    store.mark_ready("alice", "churn", 1)
    store.add_version("alice", "churn", CreateVersion(model_uri="/m/2"), "tiny")
    store.mark_ready("alice", "churn", 2)  # v1 lost its traffic: draining when we "crash"
    assert store.recover() == 1
    d = store.get("alice", "churn")
    assert [v.state for v in d.versions] == ["stopped", "starting"]
    assert [v.version for _, v in store.wanted()] == [2]
    store.set_grants("alice", "churn", Grants(users=["bob", "bob"], groups=["team"]))
    assert store.get("alice", "churn").grants.users == ["bob"]
    store.delete("alice", "churn")
    with pytest.raises(NotFound):
        store.get("alice", "churn")


@pytest.mark.parametrize(
    "traffic,total,expected",
    [
        ({1: 100}, 90, {1: 90}),
        ({1: 50, 2: 50}, 75, {1: 37, 2: 38}),
        ({1: 33, 2: 33, 3: 34}, 10, {1: 3, 2: 3, 3: 4}),
        ({1: 1, 2: 99}, 0, {}),
    ],
)
def test_scale_split(traffic, total, expected):
    result = scale_split(traffic, total)
    assert result == expected and sum(result.values()) == total


@pytest.mark.parametrize(
    "owner,name,version,key",
    [
        ("alice", "churn", 3, "alice--churn-v3"),
        ("Al Ice", "m", 1, "al-ice-6fb0a3de--m-v1"),
        ("a" * 30, "x" * 40, 12, None),
    ],
)
def test_version_key(owner, name, version, key):
    result = version_key(owner, name, version)
    assert len(result) <= 63 and "--" in result
    if key:
        assert result == key
