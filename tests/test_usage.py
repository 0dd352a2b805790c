"""Usage accounting (hub_ext/services/usage, hub_ext/host/usage.py): the arithmetic, the
store on SQLite and PostgreSQL, and real cgroups.

- pure: counting a reading against the last one (CPU from the cumulative counter,
  memory by the trapezoid rule, GPU-hours), a reading counted twice adds nothing,
  Kubernetes usage from requests, prices, percentiles and right-sizing;
- the store, on both databases: a final reading seen twice is counted once, a
  reused cgroup name ends the old instance, reports by user, group, profile, object
  over a period;
- real: a CPU-burning process started by LocalHost.launch in a real cgroup, sampled
  while it runs; what is counted matches the cgroup's own counter (and the process's
  own CPU time) within 5 %, and a restart of the sampler in the middle (a new store
  and core on the same database) neither loses nor counts twice.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time

import pytest

from hub_ext.host.cgroups import Counters, read_counters
from hub_ext.host.launch import LaunchRequest
from hub_ext.host.local import LocalHost
from hub_ext.host.usage import UsageLabel, UsageLedger
from hub_ext.services.usage.accounting import (
    Counted,
    Delta,
    GiB,
    MiB,
    Prices,
    Reading,
    advance,
    cost,
    idle_seconds,
    percentile,
    prices_for,
    recommend_cpu,
    recommend_memory,
    requested_usage,
    round_memory,
)
from hub_ext.services.usage.core import UsageCore
from hub_ext.services.usage.db import make_engine, upgrade
from hub_ext.services.usage.models import parse_timestamp
from hub_ext.services.usage.store import UsageStore

from .conftest import needs_root, postgres_database
from .hubtools import remove_cgroups, remove_test_accounts, tagged
from .runspecs import profile

PREFIX = tagged("syuse-")
CGROUPS = tagged("shipyard-test-use")

# ------------------------------------------------------------------ pure


def test_cpu_is_the_counter_difference_and_a_reading_counts_once():
    state = Counted(gpus=0, last_at=100.0)
    state, delta = advance(state, Reading(110.0, 4_000_000, GiB, GiB))
    assert delta.cpu_seconds == pytest.approx(4.0)
    assert delta.wall_seconds == 10.0
    # the first interval holds the first sample's level: 1 GiB for 10 s
    assert delta.mem_gib_hours == pytest.approx(10 / 3600)
    again, nothing = advance(state, Reading(110.0, 4_000_000, GiB, GiB))
    assert (again, nothing) == (state, Delta())
    older, nothing = advance(state, Reading(105.0, 2_000_000, GiB, GiB))
    assert nothing == Delta()
    state, delta = advance(state, Reading(120.0, 9_000_000, 3 * GiB, 3 * GiB))
    assert delta.cpu_seconds == pytest.approx(5.0)
    assert delta.mem_gib_hours == pytest.approx(2 * 10 / 3600)  # mean of 1 and 3 GiB
    assert state.peak_mem == 3 * GiB
    assert state.peak_cores == pytest.approx(0.5)
    assert state.last_busy_at == 120.0


def test_a_final_reading_without_memory_keeps_the_last_level_and_gpus_are_held_time():
    state = Counted(gpus=2, last_at=0.0, last_cpu_usec=1_000_000, last_mem=2 * GiB)
    state, delta = advance(state, Reading(1800.0, 1_000_000, None, 2 * GiB))
    assert delta.gpu_hours == pytest.approx(1.0)  # 2 GPUs for half an hour
    assert delta.mem_gib_hours == pytest.approx(1.0)  # 2 GiB for half an hour
    assert delta.cpu_seconds == 0
    assert state.last_busy_at is None  # no CPU: idle since it started


def test_kubernetes_usage_is_the_requests_for_the_lifetime():
    usage = requested_usage(cpu_request=0.5, mem_request_bytes=2 * GiB, gpus=1, seconds=7200)
    assert usage == Delta(cpu_seconds=3600, mem_gib_hours=4.0, gpu_hours=2.0, wall_seconds=7200)
    with pytest.raises(ValueError, match="negative"):
        requested_usage(1, GiB, 0, -1)


def test_prices_by_profile_override_the_global_ones():
    default = Prices(cpu_hour=0.04, gib_hour=0.01, gpu_hour=2.0)
    a100 = prices_for("a100", default, {"a100": {"gpu_hour": 3.0}})
    assert a100 == Prices(0.04, 0.01, 3.0)
    usage = Delta(cpu_seconds=7200, mem_gib_hours=10, gpu_hours=1)
    assert cost(usage, default) == pytest.approx(2 * 0.04 + 10 * 0.01 + 2.0)
    assert cost(usage, a100) == pytest.approx(2 * 0.04 + 10 * 0.01 + 3.0)


def test_right_sizing_recommends_a_limit_that_fits_the_p95():
    assert percentile([], 95) == 0
    assert percentile(range(1, 101), 95) == 95
    assert round_memory(1.375 * GiB) == 2 * GiB
    assert round_memory(100 * MiB) == 256 * MiB
    peaks = [int(x * GiB) for x in [0.5, 0.6, 0.8, 0.9, 1.0, 1.0, 1.05, 1.1, 1.1, 0.7]]
    rec = recommend_memory("medium", 4 * GiB, peaks, 30)
    assert rec is not None and rec.suggested == 2 * GiB
    assert rec.message == (
        "medium: peak memory p95 1.1 GiB of 4 GiB over 30 days (10 instances); 2 GiB would fit"
    )
    assert recommend_memory("medium", 2 * GiB, peaks, 30) is None  # p95 above half the limit
    assert recommend_memory("medium", None, peaks, 30) is None  # no limit
    cpu = recommend_cpu("large", 8.0, [0.4, 1.2, 0.9], 30)
    assert cpu is not None and cpu.suggested == 1.5
    assert recommend_cpu("large", 2.0, [1.2], 30) is None
    assert idle_seconds(1000.0, 100.0, None) == 900.0
    assert idle_seconds(1000.0, 100.0, 990.0) == 10.0


def test_report_times_are_iso_or_epoch_seconds_and_nothing_else():
    assert parse_timestamp("2026-12-01") == parse_timestamp("2026-12-01T00:00:00Z")
    assert parse_timestamp("2026-12-01T01:00:00+01:00") == parse_timestamp("2026-12-01")
    assert parse_timestamp("1764547200") == 1764547200.0
    assert parse_timestamp(None) is None and parse_timestamp("") is None
    for bad in ("nan", "inf", "-5", "1e30", "yesterday", "2026-13-01"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_counters_are_read_from_v2_and_v1_files(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n")
    (v2 / "memory.current").write_text("1048576\n")
    (v2 / "memory.peak").write_text("2097152\n")
    dirs = {"cpu": str(v2), "memory": str(v2)}
    assert read_counters("cgroup2", dirs) == Counters(1234567, 1048576, 2097152)
    mem, acct = tmp_path / "memory", tmp_path / "cpuacct"
    mem.mkdir()
    acct.mkdir()
    (acct / "cpuacct.usage").write_text("5000000000\n")
    (mem / "memory.usage_in_bytes").write_text("4096\n")
    (mem / "memory.max_usage_in_bytes").write_text("8192\n")
    v1 = {"cpu": str(acct), "memory": str(mem)}
    assert read_counters("cgroup1", v1) == Counters(5_000_000, 4096, 8192)
    assert (
        read_counters("cgroup1", {"cpu": str(tmp_path / "x"), "memory": str(tmp_path / "y")})
        is None
    )
    assert read_counters("rlimit", {}) is None


def test_the_ledger_is_root_only_even_where_an_older_folder_was_open(tmp_path):
    from hub_ext.host.cgroups import CgroupV2, Limits

    folder = tmp_path / "usage"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    ledger = UsageLedger(folder)
    driver = CgroupV2("sy-parent", root=tmp_path / "cgroup")
    label = UsageLabel("replica", "alice", "model/alice/iris/v3")
    instance = ledger.opened(driver, "iris-r0", label, "small", Limits(gpus=("0", "1")), now=5.0)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "sy-parent").stat().st_mode) == 0o700
    ((path, record),) = ledger.records(["sy-parent"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (record["id"], record["gpus"], record["started"]) == (instance, 2, 5.0)
    assert record["dirs"]["cpu"] == str(tmp_path / "cgroup" / "sy-parent" / "iris-r0")
    ledger.closed(driver, "iris-r0", now=9.0)  # the cgroup is gone: no counters to record
    ((_, closed),) = ledger.records(["sy-parent"])
    assert closed["final"] == {"at": 9.0, "cpu_usec": None, "mem_current": None, "mem_peak": None}
    with pytest.raises(ValueError, match="usage kind 'pod'"):
        UsageLabel("pod", "alice", "x")


def fake_v1_container(root, path: str, cpu_nsec: int, mem: int, peak: int) -> None:
    """A container's cgroup as podman makes it on cgroup v1, with cpuacct apart from cpu."""
    for hierarchy, files in (
        ("cpuacct", {"cpuacct.usage": cpu_nsec}),
        ("memory", {"memory.usage_in_bytes": mem, "memory.max_usage_in_bytes": peak}),
    ):
        folder = root / hierarchy / path.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (folder / name).write_text(f"{value}\n")


def test_a_containers_cgroup_is_found_on_v1_and_v2_where_podman_put_it(tmp_path):
    from hub_ext.host.cgroups import container_counter_dirs

    path = "/libpod_parent/libpod-abc"
    v1 = tmp_path / "v1"
    fake_v1_container(v1, path, 1, 2, 3)
    assert container_counter_dirs(path, v1) == (
        "cgroup1",
        {"cpu": str(v1 / "cpuacct/libpod_parent/libpod-abc"), "memory": str(v1 / "memory") + path},
    )
    joined = tmp_path / "joined"  # cpu,cpuacct mounted together, seen as "cpu" only
    (joined / "cpu/machine.slice/libpod-abc.scope").mkdir(parents=True)
    (joined / "cpu/machine.slice/libpod-abc.scope/cpuacct.usage").write_text("7\n")
    kind, dirs = container_counter_dirs("/machine.slice/libpod-abc.scope", joined) or ("", {})
    assert (kind, dirs["cpu"]) == ("cgroup1", str(joined / "cpu/machine.slice/libpod-abc.scope"))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    folder = str(v2 / "machine.slice/libpod-abc.scope")
    assert container_counter_dirs("/machine.slice/libpod-abc.scope", v2) == (
        "cgroup2",
        {"cpu": folder, "memory": folder},
    )
    for bad in ("", "/", "/libpod_parent/../../etc"):
        assert container_counter_dirs(bad, v1) is None


class CgroupOnlyHost:
    """What :meth:`ContainerHost.count_usage` asks of podman: the container's inspection."""

    def __init__(self, root, state: dict):
        import logging

        from hub_ext.host.containerhost import ContainerHost

        self.state = state
        self.cgroup_root = root
        self.log = logging.getLogger("test")
        self.count_usage = ContainerHost.count_usage.__get__(self)
        self._running_cgroup = ContainerHost._running_cgroup.__get__(self)

    async def inspect(self, container: str) -> dict | None:
        return {"State": self.state} if self.state else None


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_container_is_counted_from_its_cgroup_and_closed_with_its_last_reading(
    tmp_path, monkeypatch
):
    """Opened once it runs, with the labels a process would have; closed with the last
    counters read when podman deletes its cgroup (it exited by itself); counted by the
    usage service as a process's cgroup is, the last reading once."""
    import shutil

    from hub_ext.host.cgroups import Limits

    root, path = tmp_path / "cgroup", "/libpod_parent/libpod-1234"
    ledger = UsageLedger(tmp_path / "usage")
    host = CgroupOnlyHost(root, {"Running": False, "Status": "created"})
    label = UsageLabel("run", "ada", "job/7/run/42")
    until = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        host.count_usage(
            "sy-job-x-1",
            until,
            ledger,
            "sy-parent-jobs",
            label,
            "small",
            Limits(mem_limit=256 * MiB, gpus=("nvidia.com/gpu=0",)),
            interval=0.05,
        )
    )
    await asyncio.sleep(0.2)
    assert ledger.records(["sy-parent-jobs"]) == []  # not running yet: nothing to open
    fake_v1_container(root, path, 2_000_000_000, 10 * MiB, 12 * MiB)
    host.state.update(Running=True, Status="running", CgroupPath=path)
    await _until(lambda: ledger.records(["sy-parent-jobs"]))
    ((_, opened),) = ledger.records(["sy-parent-jobs"])
    assert (opened["kind"], opened["owner"], opened["object"]) == ("run", "ada", "job/7/run/42")
    assert (opened["cgroup"], opened["driver"], opened["gpus"]) == ("sy-job-x-1", "cgroup1", 1)
    assert opened["mem_limit"] == 256 * MiB and opened["final"] is None
    assert opened["dirs"]["cpu"] == str(root / "cpuacct") + path
    # the usage service reads the open record's cgroup as it reads a process's
    db = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    core = UsageCore(
        ledger,
        ["sy-parent-jobs"],
        store_on(db),
        prices=Prices(cpu_hour=1.0),
        profile_prices={},
        currency="USD",
        idle_after=3600,
        rightsizing_days=30,
    )
    assert core.sample().cpu_seconds == pytest.approx(2.0)
    fake_v1_container(root, path, 5_000_000_000, 40 * MiB, 64 * MiB)  # it works on
    await asyncio.sleep(0.2)  # read at least once more
    shutil.rmtree(root)  # it exited: podman deleted its cgroup
    assert await asyncio.wait_for(task, 5) == opened["id"]
    ((_, closed),) = ledger.records(["sy-parent-jobs"])
    assert closed["final"]["cpu_usec"] == 5_000_000 and closed["final"]["mem_peak"] == 64 * MiB
    assert core.sample().cpu_seconds == pytest.approx(3.0)  # the tail, from the last reading
    assert core.sample().cpu_seconds == 0 and ledger.records(["sy-parent-jobs"]) == []
    (row,) = core.store.usage("object", 0, time.time() + 3600)
    assert row.usage.cpu_seconds == pytest.approx(5.0)


async def test_a_container_found_running_again_keeps_its_open_record(tmp_path):
    """After a restart (the hub's, the deployer's) the container's open record goes on,
    not a second one; stopped by its caller, it is closed; cancelled, it stays open."""
    from hub_ext.host.cgroups import ContainerCgroup, Limits

    root, path = tmp_path / "cgroup", "/libpod_parent/libpod-5678"
    fake_v1_container(root, path, 1_000_000, MiB, MiB)
    ledger = UsageLedger(tmp_path / "usage")
    label = UsageLabel("server", "ada", "server/ada/")
    cgroup = ContainerCgroup.of("sy-parent", path, root)
    assert cgroup is not None
    first = ledger.opened(cgroup, "sy-ada", label, "small", Limits(), now=1.0)
    host = CgroupOnlyHost(root, {"Running": True, "Status": "running", "CgroupPath": path})
    loop = asyncio.get_running_loop()

    def watch(until):
        return asyncio.create_task(
            host.count_usage(
                "sy-ada", until, ledger, "sy-parent", label, "small", Limits(), resume=True
            )
        )

    running = watch(loop.create_future())
    await asyncio.sleep(0.1)
    running.cancel()  # the hub stops; the container runs on
    with pytest.raises(asyncio.CancelledError):
        await running
    ((_, record),) = ledger.records(["sy-parent"])
    assert (record["id"], record["final"]) == (first, None)
    until = loop.create_future()
    again = watch(until)
    await asyncio.sleep(0.1)
    fake_v1_container(root, path, 9_000_000, MiB, 2 * MiB)
    until.set_result(None)  # stopped and removed by its caller
    assert await asyncio.wait_for(again, 5) == first
    ((_, record),) = ledger.records(["sy-parent"])
    assert record["final"]["cpu_usec"] == 9_000 and record["final"]["mem_peak"] == 2 * MiB


# ------------------------------------------------------------------ the store


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'usage.sqlite'}"
    else:
        with postgres_database() as url:
            yield url


def store_on(url: str) -> UsageStore:
    upgrade(url)
    return UsageStore(make_engine(url))


def record(instance: str, owner: str = "alice", started: float = 0.0, **more) -> dict:
    return {
        "id": instance,
        "kind": "run",
        "owner": owner,
        "object": f"job/1/run/{instance}",
        "profile": "small",
        "parent": "p",
        "cgroup": f"c-{instance}",
        "gpus": 1,
        "cpu_limit": 2.0,
        "mem_limit": 4 * GiB,
        "started": started,
        **more,
    }


def test_the_store_counts_a_final_reading_once_and_reports_by_period(db_url):
    store = store_on(db_url)
    a = record("a" * 32)
    b = record("b" * 32, owner="bob", profile="large")
    store.count(a, Reading(1800.0, 900_000_000, GiB, GiB), final=False)
    store.count(a, Reading(3600.0 + 1800, 1_800_000_000, GiB, GiB), final=True)
    # the same final reading again (a restart before the ledger file was deleted)
    assert store.count(a, Reading(3600.0 + 1800, 1_800_000_000, GiB, GiB), final=True) is None
    assert store.ended(a["id"])
    store.count(b, Reading(600.0, 60_000_000, 2 * GiB, 2 * GiB), final=False)
    by_user = {r.key: r.usage for r in store.usage("user", 0, 7200)}
    assert by_user["alice"].cpu_seconds == pytest.approx(1800.0)
    assert by_user["alice"].gpu_hours == pytest.approx(1.5)
    assert by_user["alice"].mem_gib_hours == pytest.approx(1.5)
    assert by_user["bob"].cpu_seconds == pytest.approx(60.0)
    # the second hour alone: alice's second reading (counted in the hour it was taken)
    second = {r.key: r.usage for r in store.usage("user", 3600, 7200)}
    assert set(second) == {"alice"} and second["alice"].cpu_seconds == pytest.approx(900.0)
    assert {r.key for r in store.usage("profile", 0, 7200)} == {"small", "large"}
    assert {r.key for r in store.usage("object", 0, 7200, owner="bob")} == {b["object"]}
    # a counter below the last counted: the name was reused; the old instance ends
    store.count(b, Reading(900.0, 1_000, GiB, GiB), final=False)
    assert store.ended(b["id"])
    assert {r.key: r.usage for r in store.usage("user", 0, 7200)}["bob"].cpu_seconds == 60.0


def test_a_pass_is_counted_in_one_transaction_with_a_few_statements(db_url):
    """count_all: 40 instances' readings in one transaction, a statement count that does not
    grow with them (the rows and hours read with one query each, written at one commit)."""
    from sqlalchemy import event

    store = store_on(db_url)
    records = [record(f"{i:032x}", owner=f"u{i % 4}") for i in range(40)]
    first = [(r, Reading(1800.0, 1_000_000, GiB, GiB), False) for r in records]
    assert all(d is not None for d in store.count_all(first))  # the rows made
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement.split()[0].upper())

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        second = [(r, Reading(1900.0, 3_000_000, GiB, GiB), False) for r in records]
        # the same instance twice in a pass: its second reading counts against its first
        second.append((records[0], Reading(2000.0, 4_000_000, GiB, GiB), True))
        deltas = store.count_all(second)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert [d.cpu_seconds for d in deltas[:40]] == [pytest.approx(2.0)] * 40
    assert deltas[40].cpu_seconds == pytest.approx(1.0) and store.ended(records[0]["id"])
    selects = statements.count("SELECT")
    assert selects <= 3, statements  # instances, hours (+ nothing per instance)
    assert statements.count("COMMIT") <= 1 and len(statements) <= 8, statements
    by_user = {r.key: r.usage for r in store.usage("user", 0, 7200)}
    assert by_user["u0"].cpu_seconds == pytest.approx(10 * 3.0 + 1.0)


def test_a_report_by_day_is_every_day_of_the_period_and_by_kind_is_per_kind(db_url, tmp_path):
    store = store_on(db_url)
    core = UsageCore(
        UsageLedger(str(tmp_path / "ledger")),
        [],
        store,
        prices=Prices(cpu_hour=1.0, gpu_hour=2.0),
        profile_prices={"large": {"gpu_hour": 10.0}},
        currency="USD",
        idle_after=3600,
        rightsizing_days=7,
    )
    day = 86400.0
    run = record("a" * 32, started=0.0)
    server = record(
        "b" * 32, kind="server", profile="large", object="server/alice/", gpus=0, started=2 * day
    )
    # a run over the first hour of day 0; a server on day 2 (nothing on day 1)
    store.count(run, Reading(0.0, 0, GiB, GiB), final=False)
    store.count(run, Reading(3600.0, 1_800_000_000, GiB, GiB), final=True)
    store.count(server, Reading(2 * day, 0, GiB, GiB), final=False)
    store.count(server, Reading(2 * day + 3600, 3_600_000_000, GiB, GiB), final=False)

    series = asyncio.run(core.report("day", 0.0, 3 * day, "alice"))
    assert [r["key"] for r in series] == ["1970-01-01", "1970-01-02", "1970-01-03"]
    assert [r["cpu_hours"] for r in series] == pytest.approx([0.5, 0.0, 1.0])
    # each row costed at its own profile's prices: day 0 the run's GPU at 2, day 2 none
    assert series[0]["gpu_hours"] == pytest.approx(1.0)
    assert [r["cost"] for r in series] == pytest.approx([0.5 + 2.0, 0.0, 1.0])
    # a period not on day boundaries touches each day it overlaps, once
    assert [r["key"] for r in asyncio.run(core.report("day", day / 2, 2 * day + 1, None))] == [
        "1970-01-01",
        "1970-01-02",
        "1970-01-03",
    ]
    assert asyncio.run(core.report("day", 0.0, day, "bob"))[0]["cpu_hours"] == 0.0

    kinds = {r["key"]: r for r in asyncio.run(core.report("kind", 0.0, 3 * day, None))}
    assert set(kinds) == {"run", "server"}
    assert kinds["server"]["cpu_hours"] == pytest.approx(1.0)


# ------------------------------------------------------------------ real cgroups

#: Burns ``seconds`` of CPU time (at most for 60 s of wall time, on a busy machine), prints
#: its own CPU time, then waits to be killed.
BURN = """
import sys, time
target, end = float(sys.argv[1]), time.monotonic() + 60
while time.process_time() < target and time.monotonic() < end:
    pass
print(time.process_time(), flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def host(home_root, tmp_path_factory):
    host = LocalHost(
        system_user_prefix=PREFIX,
        home_dir_template=str(home_root / "{account}"),
        cgroup_parent=CGROUPS,
        gpu_devices=[],
        usage_dir=str(tmp_path_factory.mktemp("ledger") / "usage"),  # made by the ledger
    )
    yield host
    remove_test_accounts(PREFIX)
    remove_cgroups(CGROUPS)


class Output(asyncio.SubprocessProtocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.data += data


def core_on(host: LocalHost, url: str) -> UsageCore:
    return UsageCore(
        UsageLedger(host.usage_dir),
        [host.cgroup_parent_of(p) for p in ("", "jobs", "models")],
        store_on(url),
        prices=Prices(cpu_hour=1.0),
        profile_prices={},
        currency="USD",
        idle_after=3600,
        rightsizing_days=30,
    )


@needs_root
def test_a_cpu_burning_run_is_counted_as_its_cgroup_counted_it_across_a_restart(host, db_url):
    """The counted CPU-seconds match the cgroup's counter within 5 %; a restart of the
    sampler in the middle neither loses nor counts twice; removal records the tail."""
    driver = host.open_driver(CGROUPS, "no cgroups")
    if not driver.enforces_total:
        pytest.skip("no writable cgroup hierarchy here")
    name = f"use-{db_url.rsplit('/', 1)[-1][-8:].replace('.', '-')}"
    seconds = 2.0

    async def start():
        user = await host.account("ada", RuntimeError)
        output = Output()
        launched = await host.launch(
            LaunchRequest(
                user=user,
                profile=profile(mem_limit="256Mi", cpu_limit="1"),
                argv=["/usr/bin/python3", "-c", BURN, str(seconds)],
                env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "LANG": "C.UTF-8"},
                driver=driver,
                cgroup=name,
                cwd="/",
                usage=UsageLabel("run", "ada", "job/7/run/42"),
            ),
            output,
        )
        return launched, output

    loop = asyncio.new_event_loop()
    launched, output = loop.run_until_complete(start())
    try:
        ledger = UsageLedger(host.usage_dir)
        ((_, opened),) = [(p, r) for p, r in ledger.records([CGROUPS]) if r["cgroup"] == name]
        assert (opened["kind"], opened["owner"], opened["object"]) == ("run", "ada", "job/7/run/42")
        assert opened["mem_limit"] == 256 * MiB and opened["final"] is None
        # only root reads the ledger: its labels are what the report trusts
        for path in (ledger.directory, ledger.directory / CGROUPS):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        (record_file,) = (ledger.directory / CGROUPS).glob(f"{name}~*.json")
        assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
        first = core_on(host, db_url)
        time.sleep(1.0)
        first.sample()  # mid-run
        first.store.engine.dispose()  # the service stops...
        time.sleep(0.7)
        second = core_on(host, db_url)  # ...and a new one starts on the same database
        second.sample()
        second.sample()
        loop.run_until_complete(_wait_output(output, 90))
        process_cpu = float(output.data.decode().split()[0])
        counter = driver.counters(name)
        assert counter is not None and counter.cpu_usec is not None
        driver.remove(name)  # kills the process, records the last reading, removes the cgroup
        ((_, closed),) = [(p, r) for p, r in ledger.records([CGROUPS]) if r["cgroup"] == name]
        assert closed["final"]["cpu_usec"] >= counter.cpu_usec
        second.sample()
        second.sample()  # the final reading once, whatever passes follow
        assert not [r for _, r in ledger.records([CGROUPS]) if r["cgroup"] == name]
        (row,) = [r for r in second.store.usage("object", 0, time.time() + 3600)]
        counted = row.usage.cpu_seconds
        final_seconds = closed["final"]["cpu_usec"] / 1e6
        # exactly the cgroup's own counter: no reading lost, none counted twice
        assert counted == pytest.approx(final_seconds, abs=1e-6)
        # and within 5 % of the CPU time the process measured itself
        assert counted == pytest.approx(process_cpu, rel=0.05)
        assert counted >= 0.95 * seconds  # it did burn what it was to burn
        (instance,) = second.store.instances(0)
        assert instance.ended is not None and instance.readings >= 4
        assert instance.peak_mem > 0 and instance.peak_cores > 0
        print(json.dumps({"counted": counted, "cgroup": final_seconds, "process": process_cpu}))
    finally:
        if driver.exists(name):
            driver.remove(name)
        if launched.transport is not None:
            launched.transport.close()
        loop.close()


async def _wait_output(output: Output, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while b"\n" not in output.data:
        if time.monotonic() > deadline:
            raise TimeoutError("the burner printed nothing")
        await asyncio.sleep(0.05)
