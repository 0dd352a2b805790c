"""The tracking magics in a real IPython shell and real kernels, against a real ``mlflow server``.

What the server recorded is read back with ``MlflowClient``; every user error is checked for
its message. An outage is a closed port that later forwards to the real server, or a
forwarder switched to a tiny HTTP server answering 503 (the hub's proxy when the tracking
service is dead) or to a port that never answers; a refused token is a tiny HTTP server
answering 401 or 403 (or a login page).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ipywidgets
import pytest
from IPython.core.error import UsageError
from mlflow import MlflowClient

from server_ext.clients.tracking.client import TrackingWarning
from server_ext.clients.tracking.sender import ANSWER_TIMEOUT

from .hubtools import REPO, free_port, ipython_shell, wait_for

ENV = {"SHIPYARD_PROFILE": "small", "SHIPYARD_ENV": "base", "SHIPYARD_ENV_DIGEST": "sha256:ab12"}


#: The shells of this module, whose sent runs :func:`find_run_or_none` waits for.
SHELLS = []


@pytest.fixture(scope="module")
def ip(tmp_path_factory):
    """One real IPython shell with the extension loaded, its history and spool kept apart.

    Retries come within a second; the refused-token runs still waiting at the end are not
    retried for 3 s at exit.
    """
    with ipython_shell(tmp_path_factory.mktemp("shell"), max_retry_interval=1.0) as shell:
        SHELLS.append(shell)
        yield shell
        SHELLS.remove(shell)


def sender(shell):
    return shell.magics_manager.registry["TrackingMagics"].sender


def settle() -> None:
    """A tracked cell does not wait for its run to reach the server: wait for it here, as
    ``%runs`` does, before reading what the server has."""
    for shell in SHELLS:
        sender(shell).settle()


@pytest.fixture(autouse=True)
def kernel_env(monkeypatch, mlflow_server):
    """What the platform sets in a kernel: the tracking URI and Shipyard's environment."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    for name in ("MLFLOW_TRACKING_TOKEN", "JPY_SESSION_NAME", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def mlflow(mlflow_server) -> MlflowClient:
    return MlflowClient(mlflow_server)


def find_run_or_none(mlflow: MlflowClient, name: str):
    """The run called ``name``, in any experiment, once the shells' ended runs are sent."""
    settle()
    ids = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(ids, filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) <= 1, f"{len(runs)} runs named {name}"
    return runs[0] if runs else None


def find_run(mlflow: MlflowClient, name: str):
    run = find_run_or_none(mlflow, name)
    assert run is not None, f"no run named {name}"
    return run


def values(mlflow: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(mlflow.get_metric_history(run_id, key), key=lambda m: m.step)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def usage_error(call, *args) -> str:
    with pytest.raises(UsageError) as info:
        call(*args)
    return str(info.value)


# %experiment


def test_experiment_is_created_and_used_by_track(ip, mlflow, capsys):
    name, run = unique("exp"), unique("run")
    ip.run_line_magic("experiment", name)
    assert f"Created experiment '{name}'" in capsys.readouterr().out
    experiment = mlflow.get_experiment_by_name(name)
    ip.run_cell_magic("track", f"--name {run}", "pass")
    assert find_run(mlflow, run).info.experiment_id == experiment.experiment_id
    ip.run_line_magic("experiment", name)  # again: it exists now
    assert f"Using experiment '{name}' (id {experiment.experiment_id})" in capsys.readouterr().out


@pytest.mark.parametrize("name", ['""', "x" * 501], ids=["empty", "too-long"])
def test_experiment_names_mlflow_refuses(ip, name):
    message = usage_error(ip.run_line_magic, "experiment", name)
    assert message.startswith(f"MLflow refused the experiment name {name.strip(chr(34))!r}")
    assert "Choose a non-empty name of at most 500 characters" in message


# %%track: lineage, status, parameters


def test_track_records_lineage_params_and_artifacts(ip, mlflow, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    notebook = repo / "analysis.ipynb"
    notebook.write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "analysis.ipynb"], check=True)
    subprocess.run([*git, "commit", "-qm", "nb"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    # papermill's injected cell, run for real into this test's own copy of the history
    history = ip.history_manager
    monkeypatch.setattr(history, "input_hist_raw", list(history.input_hist_raw))
    ip.run_cell("# Parameters\nalpha = 0.5\nlabel = 'fast'\n", store_history=True)

    name = unique("lineage")
    cell = "x = 40\nlog(acc=0.5)\nlog(acc=0.75, loss=2)\nx + 2"
    result = ip.run_cell_magic("track", f'--name {name} --param lr=0.01 --param "note=a b"', cell)

    assert result == 42 and ip.user_ns["x"] == 40
    run = find_run(mlflow, name)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "note": "a b", "alpha": "0.5", "label": "fast"}
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == commit.strip()
    assert tags["shipyard.git.dirty"] == "false"
    assert tags["mlflow.source.name"] == str(notebook.resolve())
    assert {k: tags[k] for k in ("shipyard.profile", "shipyard.env", "shipyard.env_digest")} == {
        "shipyard.profile": "small",
        "shipyard.env": "base",
        "shipyard.env_digest": "sha256:ab12",
    }
    assert float(tags["shipyard.wall_time_s"]) >= 0
    artifacts = Path(mlflow.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    assert (artifacts / "notebook" / "analysis.ipynb").read_text() == notebook.read_text()
    assert (
        artifacts / "cell.py"
    ).read_text() == f'%%track --name {name} --param lr=0.01 --param "note=a b"\n{cell}'
    packages = (artifacts / "packages.txt").read_text().strip()
    assert "mlflow==" in packages
    digest = hashlib.sha256(packages.encode()).hexdigest()
    assert tags["shipyard.packages_digest"] == f"sha256:{digest}"
    assert values(mlflow, run.info.run_id, "acc") == [0.5, 0.75]
    assert values(mlflow, run.info.run_id, "loss") == [2.0]

    notebook.write_text(notebook.read_text() + "\n")  # an unsaved... saved change: dirty
    dirty = unique("dirty")
    ip.run_cell_magic("track", f"--name {dirty}", "pass")
    assert find_run(mlflow, dirty).data.tags["shipyard.git.dirty"] == "true"


def test_track_params_are_typed_variables_of_the_cell(ip, mlflow):
    """papermill's way: ``--param lr=0.1`` is the float ``lr`` in the cell, recorded as written."""
    for name in ("lr", "epochs", "shuffle", "opt", "note", "none", "code"):
        ip.user_ns.pop(name, None)
    name = unique("typed")
    params = (
        "--param lr=0.1 --param epochs=10 --param shuffle=True --param opt=adam "
        '--param "note=two words" --param none=None --param "code=__import__(\'os\').getpid()"'
    )
    cell = (
        "seen = {k: (type(v).__name__, v) for k, v in dict(lr=lr, epochs=epochs, "
        "shuffle=shuffle, opt=opt, note=note, none=none, code=code).items()}\nlr * 2"
    )
    assert ip.run_cell_magic("track", f"--name {name} {params}", cell) == 0.2
    assert ip.user_ns["seen"] == {
        "lr": ("float", 0.1),
        "epochs": ("int", 10),
        "shuffle": ("bool", True),
        "opt": ("str", "adam"),
        "note": ("str", "two words"),
        "none": ("NoneType", None),
        "code": ("str", "__import__('os').getpid()"),  # data, never evaluated
    }
    assert find_run(mlflow, name).data.params == {
        "lr": "0.1",
        "epochs": "10",
        "shuffle": "True",
        "opt": "adam",
        "note": "two words",
        "none": "None",
        "code": "__import__('os').getpid()",
    }


def test_track_outside_a_repository_and_without_a_notebook(ip, mlflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = unique("plain")
    ip.run_cell_magic("track", f"--name {name}", "pass")
    tags = find_run(mlflow, name).data.tags
    assert "mlflow.source.git.commit" not in tags and "mlflow.source.name" not in tags
    assert tags["shipyard.packages_digest"].startswith("sha256:")


def test_a_failing_cell_ends_its_run_failed_and_raises(ip, mlflow):
    name = unique("fails")
    with pytest.raises(ZeroDivisionError):
        ip.run_cell_magic("track", f"--name {name}", "log(loss=1.0)\n1 / 0")
    run = find_run(mlflow, name)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"loss": 1.0}


@pytest.mark.parametrize(
    "params, expected",
    [
        ("--param lr", "--param 'lr' has no '=': write KEY=VALUE, e.g. --param lr=0.01."),
        ("--param 1x=2", "--param '1x=2': '1x' is not a parameter name. Use a Python identifier"),
        ("--param a-b=2", "--param 'a-b=2': 'a-b' is not a parameter name."),
        ("--param =2", "--param '=2': '' is not a parameter name."),
        (
            "--param a=1 --param a=2",
            "--param a is given twice with different values: give it once.",
        ),
    ],
)
def test_malformed_params(ip, mlflow, params, expected):
    name = unique("bad")
    message = usage_error(ip.run_cell_magic, "track", f"--name {name} {params}", "ran = True")
    assert message.startswith(expected)
    assert find_run_or_none(mlflow, name) is None


# log()


def test_ten_thousand_log_calls_all_arrive_in_order(ip, mlflow):
    """Every value, in order; how long the cell takes is bench/tracking.py's to print."""
    name = unique("fast")
    cell = (
        "import time\n"
        "t0 = time.perf_counter()\n"
        "for i in range(10_000):\n"
        "    log(loss=1 / (i + 1))\n"
        "elapsed = time.perf_counter() - t0"
    )
    ip.run_cell_magic("track", f"--name {name}", cell)
    elapsed = ip.user_ns["elapsed"]
    print(f"\n10,000 log() calls took {elapsed * 1000:.1f} ms of cell time")
    run = find_run(mlflow, name)
    history = sorted(mlflow.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(10_000))
    assert [m.value for m in history] == [1 / (i + 1) for i in range(10_000)]


def test_log_outside_a_tracked_cell(ip):
    message = usage_error(ip.user_ns["log"], 1)
    assert message.startswith("log() records metrics of a tracked run: call it in a cell that")


@pytest.mark.parametrize(
    "call, expected",
    [
        ("log(acc='high')", "log(acc=...): metric values must be numbers, not str."),
        ("log(**{'a\\tb': 1})", "log(): 'a\\tb' is not a metric name MLflow accepts."),
        ("log(**{'../up': 1})", "log(): '../up' is not a metric name MLflow accepts."),
        ("log()", "log() needs at least one metric, e.g. log(loss=0.25)."),
        ("log(step='x', acc=1)", "log(step='x'): step must be an integer."),
    ],
)
def test_log_bad_metrics(ip, mlflow, call, expected):
    name = unique("badlog")
    assert usage_error(ip.run_cell_magic, "track", f"--name {name}", call).startswith(expected)
    assert find_run(mlflow, name).info.status == "FAILED"


# %runs and %compare


def test_runs_table_and_compare(ip, mlflow, mlflow_server):
    ip.run_line_magic("experiment", unique("table"))
    first, second = unique("<b>first</b>"), unique("second")
    for name, lr in ((first, "0.1"), (second, "0.2")):
        cell = f"for i in range(5):\n    log(loss={lr} * (5 - i), acc=i / 5)\nlog(only_{lr[-1]}=1)"
        ip.run_cell_magic("track", f"--name {name} --param lr={lr}", cell)
    a, b = find_run(mlflow, first), find_run(mlflow, second)

    table = ip.run_line_magic("runs", "--max 5")
    assert isinstance(table, ipywidgets.HTML)
    html = table.value
    assert first not in html and "&lt;b&gt;first&lt;/b&gt;" in html  # names are escaped
    assert html.count("FINISHED") == 2 and "loss=0.2" in html
    eid = a.info.experiment_id
    assert f"href='{mlflow_server}/#/experiments/{eid}/runs/{a.info.run_id}'" in html
    assert "<table" in ip.run_line_magic("runs", "--max 1").value
    assert ip.run_line_magic("runs", "--max 1").value.count("<tr>") == 2

    compared = ip.run_line_magic("compare", f"{a.info.run_id} {b.info.run_id}").value
    assert "<b>0.1</b>" in compared and "<b>0.2</b>" in compared  # differing params in bold
    assert compared.count("<svg") == 2 and compared.count("<polyline") == 4  # acc, loss
    assert "only_1" in compared and "only_2" in compared  # not shared: a table row, no plot


def test_runs_and_compare_bad_input(ip, mlflow_server):
    message = usage_error(ip.run_line_magic, "runs", "--experiment nope-never-made")
    assert message == (
        f"No experiment named 'nope-never-made' on {mlflow_server}: check the name, "
        "or create it with %experiment nope-never-made."
    )
    message = usage_error(ip.run_line_magic, "runs", "--max 0")
    assert message == "--max 0: give a number from 1 to 1000, e.g. --max 20."
    ip.run_line_magic("experiment", "Default")
    message = usage_error(ip.run_line_magic, "compare", "0123abcd nope")
    assert message == (
        "No run named '0123abcd' in experiment 'Default': %runs shows its runs' names and "
        "ids (a run id finds a run of any experiment)."
    )
    missing = "0123456789abcdef0123456789abcdef"
    message = usage_error(ip.run_line_magic, "compare", f"{missing} nope")
    assert message == (
        f"No run {missing!r}: no run you can read has that id, and no run in experiment "
        "'Default' has that name. %runs shows runs' names and ids."
    )


def test_compare_takes_the_names_runs_shows(ip, mlflow, capsys):
    """``%compare NAME NAME`` with the names in %runs' table; the newest of a repeated name."""
    experiment = unique("named")
    ip.run_line_magic("experiment", experiment)
    base, tuned = unique("baseline"), unique("tuned")
    for name, lr in ((base, "0.1"), (tuned, "0.2"), (base, "0.3")):
        ip.run_cell_magic("track", f"--name {name} --param lr={lr}", f"log(loss={lr})")
    assert base in ip.run_line_magic("runs", "").value  # the name the user copies
    capsys.readouterr()

    compared = ip.run_line_magic("compare", f"{base} {tuned}").value
    assert f">{base}</a>" in compared and f">{tuned}</a>" in compared
    assert "<b>0.3</b>" in compared and "<b>0.2</b>" in compared  # the newest baseline
    newest = mlflow.search_runs(
        [mlflow.get_experiment_by_name(experiment).experiment_id],
        filter_string=f"attributes.run_name = '{base}'",
        order_by=["attributes.start_time DESC"],
    )[0].info.run_id
    assert capsys.readouterr().out == (
        f"2 runs are named {base!r}; comparing the newest, {newest} "
        "(give a run id from %runs for another).\n"
    )
    # a name, and an id of a run of another experiment
    other = find_run(mlflow, tuned).info.run_id
    ip.run_line_magic("experiment", unique("elsewhere"))
    assert (
        f">{tuned}</a>"
        in ip.run_line_magic("compare", f"{other} {base} --experiment {experiment}").value
    )
    message = usage_error(ip.run_line_magic, "compare", f"{base} {tuned}")
    assert message.startswith(f"No run named {base!r} in experiment 'elsewhere-")


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "both ' and \"", "50%_off\\"])
def test_run_names_with_quotes_are_found(mlflow, mlflow_server, name):
    from server_ext.clients.tracking.client import TrackingClient

    experiment = unique("quotes")
    eid = mlflow.create_experiment(experiment)
    decoy = name.replace("'", "_").replace('"', "_").replace("\\", "_")
    mlflow.create_run(eid, run_name=decoy)  # matches the LIKE of a name with both quotes
    run = mlflow.create_run(eid, run_name=name).info.run_id
    found, count = TrackingClient(mlflow_server).find_run(name, experiment)
    assert (found.run_id, found.name, count) == (run, name, 1)


# an unreachable server, a refused token


class Forwarder:
    """Pipes connections on ``port`` to ``target``: a tracking server back after an outage.

    :meth:`switch` sends new connections elsewhere and cuts the open ones, as a proxy does
    when the service behind it dies or comes back.
    """

    def __init__(self, port: int, target: int):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.target = target
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the target is gone too: so is this connection
                conn.close()
                continue
            self.open += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def switch(self, target: int):
        self.target = target
        for sock in self.open:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    @staticmethod
    def _pipe(src, dst):
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.listener.close()
        self.switch(self.target)


def test_unreachable_server_warns_once_and_sends_later(ip, mlflow, mlflow_server, monkeypatch):
    port = free_port()
    down = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    message = usage_error(ip.run_line_magic, "runs", "")
    assert message.startswith(f"Cannot reach the tracking server {down} (Connection refused).")
    assert usage_error(ip.run_line_magic, "experiment", "x").startswith("Cannot reach")

    names = [unique("offline"), unique("offline")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in names:
            ip.user_ns.pop("reached", None)
            ip.run_cell_magic(
                "track", f"--name {name}", "for i in range(100):\n    log(v=i)\nreached = 1"
            )
            assert ip.user_ns["reached"] == 1  # the cell ran
    told = [str(w.message) for w in caught if w.category is TrackingWarning]
    assert len(told) == 1, told
    assert told[0].startswith(f"Cannot reach the tracking server {down}")
    assert "Tracked cells still run: their runs and metrics are kept in" in told[0]

    forwarder = Forwarder(port, int(mlflow_server.rsplit(":", 1)[1]))  # the server is back
    try:

        def arrived():
            runs = [find_run_or_none(mlflow, name) for name in names]
            return all(r and r.info.status == "FINISHED" for r in runs) and runs

        for run in wait_for(arrived, timeout=30, what="the spooled runs"):
            assert values(mlflow, run.info.run_id, "v") == list(map(float, range(100)))
    finally:
        forwarder.close()


def test_a_gateway_without_its_service_does_not_hold_the_cell(
    ip, mlflow, mlflow_server, monkeypatch, refusing_server
):
    """The hub's proxy when the tracking service dies mid-cell: it takes connections and
    answers 503. The cell ends with its code and one warning; the run completes later, once."""
    page = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
    gateway = int(refusing_server(503, page, "text/html").rsplit(":", 1)[1])
    service, port = int(mlflow_server.rsplit(":", 1)[1]), free_port()
    proxy = Forwarder(port, service)
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ip.user_ns["service_dies"] = lambda: proxy.switch(gateway)
    name = unique("gateway")
    cell = (
        "import time\nlog(v=0)\nservice_dies()\nfor i in range(1, 300):\n    log(v=i)\n"
        "code_ended = time.monotonic()"
    )
    later = unique("gateway-later")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ip.run_cell_magic("track", f"--name {name}", cell)
            waited = time.monotonic() - ip.user_ns["code_ended"]
            # the first run on a server waited for its creation; the lane meets the 503 later
            wait_for(lambda: sender(ip).health.problem(uri), 10, what="the lane to meet the 503")
            ip.run_cell_magic("track", f"--name {later}", "log(w=1)")  # told here, once
            ip.run_cell_magic("track", f"--name {later}-2", "log(w=2)")
        told = [str(w.message) for w in caught if w.category is TrackingWarning]
        told = [m for m in told if f"server {uri} (" in m]  # not an earlier test's server
        assert waited < 2, f"the cell ended {waited:.1f} s after its code"
        assert len(told) == 1, told
        assert told[0].startswith(f"Cannot reach the tracking server {uri} (HTTP 503)"), told
        assert find_run(mlflow, name).info.status == "RUNNING"  # created before the outage
        assert find_run_or_none(mlflow, later) is None  # not created: kept in the spool

        proxy.switch(service)  # the service is back

        def finished():
            runs = [find_run_or_none(mlflow, n) for n in (name, later, f"{later}-2")]
            return all(r and r.info.status == "FINISHED" for r in runs) and runs

        run, second, third = wait_for(finished, timeout=15, what="the spooled runs")
        assert values(mlflow, run.info.run_id, "v") == list(map(float, range(300)))
        assert values(mlflow, second.info.run_id, "w") == [1.0]
        assert values(mlflow, third.info.run_id, "w") == [2.0]
    finally:
        proxy.close()


def test_only_shipyards_own_requests_are_bounded(monkeypatch):
    """The user's own ``mlflow`` calls keep MLflow's settings, on every thread, meanwhile."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES as retries
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT as timeout

    from server_ext.clients.tracking.client import REQUEST_RETRIES, REQUEST_TIMEOUT, _bounded

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # as a user may set it
    users = (retries.default, 300)
    seen = []
    with _bounded():
        assert (retries.get(), timeout.get()) == (REQUEST_RETRIES, REQUEST_TIMEOUT)
        with _bounded(retries=0):  # creating a run: never retried
            assert retries.get() == 0
        other = threading.Thread(target=lambda: seen.append((retries.get(), timeout.get())))
        other.start()
        other.join()
    assert seen == [users]
    assert (retries.get(), timeout.get()) == users


def test_a_tracked_cell_does_not_wait_for_the_server(
    ip, mlflow, mlflow_server, monkeypatch, capsys
):
    """Past the kernel's first run on a server, a tracked cell never waits for it: with the
    server hanging, a cell costs what its code costs. The first run waited for its creation
    and printed its link; the later run reaches the server once it answers again."""
    service, port = int(mlflow_server.rsplit(":", 1)[1]), free_port()
    hanging = socket.create_server(("127.0.0.1", 0))
    proxy = Forwarder(port, service)
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first, second = unique("first"), unique("unwaited")
    try:
        ip.run_cell_magic("track", f"--name {first}", "log(v=0)")
        run = find_run(mlflow, first)
        link = f"View run {first} at: {uri}/#/experiments/{run.info.experiment_id}/runs/"
        assert f"{link}{run.info.run_id}" in capsys.readouterr().out

        proxy.switch(hanging.getsockname()[1])  # takes connections, never answers
        started = time.monotonic()
        ip.run_cell_magic("track", f"--name {second}", "for i in range(100):\n    log(v=i)")
        took = time.monotonic() - started
        assert took < ANSWER_TIMEOUT / 5, f"the cell took {took:.2f} s with the server hanging"
        assert "View run" not in capsys.readouterr().out  # not created yet: no link

        proxy.switch(service)

        def finished():
            run = find_run_or_none(mlflow, second)
            return run and run.info.status == "FINISHED" and run

        run = wait_for(finished, timeout=30, what="the run made while the server hung")
        assert values(mlflow, run.info.run_id, "v") == list(map(float, range(100)))
    finally:
        proxy.close()
        hanging.close()


def test_a_hanging_server_holds_up_only_its_own_runs(ip, mlflow, mlflow_server, monkeypatch):
    """A server that takes connections and never answers: its cell ends with its code, a run
    on another server completes meanwhile, and the next cell says the first server hangs,
    once, after ``ANSWER_TIMEOUT``."""
    service, port = int(mlflow_server.rsplit(":", 1)[1]), free_port()
    hanging = socket.create_server(("127.0.0.1", 0))  # the kernel queues connections: no answer
    proxy = Forwarder(port, service)
    slow = f"http://127.0.0.1:{port}"
    ip.user_ns["server_hangs"] = lambda: proxy.switch(hanging.getsockname()[1])
    hung, healthy = unique("hung"), unique("healthy")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", slow)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ip.run_cell_magic(
                "track",
                f"--name {hung}",
                "import time\nlog(v=0)\nserver_hangs()\nlog(v=1)\ncode_ended = time.monotonic()",
            )
            waited_hung = time.monotonic() - ip.user_ns["code_ended"]
            monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
            ip.run_cell_magic(
                "track",
                f"--name {healthy}",
                "import time\nfor i in range(100):\n    log(w=i)\ncode_ended = time.monotonic()",
            )
            waited_healthy = time.monotonic() - ip.user_ns["code_ended"]
            run = find_run(mlflow, healthy)  # waits for the hung run too: ANSWER_TIMEOUT
            ip.run_cell_magic("track", f"--name {healthy}-2", "pass")  # told here
            ip.run_cell_magic("track", f"--name {healthy}-3", "pass")  # not again
        told = [str(w.message) for w in caught if w.category is TrackingWarning]
        told = [m for m in told if f"server {slow} (" in m or f"server {mlflow_server} (" in m]
        assert waited_healthy < 2, f"{waited_healthy:.1f} s on the healthy server"
        assert waited_hung < 2, f"{waited_hung:.1f} s on the hanging server"
        assert run.info.status == "FINISHED"
        assert values(mlflow, run.info.run_id, "w") == list(map(float, range(100)))
        assert len(told) == 1, told
        said = f"Cannot reach the tracking server {slow} (no answer in {ANSWER_TIMEOUT:g} s)."
        assert told[0].startswith(said), told

        proxy.switch(service)  # it answers again: the hung run completes

        def finished():
            run = find_run(mlflow, hung)
            return run.info.status == "FINISHED" and run

        run = wait_for(finished, timeout=15, what="the hung run")
        assert values(mlflow, run.info.run_id, "v") == [0.0, 1.0]
    finally:
        proxy.close()
        hanging.close()


@pytest.fixture
def refusing_server():
    """Start HTTP servers that refuse every request with a status and body; yield their URLs."""
    servers = []

    def start(status: int, body: bytes, content_type: str) -> str:
        class Refuse(BaseHTTPRequestHandler):
            def _refuse(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = _refuse

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_refused_token(ip, monkeypatch, refusing_server):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "expired")
    plain = refusing_server(401, b"Unauthorized", "text/plain")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", plain)
    message = usage_error(ip.run_line_magic, "runs", "")
    assert message.startswith(f"The tracking server {plain} refused the token (HTTP 401)")
    assert "restart your server from the hub to get a fresh token" in message

    # the hub's tracking gateway answers a bad token with MLflow-style JSON
    said = "Your hub token does not grant access to tracking."
    body = json.dumps({"error_code": "PERMISSION_DENIED", "message": said}).encode()
    hub = refusing_server(403, body, "application/json")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hub)
    message = usage_error(ip.run_line_magic, "experiment", "anything")
    assert message.startswith(f"The tracking server {hub} refused the token (HTTP 403: {said})")
    # a gateway that redirects to its login page: a web page where the API should be
    login = refusing_server(200, b"<html>Sign in</html>", "text/html")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", login)
    message = usage_error(ip.run_line_magic, "runs", "")
    assert message.startswith(f"Cannot reach the tracking server {login} (it answered with a web")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", hub)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ip.run_cell_magic("track", "", "log(v=1)\nran = 'yes'")
    assert ip.user_ns["ran"] == "yes"
    told = [str(w.message) for w in caught if w.category is TrackingWarning]
    assert len(told) == 1 and f"refused the token (HTTP 403: {said})" in told[0], told


# real kernels: auto-load, a killed kernel's values sent by the next one, a graceful restart


def test_killed_kernel_values_are_sent_by_the_next_kernel(mlflow, mlflow_server, tmp_path):
    from jupyter_client.manager import KernelManager

    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    # the file the wheel installs as {sys.prefix}/etc/ipython/: here as the profile's config
    shutil.copy(REPO / "ipython-config" / "ipython_kernel_config.py", profile)
    spool = tmp_path / "spool"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_TOKEN", "JPY_SESSION_NAME")
    }
    env.update(IPYTHONDIR=str(profile.parent), SHIPYARD_SPOOL_DIR=str(spool), PYTHONPATH=str(REPO))
    kernels = []

    def start():
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env=env, cwd=str(tmp_path))
        kc = km.client()
        kc.start_channels()
        kernels.append((km, kc))
        kc.wait_for_ready(timeout=60)
        return km, kc

    def run(code: str, **kwargs) -> dict:
        return kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None, **kwargs)

    name = unique("killed")
    try:
        km, kc = start()
        cell = f"%%track --name {name}\nimport os, signal\nfor i in range(5000):\n    log(x=i)\n"
        kc.execute(cell + "os.kill(os.getpid(), signal.SIGKILL)")
        wait_for(lambda: not km.is_alive(), timeout=60, what="the kernel to die")
        (header,) = spool.glob("*.json")
        state = json.loads(header.read_text())
        assert state["run_id"] and state["sent"] < 5000 and state["end"] is None
        assert find_run(mlflow, name).info.status == "RUNNING"

        km, kc = start()  # loads the extension from the config file: it sends the rest
        expression = {"ok": "'track' in get_ipython().magics_manager.magics['cell']"}
        reply = run("", user_expressions=expression)
        assert reply["content"]["user_expressions"]["ok"]["data"]["text/plain"] == "True"

        def sent():
            run = find_run(mlflow, name)
            return run.info.status == "KILLED" and run

        killed = wait_for(sent, timeout=60, what="the next kernel to send the spool")
        assert values(mlflow, killed.info.run_id, "x") == list(map(float, range(5000)))
        assert killed.data.tags["shipyard.recovered"] == "true"
        wait_for(lambda: not list(spool.glob("*.json")), timeout=10, what="the spool to empty")

        # a run whose server is down, then a restart right as the server comes back
        port, restarted = free_port(), unique("restarted")
        run(f"import os; os.environ['MLFLOW_TRACKING_URI'] = 'http://127.0.0.1:{port}'")
        run(f"%%track --name {restarted}\nfor i in range(300):\n    log(y=i)")
        forwarder = Forwarder(port, int(mlflow_server.rsplit(":", 1)[1]))
        try:
            km.restart_kernel(now=False)
            finished = wait_for(
                lambda: (
                    (r := find_run_or_none(mlflow, restarted)) and r.info.status == "FINISHED" and r
                ),
                timeout=60,
                what="the restarted kernel's run",
            )
            assert values(mlflow, finished.info.run_id, "y") == list(map(float, range(300)))
        finally:
            forwarder.close()
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            if km.has_kernel:
                km.shutdown_kernel(now=True)
            km.cleanup_resources()


def test_kernel_config_appends_the_extension_once():
    from traitlets.config import Config

    source = (REPO / "ipython-config" / "ipython_kernel_config.py").read_text()
    for preset, expected in ((None, ["server_ext"]), (["a", "server_ext"], ["a", "server_ext"])):
        config = Config()
        if preset is not None:
            config.IPKernelApp.extensions = list(preset)
        namespace = {"get_config": lambda config=config: config}
        exec(compile(source, "ipython_kernel_config.py", "exec"), namespace)
        value = config.IPKernelApp.extensions
        assert (value if isinstance(value, list) else value.get_value([])) == expected


def test_a_scheduled_run_is_told_the_mlflow_run_id(ip, mlflow, tmp_path, monkeypatch):
    result = tmp_path / "result.json"
    monkeypatch.setenv("SHIPYARD_JOB_RESULT_FILE", str(result))
    name = unique("scheduled")
    ip.run_cell_magic("track", f"--name {name}", "log(score=1.0)")
    assert json.loads(result.read_text()) == {"mlflow_run_id": find_run(mlflow, name).info.run_id}
