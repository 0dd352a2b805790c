"""The scheduler's previews: a cron trigger's next runs, a notebook's parameters and typed values.

The service is the only judge of both (issue #16, point 5): the panel and the magics ask
these routes instead of keeping copies of the rules. So the tests check that a preview
says what the service does when a job is made: the same refusals, and, for a cron
expression across a daylight-saving change, the very times a job made at that instant is
scheduled for. One hub with the scheduler for the module (tests/services.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from .conftest import needs_root
from .hubtools import tagged
from .services import TEAM, create_job, notebook, scheduler_hub, users_with_accounts

pytestmark = [needs_root]

PARAMETERS_CELL = (
    "alpha: float = 0.5  # the learning rate\n"
    "n = 3\n"
    "city = 'Berlin'  # where the data comes from\n"
    "label = '\"quoted\"'\n"
    "items = [1, 2]\n"
    "flags: dict = {}\n"
    "when = today()\n"
)


@pytest.fixture(scope="module")
def sched(hub_factory):
    with scheduler_hub(
        hub_factory, "preview", tagged("syspv-"), tagged("shipyard-test-pv")
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    return users_with_accounts(sched.hub, home_root, TEAM)


def cron(sched, token, **body):
    return sched.call("POST", "api/previews/cron", token, json=body)


def parameters(sched, token, nb, values=None):
    body = {"notebook": nb} if values is None else {"notebook": nb, "values": values}
    return sched.call("POST", "api/previews/parameters", token, json=body)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


# ------------------------------------------------------------------------ cron


def test_a_cron_preview_lists_the_next_runs(sched, users):
    r = cron(
        sched,
        users["alice"][0],
        expression=" 30  6 * * 1-5 ",
        timezone="Europe/Paris",
        count=4,
        after="2027-01-01T00:00:00Z",  # a Friday
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expression"] == "30 6 * * 1-5" and body["timezone"] == "Europe/Paris"
    assert body["every_hour"] is False
    # 06:30 in Paris in winter is 05:30 UTC; the weekend is skipped
    assert [utc(t) for t in body["times"]] == [
        datetime(2027, 1, d, 5, 30, tzinfo=timezone.utc) for d in (1, 4, 5, 6)
    ]
    # the count defaults to 3, and "now" is the scheduler's clock
    r = cron(sched, users["alice"][0], expression="@hourly")
    assert r.status_code == 200 and len(r.json()["times"]) == 3 and r.json()["every_hour"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"expression": "61 * * * *"}, 400, "cron expression '61 * * * *' is not valid"),
        ({"expression": "* * * *"}, 400, "has 4 fields, not 5"),
        ({"expression": "0 0 * * * *"}, 400, "has 6 fields, not 5"),
        ({"expression": "@reboot"}, 400, "the @ forms are"),
        ({"expression": "0 0 30 2 *"}, 400, "never fires"),
        ({"expression": "0 6 * * *", "timezone": "Mars/Olympus"}, 400, "unknown time zone"),
        ({"expression": "0 6 * * *", "timezone": "Europe/../UTC"}, 400, "unknown time zone"),
        ({"expression": "0 6 * * *", "count": 0}, 400, "count must be between 1 and 50"),
        ({"expression": "0 6 * * *", "count": 51}, 400, "count must be between 1 and 50"),
        ({"expression": "0 6 * * *", "count": "3"}, 400, "count"),
        ({"expression": "0 6 * * *", "after": "2027-01-01T00:00"}, 400, "UTC offset"),
        ({"expression": "0 6 * * *", "tz": "UTC"}, 400, "Extra inputs are not permitted"),
        ({}, 400, "expression"),
    ],
)
def test_a_bad_cron_preview_is_refused_as_a_job_would_be(sched, users, body, status, message):
    r = cron(sched, users["alice"][0], **body)
    assert r.status_code == status, r.text
    assert message in r.text
    assert set(r.json()) >= {"status", "message"}  # the service's error schema
    if "count" in body or "after" in body or "tz" in body:
        return
    # the same body as a job's trigger: refused with the same message
    job = {
        "name": "never-made",
        "profile": "tiny",
        "notebook": notebook("1"),
        "triggers": [{"kind": "cron", **body}],
    }
    refused = sched.call("POST", "api/jobs", users["alice"][0], json=job)
    assert refused.status_code == 400 and message in refused.text


@pytest.mark.parametrize(
    "expression, start, expected",
    [
        # Europe/Berlin skips 02:00-03:00 on 2027-03-28: 02:30 runs once, at 03:00 CEST
        (
            "30 2 * * *",
            "2027-03-27T12:00:00Z",
            ["2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z", "2027-03-30T00:30:00Z"],
        ),
        # Europe/Berlin has 02:00-03:00 twice on 2027-10-31: 02:30 runs once, the first time
        (
            "30 2 * * *",
            "2027-10-30T12:00:00Z",
            ["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z", "2027-11-02T01:30:00Z"],
        ),
        # ... but an expression that fires every hour keeps firing in both copies
        (
            "30 * * * *",
            "2027-10-30T23:45:00Z",
            ["2027-10-31T00:30:00Z", "2027-10-31T01:30:00Z", "2027-10-31T02:30:00Z"],
        ),
    ],
)
def test_a_daylight_saving_change_previews_as_the_scheduler_fires(
    sched, users, expression, start, expected
):
    alice = users["alice"][0]
    r = cron(sched, alice, expression=expression, timezone="Europe/Berlin", count=3, after=start)
    assert r.status_code == 200, r.text
    assert [utc(t) for t in r.json()["times"]] == [utc(t) for t in expected]
    # a job made at that instant on the scheduler's clock is scheduled for the same times
    now = sched.call("POST", "api/previews/cron", alice, json={"expression": "* * * * *"})
    clock = utc(now.json()["times"][0])  # the first whole minute after the service's now
    sched.advance((utc(start) - clock).total_seconds() + 60)
    try:
        name = f"dst-{abs(hash((expression, start))) % 10**8}"
        job = create_job(
            sched,
            users["alice"],
            name,
            notebook("1"),
            triggers=[{"kind": "cron", "expression": expression, "timezone": "Europe/Berlin"}],
        )
        upcoming = sched.call("GET", f"api/jobs/{job['id']}/upcoming", alice, params={"count": 3})
        assert upcoming.status_code == 200, upcoming.text
        assert [utc(t) for t in upcoming.json()["times"]] == [utc(t) for t in expected]
        # and the preview from the scheduler's own clock agrees with the job
        r = cron(sched, alice, expression=expression, timezone="Europe/Berlin", count=3)
        assert r.json()["times"] == upcoming.json()["times"]
        assert sched.call("DELETE", f"api/jobs/{job['id']}", alice).status_code == 204
    finally:
        sched.clock_file.write_text("0")


# ------------------------------------------------------------------ parameters


def test_a_notebook_s_parameters_as_papermill_sees_them(sched, users):
    nb = notebook("print(n)", parameters=PARAMETERS_CELL)
    r = parameters(sched, users["alice"][0], nb)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["has_parameters_cell"] is True and body["values"] == [] and body["valid"]
    texts = [p.pop("text") for p in body["parameters"]]
    assert body["parameters"] == [
        {"name": "alpha", "type": "float", "default": "0.5", "help": "the learning rate"},
        {"name": "n", "type": "int", "default": "3", "help": ""},
        {"name": "city", "type": "str", "default": "'Berlin'", "help": "where the data comes from"},
        {"name": "label", "type": "str", "default": "'\"quoted\"'", "help": ""},
        {"name": "items", "type": "list", "default": "[1, 2]", "help": ""},
        {"name": "flags", "type": "dict", "default": "{}", "help": ""},
        {"name": "when", "type": None, "default": "today()", "help": ""},
    ]
    assert texts == [
        "0.5",
        "3",
        "Berlin",  # what the panel's input shows, and reads back as the default
        "'\"quoted\"'",  # bare, it would read as the string quoted
        "[1, 2]",
        "{}",
        "today()",
    ]
    # each text reads back as the default it stands for
    names = [p["name"] for p in body["parameters"]]
    r = parameters(sched, users["alice"][0], nb, dict(zip(names[:-1], texts[:-1], strict=True)))
    assert {v["name"]: (v["value"], v["error"]) for v in r.json()["values"]} == {
        "alpha": (0.5, None),
        "n": (3, None),
        "city": ("Berlin", None),
        "label": ('"quoted"', None),
        "items": ([1, 2], None),
        "flags": ({}, None),
    }
    r = parameters(sched, users["alice"][0], notebook("print(1)"))
    assert r.status_code == 200 and r.json()["has_parameters_cell"] is False


def test_typed_values_are_read_as_their_parameter_s_type(sched, users):
    nb = notebook("print(n)", parameters=PARAMETERS_CELL)
    values = {
        "alpha": "1e-3",
        "n": "4.0",
        "city": "two words, 'quoted'",
        "label": "'3'",
        "items": "(1, 'a')",
        "flags": "{'a': True}",
        "when": "2027",
    }
    r = parameters(sched, users["alice"][0], nb, values)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True, body["values"]
    assert {v["name"]: v["value"] for v in body["values"]} == {
        "alpha": 0.001,
        "n": 4,
        "city": "two words, 'quoted'",
        "label": "3",  # a quoted string literal's value: '-p label="3"' as it always was
        "items": [1, "a"],
        "flags": {"a": True},
        "when": 2027,
    }
    assert all(v["error"] is None for v in body["values"])


def test_a_parameter_of_any_type_takes_a_literal_else_the_text(sched, users):
    # what `%schedule -p name=value` always did, now read by the service
    nb = notebook("print(x)", parameters="x = None")
    cases = {
        "3": 3,
        '"3"': "3",
        "abc": "abc",
        "1.5": 1.5,
        "true": True,
        "null": None,
        "[1, 2]": [1, 2],
        '{"a": 1}': {"a": 1},
        "NaN": "NaN",
        "two words": "two words",
        "": "",
        "a=b": "a=b",
    }
    for text, value in cases.items():
        r = parameters(sched, users["alice"][0], nb, {"x": text})
        assert r.status_code == 200, r.text
        assert r.json()["values"] == [{"name": "x", "text": text, "value": value, "error": None}]


def test_a_bad_typed_value_gets_its_own_message(sched, users):
    nb = notebook("print(n)", parameters=PARAMETERS_CELL)
    values = {
        "alpha": "fast",
        "n": "3.5",
        "items": "7",
        "city": "fine as it is",
        "nowhere": "1",
        "1x": "2",
        "class": "1",
        "when": "{1, 2}",
    }
    r = parameters(sched, users["alice"][0], nb, values)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is False
    errors = {v["name"]: v["error"] for v in body["values"]}
    assert [v["name"] for v in body["values"]] == list(values)  # in the order sent
    assert errors["alpha"].startswith("alpha must be a number")
    assert "'fast'" in errors["alpha"]
    assert errors["n"].startswith("n must be a whole number")
    assert errors["items"].startswith("items must be a list")
    assert errors["city"] is None
    assert errors["nowhere"].startswith("nowhere is not in the notebook's parameters cell")
    assert "is not a Python identifier" in errors["1x"]
    assert "is not a Python identifier" in errors["class"]
    assert errors["when"] == (
        "parameter when is a set: values must be JSON (string, number, boolean, null, "
        "list or object)"
    )
    # the same values as a job's: refused when the job is made, as the preview said
    job = {
        "name": "never-made",
        "profile": "tiny",
        "notebook": nb,
        "parameters": {"alpha": "fast"},
    }
    refused = sched.call("POST", "api/jobs", users["alice"][0], json=job)
    assert refused.status_code == 400 and "alpha must be a number" in refused.text
    # a notebook without a parameters cell takes none
    r = parameters(sched, users["alice"][0], notebook("1"), {"n": "1"})
    assert "no cell tagged 'parameters'" in r.json()["values"][0]["error"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"values": {}}, 400, "notebook"),
        ({"notebook": {"cells": 3}}, 400, "not a Jupyter notebook that can run"),
        ({"notebook": notebook("1"), "values": {"n": 3}}, 400, "values"),
        ({"notebook": notebook("1"), "values": []}, 400, "values"),
        ({"notebook": notebook("1"), "extra": 1}, 400, "Extra inputs are not permitted"),
        (
            {"notebook": notebook("1"), "values": {"n": "x" * 70_000}},
            400,
            "at most 65536 characters",
        ),
        (
            {
                "notebook": notebook("1", parameters="a = None\nb = None"),
                "values": {"a": "x" * 40_000, "b": "y" * 40_000},
            },
            400,
            "parameters are larger than 65536 bytes as JSON",
        ),
        ({"notebook": notebook("x = '" + "y" * 500_000 + "'")}, 413, "over the limit"),
    ],
)
def test_malformed_or_oversized_parameter_previews_are_4xx(sched, users, body, status, message):
    r = sched.call("POST", "api/previews/parameters", users["alice"][0], json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"] + str(r.json().get("errors"))


def test_a_body_that_is_not_json_is_a_400(sched, users):
    for path in ("api/previews/cron", "api/previews/parameters"):
        r = sched.call(
            "POST",
            path,
            users["alice"][0],
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        r = sched.call("POST", path, users["alice"][0], json=[1, 2])
        assert r.status_code == 400 and "JSON object" in r.json()["message"]


def test_previews_need_a_login_with_access_to_the_scheduler(sched, users):
    nb = notebook("1")
    assert cron(sched, None, expression="@daily").status_code == 401
    assert parameters(sched, None, nb).status_code == 401
    # carol, in no group, may use the scheduler: the previews need no job of hers
    assert cron(sched, users["carol"][0], expression="@daily").status_code == 200
    assert parameters(sched, users["carol"][0], nb).status_code == 200
    # a token of carol's without access to the scheduler is refused
    r = sched.hub.api("POST", "/users/carol/tokens", json={"scopes": ["read:users!user=carol"]})
    assert r.status_code == 201, r.text
    unscoped = r.json()["token"]
    assert cron(sched, unscoped, expression="@daily").status_code in (401, 403)
    assert parameters(sched, unscoped, nb).status_code in (401, 403)
    # and GET is not a method of theirs
    assert sched.call("GET", "api/previews/cron", users["carol"][0]).status_code == 405
