"""The audit trail itself: the chain, verify, retention, concurrent writers, the CLI.

Real files, a real SQLite database and a real PostgreSQL server; several real
processes writing at once. The trail as the hub and the services write it is
tested in test_audit_trail.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect as sa_inspect

import hub_ext.audit as audit
from hub_ext.audit import emit
from hub_ext.audit.chain import GENESIS, record_hash, seal
from hub_ext.audit.db import make_engine
from hub_ext.audit.hub import match as hub_route
from hub_ext.audit.orm import Base
from hub_ext.audit.retention import prune
from hub_ext.audit.settings import AuditSettings
from hub_ext.audit.verify import verify
from hub_ext.cli.main import main as cli_main

from .conftest import postgres_database

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    if request.param == "sqlite":
        yield None
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def trail(tmp_path, monkeypatch, backend):
    """A fresh trail in ``tmp_path/audit`` (SQLite there, or a fresh PostgreSQL database)."""
    directory = tmp_path / "audit"
    monkeypatch.setenv("SHIPYARD_AUDIT_DIR", str(directory))
    monkeypatch.delenv("SHIPYARD_AUDIT", raising=False)
    monkeypatch.delenv("SHIPYARD_AUDIT_RETENTION_DAYS", raising=False)
    if backend:
        monkeypatch.setenv("SHIPYARD_AUDIT_DB_URL", backend)
    else:
        monkeypatch.delenv("SHIPYARD_AUDIT_DB_URL", raising=False)
    audit.reset()
    yield directory
    audit.reset()


@pytest.fixture
def sqlite_trail(tmp_path, monkeypatch):
    directory = tmp_path / "audit"
    monkeypatch.setenv("SHIPYARD_AUDIT_DIR", str(directory))
    for name in ("SHIPYARD_AUDIT", "SHIPYARD_AUDIT_DB_URL", "SHIPYARD_AUDIT_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    audit.reset()
    yield directory
    audit.reset()


def lines(directory: Path) -> list[dict]:
    return [json.loads(x) for x in (directory / "audit.jsonl").read_text().splitlines()]


def write_lines(directory: Path, records: list[dict]) -> None:
    (directory / "audit.jsonl").write_text(
        "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
    )


def some_records(n: int = 5) -> None:
    for i in range(n):
        assert emit(
            "job.create",
            actor="alice",
            target=f"job/{i}",
            owner="alice",
            client="127.0.0.1",
            details={"i": i},
        )


def table_rows(settings: AuditSettings) -> list[tuple]:
    engine = make_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT seq, prev_hash, hash, record FROM audit_records ORDER BY seq"
            ).all()
    finally:
        engine.dispose()


def execute(settings: AuditSettings, sql: str, params: dict | None = None) -> None:
    engine = make_engine(settings.db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql, params or {})
    finally:
        engine.dispose()


def problems(directory: Path) -> list[tuple[str, int | None, str]]:
    report = verify(AuditSettings())
    return [(p.where, p.seq, p.kind) for p in report.problems]


# ------------------------------------------------------------------ the chain


def test_each_record_links_to_the_one_before_in_the_file_and_the_table(trail):
    some_records(5)
    records = lines(trail)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev_hash"] == GENESIS
    for before, after in zip(records, records[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    for r in records:
        assert record_hash(r) == r["hash"]
        assert r["__schema__"] == audit.SCHEMA_ID and r["__schema_version__"] == "1"
        assert (r["actor"], r["actor_kind"], r["outcome"], r["client"]) == (
            "alice",
            "user",
            "allowed",
            "127.0.0.1",
        )
    rows = table_rows(AuditSettings())
    assert [(s, p, h) for s, p, h, _ in rows] == [
        (r["seq"], r["prev_hash"], r["hash"]) for r in records
    ]
    assert [json.loads(rec) for *_, rec in rows] == records
    report = verify(AuditSettings())
    assert report.ok, report.problems
    assert (report.file_records, report.table_records) == (5, 5)


def test_files_are_private(sqlite_trail):
    some_records(1)
    assert sqlite_trail.stat().st_mode & 0o777 == 0o700
    assert (sqlite_trail / "audit.jsonl").stat().st_mode & 0o777 == 0o600
    assert (sqlite_trail / "audit.sqlite").stat().st_mode & 0o077 == 0


def test_emit_never_raises(sqlite_trail, caplog):
    # an action of the wrong form fails the schema: logged, not raised, nothing written
    assert emit("Not An Action", actor="alice") is None
    assert emit("job.create", actor="alice", outcome="maybe") is None
    assert "could not write audit record" in caplog.text
    assert not (sqlite_trail / "audit.jsonl").exists() or lines(sqlite_trail) == []
    # a directory that cannot be created
    audit.reset()
    blocker = sqlite_trail.parent / "a-file"
    blocker.write_text("")
    os.environ["SHIPYARD_AUDIT_DIR"] = str(blocker / "audit")
    assert emit("job.create", actor="alice") is None


def test_off_records_nothing(sqlite_trail, monkeypatch):
    monkeypatch.setenv("SHIPYARD_AUDIT", "0")
    audit.reset()
    assert emit("job.create", actor="alice") is None
    assert not sqlite_trail.exists()


def test_details_never_carry_credentials(sqlite_trail):
    record = emit("token.create", actor="alice", details={"token": "s3cr3t", "note": "ci"})
    assert record["details"] == {"token": "[redacted]", "note": "ci"}
    assert "s3cr3t" not in (sqlite_trail / "audit.jsonl").read_text()


def test_emit_costs_well_under_a_millisecond(sqlite_trail):
    some_records(20)  # engine, schema and caches warm
    times = []
    for i in range(300):
        t = time.perf_counter()
        emit("job.create", actor="alice", target=f"job/{i}", owner="alice")
        times.append(time.perf_counter() - t)
    p50 = statistics.median(times)
    print(f"emit p50 {p50 * 1e3:.3f} ms")
    # 1 ms is the target (bench/audit.py); the margin absorbs a busy shared test machine
    assert p50 < 0.002


# ------------------------------------------------------------ verify: the file


def test_verify_names_an_edited_record_in_the_file(trail):
    some_records(5)
    records = lines(trail)
    records[2]["actor"] = "mallory"
    write_lines(trail, records)
    found = problems(trail)
    assert ("file", 3, "edited") in found
    assert ("both", 3, "mismatch") in found


def test_verify_names_an_edited_record_whose_hash_was_recomputed(trail):
    some_records(5)
    records = lines(trail)
    records[2]["actor"] = "mallory"
    records[2]["hash"] = record_hash(records[2])
    write_lines(trail, records)
    found = problems(trail)
    assert ("file", 4, "inserted") in found  # seq 4 no longer follows seq 3
    assert ("file", 3, "edited") not in found


def test_verify_names_a_deleted_record_in_the_file(trail):
    some_records(5)
    records = lines(trail)
    write_lines(trail, records[:2] + records[3:])
    found = problems(trail)
    assert ("file", 3, "deleted") in found
    assert ("file", 3, "mismatch") in found  # in the table but not in the file


def test_verify_names_deleted_first_records_in_the_file(trail):
    some_records(5)
    write_lines(trail, lines(trail)[2:])
    assert ("file", 3, "deleted") in problems(trail)


def test_verify_names_an_inserted_record_in_the_file(trail):
    some_records(5)
    records = lines(trail)
    forged = seal(
        {k: v for k, v in records[2].items() if k not in ("seq", "prev_hash", "hash")}
        | {"actor": "mallory"},
        4,
        records[2]["hash"],
    )
    write_lines(trail, records[:3] + [forged] + records[3:])
    assert problems(trail) == [("file", 4, "inserted")]


def test_verify_names_reordered_records_in_the_file(trail):
    some_records(5)
    records = lines(trail)
    records[2], records[3] = records[3], records[2]
    write_lines(trail, records)
    found = problems(trail)
    assert ("file", 3, "reordered") in found
    assert not [p for p in found if p[2] in ("edited", "deleted")]


def test_verify_cli_exits_1_and_says_which(trail, capsys):
    some_records(5)
    assert cli_main(["audit", "verify"]) == 0
    assert "OK: " in capsys.readouterr().out
    records = lines(trail)
    del records[1]
    write_lines(trail, records)
    assert cli_main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "file: seq 2: deleted: seq 2 missing" in out
    assert "BROKEN" in out
    assert cli_main(["audit", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert {"where": "file", "seq": 2, "kind": "deleted"}.items() <= report["problems"][0].items()


# ----------------------------------------------------------- verify: the table


def test_verify_names_an_edited_row(trail):
    some_records(5)
    settings = AuditSettings()
    execute(settings, "UPDATE audit_records SET actor = 'mallory' WHERE seq = 3")
    assert ("table", 3, "edited") in problems(trail)


def test_verify_names_an_edited_stored_record(trail):
    some_records(5)
    settings = AuditSettings()
    (row,) = [r for r in table_rows(settings) if r[0] == 3]
    record = json.loads(row[3]) | {"outcome": "denied"}
    execute(
        settings,
        "UPDATE audit_records SET record = %(r)s WHERE seq = 3"
        if settings.db_url.startswith("postgres")
        else "UPDATE audit_records SET record = :r WHERE seq = 3",
        {"r": json.dumps(record)},
    )
    found = problems(trail)
    assert ("table", 3, "edited") in found
    assert ("both", 3, "mismatch") in found


def test_verify_names_a_deleted_row(trail):
    some_records(5)
    execute(AuditSettings(), "DELETE FROM audit_records WHERE seq = 4")
    found = problems(trail)
    assert ("table", 4, "deleted") in found
    assert ("table", 4, "mismatch") in found  # in the file but not in the table


def test_verify_names_an_inserted_row(trail):
    some_records(5)
    settings = AuditSettings()
    execute(settings, "DELETE FROM audit_records WHERE seq = 5")
    forged = seal(
        {k: v for k, v in lines(trail)[4].items() if k not in ("seq", "prev_hash", "hash")}
        | {"actor": "mallory"},
        5,
        "f" * 64,
    )
    from sqlalchemy import insert

    from hub_ext.audit.orm import AuditRecord
    from hub_ext.audit.writer import row_values

    engine = make_engine(settings.db_url)
    with engine.begin() as conn:
        conn.execute(insert(AuditRecord), [row_values(forged)])
    engine.dispose()
    found = problems(trail)
    assert ("table", 5, "inserted") in found
    assert ("both", 5, "mismatch") in found


def test_verify_names_reordered_rows(trail):
    some_records(5)
    settings = AuditSettings()
    rows = {r[0]: r for r in table_rows(settings)}
    # swap what rows 2 and 3 hold, columns and all
    execute(settings, "DELETE FROM audit_records WHERE seq IN (2, 3)")
    from sqlalchemy import insert

    from hub_ext.audit.orm import AuditRecord
    from hub_ext.audit.writer import row_values

    swapped = []
    for seq, other in ((2, 3), (3, 2)):
        values = row_values(json.loads(rows[other][3]))
        values["seq"] = seq
        swapped.append(values)
    engine = make_engine(settings.db_url)
    with engine.begin() as conn:
        conn.execute(insert(AuditRecord), swapped)
    engine.dispose()
    found = problems(trail)
    assert ("table", 2, "edited") in found and ("table", 3, "edited") in found
    assert ("both", 2, "mismatch") in found


CRASHING_WRITER = """
import os
from hub_ext.audit import emit, get_writer

def crash(record):  # the process dies after the line, before the row
    os._exit(9)

get_writer()._insert = crash
emit("job.delete", actor="alice", target="job/1")
"""


def test_a_record_a_crashed_writer_left_out_of_the_table_is_copied_at_the_next_write(trail):
    some_records(3)
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER], cwd=REPO, timeout=120)
    assert crashed.returncode == 9
    assert [r["action"] for r in lines(trail)][-1] == "job.delete"
    assert len(table_rows(AuditSettings())) == 3
    some_records(1)  # this writer copies seq 4 before it inserts seq 5
    report = verify(AuditSettings())
    assert report.ok, report.problems
    assert report.table_records == 5


# ------------------------------------------------------------------ retention


class FrozenClock:
    now = datetime.now(timezone.utc)

    @classmethod
    def at(cls, when):
        cls.now = when

    @classmethod
    def utcnow(cls):
        return cls.now


def test_retention_rotates_prunes_and_keeps_the_chain_verifiable(trail, monkeypatch):
    monkeypatch.setenv("SHIPYARD_AUDIT_RETENTION_DAYS", "5")
    audit.reset()
    real = datetime

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return FrozenClock.now.astimezone(tz) if tz else FrozenClock.now

    monkeypatch.setattr(audit, "datetime", Clock)
    today = real.now(timezone.utc)
    FrozenClock.at(today - timedelta(days=10))
    some_records(3)  # seq 1-3, ten days old
    result = prune(now=today - timedelta(days=9))
    assert result["rotated"] and not result["archives_deleted"]
    FrozenClock.at(today - timedelta(days=2))
    some_records(3)  # seq 4-6, two days old
    current = trail / "audit.jsonl"
    before = current.read_text()
    FrozenClock.at(today)
    result = prune(now=today)
    assert len(result["archives_deleted"]) == 1 and result["rows_deleted"] == 3
    archives = sorted(p.name for p in trail.glob("audit-*.jsonl"))
    assert archives == [f"audit-{(today - timedelta(days=2)):%Y%m%d}-000000000004.jsonl"]
    # the lines are never rewritten: the rotated file holds what the current one held
    assert (trail / archives[0]).read_text() == before
    retention = lines(trail)[-1]
    assert retention["action"] == "audit.retention"
    assert retention["details"]["first_seq"] == 4
    report = verify(AuditSettings())
    assert report.ok, report.problems
    assert (report.first_seq, report.last_seq) == (4, 7)
    assert [r[0] for r in table_rows(AuditSettings())] == [4, 5, 6, 7]
    # someone deletes the oldest kept archive: the trail no longer starts at an anchor
    (trail / archives[0]).unlink()
    found = problems(trail)
    assert ("file", 7, "deleted") in found


def test_retention_zero_keeps_everything(sqlite_trail, monkeypatch):
    monkeypatch.setenv("SHIPYARD_AUDIT_RETENTION_DAYS", "0")
    audit.reset()
    some_records(3)
    result = prune(now=datetime.now(timezone.utc) + timedelta(days=1000))
    assert result["rotated"] and result["archives_deleted"] == []
    some_records(1)
    report = verify(AuditSettings())
    assert report.ok and report.file_records == 4


def test_bad_retention_setting_is_refused(monkeypatch):
    monkeypatch.setenv("SHIPYARD_AUDIT_RETENTION_DAYS", "a year")
    with pytest.raises(ValueError, match="whole number of days"):
        AuditSettings().retention_days  # noqa: B018
    monkeypatch.setenv("SHIPYARD_AUDIT_RETENTION_DAYS", "-1")
    with pytest.raises(Exception, match="0 \\(keep forever\\)"):
        AuditSettings().retention_days  # noqa: B018


# ---------------------------------------------------------- concurrent writers

WRITER = """
import os, sys, threading
from hub_ext.audit import emit
proc = int(sys.argv[1])
def write(thread):
    for i in range(int(sys.argv[2])):
        if emit("job.run", actor=f"p{proc}", target=f"job/{thread}-{i}",
                details={"proc": proc, "thread": thread, "i": i}) is None:
            print(f"emit failed in {proc}", file=sys.stderr, flush=True)
            os._exit(3)  # sys.exit in a thread would only end the thread
threads = [threading.Thread(target=write, args=(t,)) for t in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_concurrent_writers_from_several_processes(trail):
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(p), "25"], env=env, cwd=REPO)
        for p in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    report = verify(AuditSettings())
    assert report.ok, report.problems
    assert report.file_records == report.table_records == 4 * 2 * 25
    written = [
        (r["details"]["proc"], r["details"]["thread"], r["details"]["i"]) for r in lines(trail)
    ]
    assert sorted(written) == sorted(
        (p, t, i) for p in range(4) for t in range(2) for i in range(25)
    )  # every record exactly once


# ------------------------------------------------------------------------ CLI


def test_cli_list_filters(sqlite_trail, capsys):
    emit("job.create", actor="alice", target="job/1", owner="alice")
    emit(
        "job.delete",
        actor="bob",
        target="job/1",
        owner="alice",
        outcome="denied",
        reason="not found",
    )
    emit("deployment.create", actor="bob", target="deployment/iris", owner="bob")
    capsys.readouterr()

    def listed(*args) -> list[dict]:
        assert cli_main(["audit", "list", "--json", *args]) == 0
        return [json.loads(x) for x in capsys.readouterr().out.splitlines()]

    assert [r["seq"] for r in listed()] == [1, 2, 3]
    assert [r["seq"] for r in listed("--user", "bob")] == [2, 3]
    assert [r["seq"] for r in listed("--user", "alice")] == [1, 2]  # acted, or owned the target
    assert [r["seq"] for r in listed("--action", "job")] == [1, 2]
    assert [r["seq"] for r in listed("--action", "job.delete")] == [2]
    assert [r["seq"] for r in listed("--since", "2h") if r["action"] != "audit.read"] == [1, 2, 3]
    assert listed("--since", (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()) == []
    assert [r["seq"] for r in listed("--user", "bob", "--limit", "1")] == [3]
    assert cli_main(["audit", "list", "--user", "bob"]) == 0
    table = capsys.readouterr().out
    assert "SEQ" in table and "job.delete" in table and "denied: not found" in table
    # reads are themselves recorded
    assert [r["action"] for r in listed("--action", "audit")][-1] == "audit.read"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday"], "is not a time"),
        (["--since", "2x"], "or an age like 30m, 2h, 7d"),
        (["--action", "jobs.create"], "is not an audited action"),
        (["--user", " "], "user must be a user name"),
        (["--limit", "5000"], "limit must be from 1 to 1000"),
    ],
)
def test_cli_list_refuses_bad_filters(sqlite_trail, capsys, args, message):
    assert cli_main(["audit", "list", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_list_refuses_a_bad_limit_before_reading(sqlite_trail, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["audit", "list", "--limit", "0"])
    assert e.value.code == 2
    assert "give 1 or more" in capsys.readouterr().err


# ------------------------------------------------------------- pieces as data


@pytest.mark.parametrize(
    "method, path, action",
    [
        ("POST", "/hub/api/users", "user.create"),
        ("POST", "/hub/api/users/alice", "user.create"),
        ("PATCH", "/hub/api/users/alice", "user.update"),
        ("DELETE", "/hub/api/users/alice", "user.delete"),
        ("POST", "/hub/api/users/alice/tokens", "token.create"),
        ("DELETE", "/hub/api/users/alice/tokens/a12", "token.delete"),
        ("POST", "/prefix/hub/api/groups/team", "group.create"),
        ("DELETE", "/hub/api/groups/team", "group.delete"),
        ("PUT", "/hub/api/groups/team/properties", "group.update"),
        ("POST", "/hub/api/groups/team/users", "group.members_add"),
        ("DELETE", "/hub/api/groups/team/users", "group.members_remove"),
        ("POST", "/hub/api/users/alice/server", "server.start"),
        ("DELETE", "/hub/api/users/alice/servers/gpu", "server.stop"),
        ("GET", "/hub/api/users/alice", None),
        ("POST", "/hub/api/users/alice/activity", None),
        ("POST", "/hub/login", None),
    ],
)
def test_hub_routes(method, path, action):
    found = hub_route(method, path)
    assert (found[0] if found else None) == action


def test_the_migration_makes_the_orm_schema(sqlite_trail):
    some_records(1)
    engine = make_engine(AuditSettings().db_url)
    try:
        inspector = sa_inspect(engine)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in inspector.get_indexes("audit_records")}
        assert indexes == {i.name for i in Base.metadata.tables["audit_records"].indexes}
    finally:
        engine.dispose()
    assert sqlite3.connect(sqlite_trail / "audit.sqlite").execute(
        "SELECT version_num FROM audit_alembic_version"
    ).fetchone() == ("a0001",)


def test_hub_requests_make_one_record_per_object(sqlite_trail):
    from hub_ext.audit.hub import records_for

    made = records_for("user.create", {}, {"usernames": ["ann", "ben"], "admin": False})
    assert [r["target"] for r in made] == ["user/ann", "user/ben"]
    both = records_for("user.update", {"user": "ann"}, {"name": "anne", "admin": True})
    assert [r.get("action", "user.update") for r in both] == ["user.update", "role.change"]
    token = records_for(
        "token.create", {"user": "ann"}, {"note": "ci", "auth": {"password": "hunter2"}}
    )
    assert token == [{"target": "token/ann", "owner": "ann", "details": {"note": "ci"}}]


PROFILES_V1 = """
profiles:
  - slug: small
    display_name: Small
    default: true
    mem_limit: 1Gi
"""


def test_profiles_changes_are_recorded_with_both_digests(sqlite_trail, tmp_path):
    import hashlib

    from hub_ext.audit.spawner import profiles_seen
    from hub_ext.profiles.store import ProfileStore

    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES_V1)
    store = ProfileStore(path)
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    profiles_seen(store, store.get())  # first read: nothing changed
    profiles_seen(store, store.get())  # same version: nothing
    assert not (sqlite_trail / "audit.jsonl").exists()
    time.sleep(0.01)
    path.write_text(PROFILES_V1 + "  - slug: big\n    display_name: Big\n    mem_limit: 2Gi\n")
    profiles_seen(store, store.get())
    second = hashlib.sha256(path.read_bytes()).hexdigest()
    time.sleep(0.01)
    path.write_text("profiles: [{slug: 'Not A Slug'}]\n")
    profiles_seen(store, store.get())  # refused: the previous version stays
    profiles_seen(store, store.get())
    changed, refused = lines(sqlite_trail)
    assert (changed["action"], changed["outcome"]) == ("profiles.change", "allowed")
    assert changed["details"]["old_digest"] == first
    assert changed["details"]["new_digest"] == second
    assert changed["details"]["profiles"] == 2
    assert (refused["outcome"], refused["details"]["old_digest"]) == ("failed", second)
    assert "invalid" in refused["reason"]
