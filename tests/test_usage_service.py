"""The usage service behind a real hub: a real server's cgroup sampled, the REST API and
``shipyard usage report``.

One hub (the spawner's servers in real cgroups, labelled in the hub's usage ledger) with
the usage service sampling every half second:

- alice's server on the GPU profile is counted (wall time, memory, GPU-hours, its cost)
  and, using no CPU, is reported idle while holding its GPU;
- an admin reads everyone's usage, by user, group, profile and object; alice reads only
  her own; bob reads nothing of alice's, and naming her answers 404, as a missing user;
  bad queries are 400 with a message, no login 401;
- root on the hub's machine runs ``shipyard usage report`` (the table, the waste report,
  ``--csv``); a user's terminal gets only their own rows;
- the alerts service reads everyone's waste as a monitor (``c.UsageService.monitors``),
  changes nothing, and alerts alice's idle GPU server to her;
- the OpenAPI document names every route;
- the service killed with SIGKILL and started again by the hub, then the server stopped:
  its last reading is counted once, the ledger's record is gone, and the total is the
  cgroup's own counter (nothing lost across the kill, nothing counted twice).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from hub_ext.cli.main import main

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .openapi_checks import assert_references_resolve
from .services import service_hub

pytestmark = [needs_root]

CONFIG = """
c.UsageService.sample_interval = 0.5
c.UsageService.cpu_hour_price = 0.5
c.UsageService.gib_hour_price = 0.25
c.UsageService.gpu_hour_price = 100.0
c.UsageService.idle_after = 2
"""

# the alerts service reads the waste report as a monitor; the idle GPU alerts at once
ALERTS_CONFIG = """
c.AlertsService.evaluation_interval = 0.5
c.AlertRules.disk_percent = 0
c.AlertRules.gpu_idle_after = 1
"""


@pytest.fixture(scope="module")
def world(hub_factory):
    with service_hub(
        hub_factory,
        "usage",
        tagged("syusg-"),
        tagged("shipyard-test-usg"),
        ["usage", "alerts"],
        configs={"usage": CONFIG, "alerts": ALERTS_CONFIG},
        extra_env={"SHIPYARD_TEST_GPUS": "0,1"},
    ) as hub:
        tokens = {
            "alice": hub.create_user("alice", ["research"]),
            "bob": hub.create_user("bob"),
            "ursula": admin_token(hub),
        }
        hub.start_server("alice", profile="gpu")
        yield hub, tokens


def _service_pid(hub) -> int | None:
    try:
        return json.loads((hub.data_dir / "services" / "usage.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def admin_token(hub) -> str:
    """A token of the hub's generated admin, who logs in with the generated password."""
    creds = json.loads((hub.data_dir / "credentials.json").read_text())
    session, r = hub.login(creds["admin_user"], creds["admin_password"])
    assert r.status_code == 302, r.status_code
    r = session.post(
        f"{hub.url}/hub/api/users/{creds['admin_user']}/tokens",
        json={"note": "usage test"},
        headers={"X-XSRFToken": session.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


def call(hub, path: str, token: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(
        f"{hub.url}/services/usage/{path}", headers=headers, params=params, timeout=30
    )


def rows(answer: requests.Response) -> dict[str, dict]:
    assert answer.status_code == 200, answer.text
    return {row["key"]: row for row in answer.json()["rows"]}


def test_a_servers_usage_is_counted_and_only_its_owner_and_admins_see_it(world):
    hub, tokens = world

    def counted():
        alice = rows(call(hub, "api/usage", tokens["ursula"])).get("alice")
        return alice if alice and alice["gpu_hours"] > 0 and alice["mem_gib_hours"] > 0 else None

    alice = wait_for(counted, 60, 0.5, "alice's server to be counted")
    assert alice["wall_hours"] > 0
    # 1 GPU held for the wall time (the price table: 100 a GPU-hour dominates the cost)
    assert alice["gpu_hours"] == pytest.approx(alice["wall_hours"], rel=0.05)
    expected = alice["cpu_hours"] * 0.5 + alice["mem_gib_hours"] * 0.25 + alice["gpu_hours"] * 100
    assert alice["cost"] == pytest.approx(expected, rel=1e-3)
    by_profile = rows(call(hub, "api/usage", tokens["ursula"], by="profile"))
    assert "gpu" in by_profile
    assert "research" in rows(call(hub, "api/usage", tokens["ursula"], by="group"))
    assert "server/alice/" in rows(call(hub, "api/usage", tokens["ursula"], by="object"))

    # alice: her own only; bob: nothing of hers, and naming her is a missing user
    assert set(rows(call(hub, "api/usage", tokens["alice"]))) == {"alice"}
    assert rows(call(hub, "api/usage", tokens["bob"])) == {}
    assert rows(call(hub, "api/usage", tokens["bob"], by="object")) == {}
    for path in ("api/usage", "api/usage/waste"):
        denied = call(hub, path, tokens["bob"], user="alice")
        missing = call(hub, path, tokens["bob"], user="nobody")
        assert denied.status_code == missing.status_code == 404
        assert denied.json()["message"] == "no usage of user 'alice'"
    assert rows(call(hub, "api/usage", tokens["ursula"], user="alice")).keys() == {"alice"}

    # refusals say what to fix
    assert call(hub, "api/usage", None).status_code == 401
    for params in ({"by": "planet"}, {"since": "yesterday-ish"}, {"color": "red"}):
        r = call(hub, "api/usage", tokens["alice"], **params)
        assert r.status_code == 400 and r.json()["message"], (params, r.text)
    r = call(hub, "api/usage", tokens["alice"], since="2026-12-02", until="2026-12-01")
    assert r.status_code == 400 and "since must be before until" in r.json()["message"]
    assert call(hub, "api/usage/waste", tokens["alice"], days="0").status_code == 400
    r = call(hub, "api/usage", tokens["alice"], by="day", since="2025-01-01", until="2026-12-01")
    assert r.status_code == 400 and "at most 366 days" in r.json()["message"], r.text

    # a series to plot: every day of the period, oldest first; today's has alice's usage
    series = call(hub, "api/usage", tokens["alice"], by="day").json()["rows"]
    assert len(series) in (30, 31) and [r["key"] for r in series] == sorted(
        r["key"] for r in series
    )
    assert series[-1]["gpu_hours"] > 0 or series[-2]["gpu_hours"] > 0
    assert "server" in rows(call(hub, "api/usage", tokens["alice"], by="kind"))

    # Prometheus metrics, for admins
    metrics = call(hub, "metrics", tokens["ursula"])
    assert metrics.status_code == 200
    assert (
        'shipyard_usage_gpu_hours_total{kind="server",profile="gpu",user="alice"}' in metrics.text
    )
    assert 'shipyard_usage_cost_total{kind="server",profile="gpu",user="alice"}' in metrics.text
    assert call(hub, "metrics", tokens["bob"]).status_code == 403


def test_an_idle_gpu_server_is_reported_and_the_cli_prints_the_report(world, monkeypatch, capsys):
    hub, tokens = world

    def idle():
        answer = call(hub, "api/usage/waste", tokens["ursula"])
        assert answer.status_code == 200, answer.text
        return [i for i in answer.json()["idle"] if i["owner"] == "alice"]

    (item,) = wait_for(idle, 60, 0.5, "alice's idle server to be reported")
    assert item["gpus"] == 1 and "holding 1 GPU" in item["message"]
    assert "to free its GPUs" in item["message"]
    assert call(hub, "api/usage/waste", tokens["bob"]).json()["idle"] == []

    def shell(who: str, *args: str) -> tuple[int, str, str]:
        for name in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "SHIPYARD_USAGE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SHIPYARD_BIND_URL", hub.url)
        if who == "root":  # on the hub's machine: the hub admin's token, made and revoked
            monkeypatch.setenv("SHIPYARD_DATA_DIR", str(hub.data_dir))
        else:
            monkeypatch.delenv("SHIPYARD_DATA_DIR", raising=False)
            monkeypatch.setenv("JUPYTERHUB_API_TOKEN", tokens[who])
        capsys.readouterr()
        status = main(["usage", "report", *args])
        out, err = capsys.readouterr()
        return status, out, err

    status, out, err = shell("root", "--by", "user", "--since", "1d")
    assert status == 0, err
    assert "Asking the usage service" in err
    lines = out.splitlines()
    assert lines[0].startswith("Usage by user, ") and lines[0].endswith("(cost in USD)")
    assert lines[1].split() == ["USER", "CPU-H", "MEM", "GiB-H", "GPU-H", "WALL-H", "COST"]
    assert any(line.startswith("alice ") for line in lines)
    assert any(line.startswith("TOTAL ") for line in lines)
    assert "Idle servers holding resources:" in out and "server/alice/ (gpu)" in out

    status, out, err = shell("root", "--by", "profile", "--csv")
    assert status == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert "gpu" in {row["profile"] for row in table}
    assert float(next(r for r in table if r["profile"] == "gpu")["gpu_hours"]) > 0

    # a day a row, oldest first, today's with alice's GPU-hours
    status, out, err = shell("alice", "--by", "day", "--since", "2d", "--no-waste")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1].split()[0] == "DAY"
    days = [line.split() for line in lines[2:] if line[:1].isdigit()]
    assert len(days) == 3 and [d[0] for d in days] == sorted(d[0] for d in days), out
    assert float(days[-1][3]) > 0 or float(days[-2][3]) > 0, out

    status, out, err = shell("bob", "--no-waste")
    assert status == 0, err
    assert "No usage recorded in this period." in out and "alice" not in out
    status, out, err = shell("bob", "--user", "alice")
    assert status == 1 and "no usage of user 'alice'" in err


def test_the_alerts_service_reads_everyones_waste_changes_nothing_and_alerts_the_idle_gpu(world):
    """``c.UsageService.monitors``: the alerts service's token reads every user's usage and
    waste as an admin would, and nothing else; users still read only their own; the
    idle GPU server becomes a ``gpu_idle`` alert its owner reads."""
    hub, tokens = world
    service = (hub.data_dir / "services" / "alerts.token").read_text().strip()

    def idle_of(token: str, **params) -> list[dict]:
        answer = call(hub, "api/usage/waste", token, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()["idle"]

    wait_for(
        lambda: [i for i in idle_of(service) if i["owner"] == "alice" and i["gpus"] == 1],
        60,
        0.5,
        "the alerts service to read alice's idle GPU server",
    )
    assert [i["owner"] for i in idle_of(service, user="alice")] == ["alice"]
    assert "alice" in rows(call(hub, "api/usage", service, by="user"))
    assert "alice" in rows(call(hub, "api/usage", service, by="user", user="alice"))
    # a monitor changes nothing: the routes take no other method, for it as for anyone
    for method in ("POST", "PUT", "DELETE"):
        r = requests.request(
            method,
            f"{hub.url}/services/usage/api/usage/waste",
            headers={"Authorization": f"token {service}"},
            json={},
            timeout=30,
        )
        assert r.status_code in (403, 405), (method, r.status_code, r.text)
    # users still read only their own
    assert idle_of(tokens["bob"]) == []
    assert call(hub, "api/usage/waste", tokens["bob"], user="alice").status_code == 404
    assert "alice" not in rows(call(hub, "api/usage", tokens["bob"], by="user"))

    def alert() -> list[dict]:
        r = requests.get(
            f"{hub.url}/services/alerts/api/alerts",
            headers={"Authorization": f"token {tokens['alice']}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return [a for a in r.json()["alerts"] if a["rule"] == "gpu_idle"]

    (item,) = wait_for(alert, 60, 0.5, "alice's gpu_idle alert")
    assert item["owner"] == "alice" and item["state"] == "firing", item
    assert item["labels"]["server"].startswith("server/alice/")
    bobs = requests.get(
        f"{hub.url}/services/alerts/api/alerts",
        headers={"Authorization": f"token {tokens['bob']}"},
        timeout=30,
    ).json()["alerts"]
    assert [a for a in bobs if a["rule"] == "gpu_idle"] == []


def test_the_openapi_document_names_every_route(world):
    from tornado import web

    from hub_ext.services.usage.handlers import routes

    hub, _ = world
    doc = call(hub, "openapi.json", None).json()
    for path, handler in routes("/"):
        for method in ("get", "post", "put", "patch", "delete"):
            if getattr(handler, method) is not getattr(web.RequestHandler, method):
                assert method in doc["paths"][path], (path, method)
    assert_references_resolve(doc)


def test_a_killed_service_and_a_stopped_server_neither_lose_nor_count_twice(world):
    hub, tokens = world
    ledger = hub.data_dir / "usage-ledger" / hub.cgroup_parent
    assert [p.name for p in ledger.glob("alice~*.json")]
    (record,) = [json.loads(p.read_text()) for p in ledger.glob("alice~*.json")]
    # the spawner labelled the server's cgroup: whose, what, which profile, how many GPUs
    labels = {k: record[k] for k in ("kind", "owner", "object", "profile", "gpus")}
    assert labels == {
        "kind": "server",
        "owner": "alice",
        "object": "server/alice/",
        "profile": "gpu",
        "gpus": 1,
    }
    counter = Path(record["dirs"]["cpu"]) / (
        "cpuacct.usage" if record["driver"] == "cgroup1" else "cpu.stat"
    )

    def cpu_seconds() -> float:
        text = counter.read_text()
        if record["driver"] == "cgroup1":
            return int(text) / 1e9
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6

    # the service killed in the middle of the server's life: the hub starts it again
    before = _service_pid(hub)
    os.kill(before, signal.SIGKILL)
    wait_for(
        lambda: (
            _service_pid(hub) not in (None, before) and call(hub, "health", None).status_code == 200
        ),
        60,
        0.3,
        "the usage service to be started again",
    )
    low = cpu_seconds()
    hub.stop_server("alice")
    wait_for(lambda: not list(ledger.glob("alice~*.json")), 30, 0.3, "the record to be counted")
    first = rows(call(hub, "api/usage", tokens["alice"]))["alice"]
    time.sleep(1.5)  # three more passes
    again = rows(call(hub, "api/usage", tokens["alice"]))["alice"]
    assert again == first  # ended: nothing more is counted
    # everything the cgroup's counter had before the stop, and only what the server's last
    # moments (its shutdown) added after it: nothing lost across the kill, nothing twice
    assert low <= first["cpu_seconds"] <= low + 2.0, (low, first["cpu_seconds"])
    print(json.dumps({"counter_before_stop": low, "counted": first["cpu_seconds"]}))
    waste = call(hub, "api/usage/waste", tokens["ursula"]).json()
    assert [i for i in waste["idle"] if i["owner"] == "alice"] == []
