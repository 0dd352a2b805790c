"""Widgets of ``%runs``, ``%compare``, ``%jobs``, ``%run_now``, ``%pipeline``, ``%deploy`` and
``%deployments``: HTML tables, inline SVG plots and progress bars, in ``ipywidgets``.

Shipyard's base environment has ipywidgets but not matplotlib, so plots are SVG polylines
written here: no plotting library, no JavaScript beyond the HTML widget's own.
Everything shown comes from the tracking server (names, parameters, tags), so every text is
HTML-escaped: a run named ``<img onerror=...>`` is shown, not executed.

The builders (:func:`runs_html`, :func:`comparison_html`, :func:`jobs_html`) are pure functions
of the clients' data; :func:`runs_table`, :func:`comparison` and :func:`jobs_table` only wrap
their output in a widget. Jobs come from the scheduler, whose names, triggers and reasons are
the users' words: escaped like the rest; so are deployments (:func:`deployments_html`), whose
failure reasons quote the model's own errors; and so are pipeline runs
(:func:`pipeline_run_html`), whose step names and reasons come from the user's file and
notebooks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from html import escape

import ipywidgets

from ..clients.deployer.text import (
    VersionRow,
    breaker_text,
    drift_text,
    input_issues_text,
    number,
    percent,
)
from ..clients.scheduler.pipelines import duration_text, run_headline, step_detail
from ..clients.scheduler.text import (
    JobSummary,
    cron_timezone,
    describe_triggers,
    format_time,
    parse_time,
)
from ..clients.tracking.client import ExperimentRef, RunDetail, RunSummary

#: How many metrics %runs shows per run, and how many shared metrics %compare plots.
KEY_METRICS = 4
MAX_PLOTS = 8
#: A plotted line keeps at most this many points.
MAX_POINTS = 400
#: A population stability index from which ``%deployments`` shows drift in red (0.25 is the
#: usual threshold of a significant shift).
DRIFT_ALERT = 0.25
COLOURS = ("#1f77b4", "#ff7f0e")
_TABLE = "border-collapse:collapse;font-size:12px"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"

Series = list[tuple[int, float]]


def runs_table(experiment: ExperimentRef, runs: list[RunSummary]) -> ipywidgets.HTML:
    """``%runs``: a table of ``runs`` in a widget."""
    return ipywidgets.HTML(runs_html(experiment, runs))


def comparison(
    a: RunDetail, b: RunDetail, histories: dict[str, tuple[Series, Series]]
) -> ipywidgets.HTML:
    """``%compare``: parameters, metrics and plots of two runs in a widget."""
    return ipywidgets.HTML(comparison_html(a, b, histories))


def jobs_table(
    summaries: list[JobSummary], link: Callable[[str, str], str], user: str | None
) -> ipywidgets.HTML:
    """``%jobs``: a table of the user's jobs in a widget."""
    return ipywidgets.HTML(jobs_html(summaries, link, user))


def jobs_html(
    summaries: list[JobSummary], link: Callable[[str, str], str], user: str | None
) -> str:
    """An HTML table: name, triggers, next run, last run, links to its output, id.

    ``link(run_id, fmt)`` is the browser's URL of a run's output; jobs of other users (shared
    with a group of ``user``'s) are named ``owner/name``.
    """
    if not summaries:
        return "<div>No jobs yet: schedule this notebook with <code>%schedule</code>.</div>"
    rows = [["Job", "Triggers", "Next run", "Last run", "Output", "Id"]]
    for item in summaries:
        job, run = item.job, item.last_run
        tz = cron_timezone(job)
        name = job["name"] if job["owner"] == user else f"{job['owner']}/{job['name']}"
        nxt = "<i>paused</i>" if job.get("paused") else escape(format_time(item.next_run, tz))
        last, outputs = "", ""
        if run:
            when = format_time(run["ended_at"] or run["queued_at"], tz)
            last = f"<b>{escape(run['status'])}</b> {escape(when)}"
            if run["status"] not in ("succeeded", "queued", "running") and run.get("reason"):
                last += f"<br><span style='color:#666'>{escape(run['reason'][:200])}</span>"
            if run.get("output_path"):
                formats = [f for f in ("ipynb", "html") if f in job.get("output_formats", [])]
                outputs = " ".join(_link(f, link(run["id"], f)) for f in formats or ["ipynb"])
        rows.append(
            [
                escape(name),
                escape(describe_triggers(job)),
                nxt,
                last,
                outputs,
                f"<code>{escape(job['id'])}</code>",
            ]
        )
    return _table(rows)


class RunProgress:
    """``%run_now``: a bar of the run's executed cells, its status beside it, then its output.

    Updated from the cell itself with ``--wait``, else from a background thread: widget
    state is sent on the kernel's iopub channel, which takes messages from any thread.
    """

    def __init__(self, title: str):
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=1, description=title[:20])
        self.label = ipywidgets.Label("queued")
        self.output = ipywidgets.HTML("")
        self.widget = ipywidgets.HBox([self.bar, self.label, self.output])

    def update(self, status: str, done: int | None, total: int | None) -> None:
        """Show ``done`` of ``total`` cells and the status (``running`` ...)."""
        if total:
            self.bar.max = total
            self.bar.value = min(done or 0, total)
            self.label.value = f"{done or 0}/{total} cells, {status}"
        else:
            self.label.value = status
        if status == "succeeded":
            self.bar.bar_style = "success"
        elif status not in ("queued", "running"):
            self.bar.bar_style = "danger"

    def ended(self, run: dict, output: str | None) -> None:
        """The run's end: its status, a failure's reason, a link to its output (if any)."""
        self.update(run["status"], run.get("cells_done"), run.get("cells_total"))
        if run.get("reason") and run["status"] != "succeeded":
            self.label.value += f": {run['reason'][:200]}"
        if output:
            self.output.value = _link("output", output)

    def lost(self, text: str) -> None:
        """Following the run failed (the run itself goes on): say so on the bar."""
        self.bar.bar_style = "warning"
        self.label.value = text[:300]


#: The colour of a pipeline step's state chip.
STEP_COLOURS = {
    "pending": "#9e9e9e",
    "running": "#1f77b4",
    "succeeded": "#2e7d32",
    "reused": "#66bb6a",
    "failed": "#c62828",
    "skipped": "#bdbdbd",
    "cancelled": "#ef6c00",
}


def pipeline_run_html(run: dict) -> str:
    """``%pipeline run --wait`` and ``status``: the run's headline and a table of its steps.

    Each step has a chip coloured by its state, its attempt, its duration (so far, while it
    runs) and a failed or skipped step's reason, else the values it recorded.
    """
    rows = [["Step", "State", "Attempt", "Duration", "Detail"]]
    for step in run["steps"]:
        colour = STEP_COLOURS.get(step["status"], "#9e9e9e")
        chip = (
            f"<span style='background:{colour};color:white;border-radius:8px;"
            f"padding:0 8px'>{escape(step['status'])}</span>"
        )
        seconds = step.get("duration_seconds")
        if seconds is None and step["status"] == "running" and step.get("started_at"):
            seconds = _since(step["started_at"])
        rows.append(
            [
                f"<b>{escape(step['step'])}</b>",
                chip,
                str(step["attempt"] or ""),
                escape(duration_text(seconds)),
                escape(step_detail(step)),
            ]
        )
    colour = STEP_COLOURS.get(run["status"], "#9e9e9e")
    head = f"<div style='color:{colour}'>{escape(run_headline(run))}</div>"
    return head + _table(rows)


class PipelineRunView:
    """The live table of a pipeline run: :meth:`update` with each new state of the run."""

    def __init__(self, run: dict):
        self.widget = ipywidgets.HTML(pipeline_run_html(run))

    def update(self, run: dict) -> None:
        self.widget.value = pipeline_run_html(run)


def _since(iso: str) -> float | None:
    started = parse_time(iso)
    return None if started is None else max(0.0, time.time() - started.timestamp())


def runs_html(experiment: ExperimentRef, runs: list[RunSummary]) -> str:
    """An HTML table: name, status, start, duration, key metrics, link, for each run."""
    title = f"Experiment {_link(experiment.name, experiment.url)}"
    if not runs:
        return f"<div>{title}: no runs yet. Run a cell that starts with %%track.</div>"
    rows = [["Run", "Status", "Started", "Duration", "Metrics", "Id"]]
    for run in runs:
        metrics = sorted(run.metrics.items())
        shown = ", ".join(f"{escape(k)}={_number(v)}" for k, v in metrics[:KEY_METRICS])
        if len(metrics) > KEY_METRICS:
            shown += f" (+{len(metrics) - KEY_METRICS} more)"
        rows.append(
            [
                _link(run.name, run.url),
                escape(run.status),
                _when(run.start_time),
                _duration(run.start_time, run.end_time, run.status),
                shown,
                f"<code>{escape(run.run_id)}</code>",
            ]
        )
    return f"<div>{title}</div>{_table(rows)}"


def comparison_html(a: RunDetail, b: RunDetail, histories: dict[str, tuple[Series, Series]]) -> str:
    """Parameters and latest metrics side by side (differences in bold), then one plot each."""
    head = ["", _link(a.name, a.url, COLOURS[0]), _link(b.name, b.url, COLOURS[1])]
    params = [head]
    for key in sorted(set(a.params) | set(b.params)):
        va, vb = a.params.get(key, "—"), b.params.get(key, "—")
        params.append([escape(key), *_marked(escape(va), escape(vb), va != vb)])
    metrics = [head]
    for key in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(key), b.metrics.get(key)
        cells = [_number(v) if v is not None else "—" for v in (va, vb)]
        metrics.append([escape(key), *_marked(*cells, va != vb)])
    plots = "".join(_plot(key, *series) for key, series in histories.items())
    return (
        "<div><b>Parameters</b></div>"
        + (_table(params) if len(params) > 1 else "<div>none</div>")
        + "<div><b>Metrics</b> (latest values)</div>"
        + (_table(metrics) if len(metrics) > 1 else "<div>none</div>")
        + (f"<div style='display:flex;flex-wrap:wrap;gap:12px'>{plots}</div>" if plots else "")
    )


def _plot(key: str, a: Series, b: Series, width: int = 320, height: int = 140) -> str:
    """An SVG with one polyline per run; x is the step, or the order when steps do not vary."""
    series = [[(s, v) for s, v in run if math.isfinite(v)] for run in (a, b)]
    if len({s for run in series for s, _ in run}) <= 1:
        series = [[(i, v) for i, (_, v) in enumerate(run)] for run in series]
    points = [p for run in series for p in run]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    pad = 4

    def xy(x: float, y: float) -> str:
        px = pad + (x - x0) / (x1 - x0) * (width - 2 * pad)
        py = height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
        return f"{px:.1f},{py:.1f}"

    lines = []
    for colour, run in zip(COLOURS, series, strict=True):
        run = run[:: max(1, math.ceil(len(run) / MAX_POINTS))]
        coords = " ".join(xy(x, y) for x, y in run)
        lines.append(
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{coords}'/>"
        )
    return (
        f"<figure style='margin:0'><figcaption><b>{escape(key)}</b> "
        f"<span style='color:#666'>{_number(y0)} … {_number(y1)}</span></figcaption>"
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"style='border:1px solid #ddd'>{''.join(lines)}</svg></figure>"
    )


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th style='{_CELL}'>{c}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table style='{_TABLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _marked(a: str, b: str, differ: bool) -> list[str]:
    return [f"<b>{a}</b>", f"<b>{b}</b>"] if differ else [a, b]


def _link(text: str, url: str | None, colour: str | None = None) -> str:
    style = f" style='color:{colour}'" if colour else ""
    if not url:
        return f"<span{style}>{escape(text)}</span>"
    return f"<a href='{escape(url)}' target='_blank'{style}>{escape(text)}</a>"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""


def _duration(start: int | None, end: int | None, status: str) -> str:
    if not start:
        return ""
    seconds = round(((end or time.time() * 1000) - start) / 1000)
    text = f"{seconds // 3600}h {seconds // 60 % 60:02d}m" if seconds >= 3600 else ""
    text = text or (f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")
    return f"{text} so far" if status == "RUNNING" and not end else text


# ------------------------------------------------------------------ deployments


def deployments_table(rows: list[VersionRow], url: Callable[[dict], str]) -> ipywidgets.HTML:
    """``%deployments``: a table of the user's deployments, one row per version, in a widget."""
    return ipywidgets.HTML(deployments_html(rows, url))


def deployments_html(rows: list[VersionRow], url: Callable[[dict], str]) -> str:
    """An HTML table: deployment, version, traffic, state, health, rate, latency, errors,
    drift, input issues (data quality) and breaker of every version.

    ``url(deployment)`` is the deployment's invocation URL, shown (not linked: it takes POSTs)
    under its name. Reasons and names come from the deployer (a failed version's reason quotes
    the model's own error): all escaped.
    """
    if not rows:
        return (
            "<div>No deployments yet: deploy a model with "
            "<code>%deploy MODEL --name NAME</code>.</div>"
        )
    table = [
        ["Deployment", "Version", "Traffic", "State", "Health", "Req/s", "p50 ms", "p99 ms",
         "Errors", "Drift (max PSI)", "Input issues", "Breaker"],
    ]  # fmt: skip
    shown = set()
    for row in rows:
        name = f"<b>{escape(row.name)}</b>"
        if row.name not in shown:  # the URL once, on the deployment's newest version
            shown.add(row.name)
            name += f"<br><code>{escape(url(row.deployment))}</code>"
        state = escape(row.state)
        if row.version.get("reason") and row.state != "ready":
            state += f"<br><span style='color:#666'>{escape(row.version['reason'][:200])}</span>"
        breaker_cell = escape(breaker_text(row.breaker)[:200])
        if row.breaker.get("open"):
            breaker_cell = f"<span style='color:#b00'>{breaker_cell}</span>"
        drift = row.drift
        drift_cell = escape(drift_text(row))
        if drift and drift[1] >= DRIFT_ALERT:
            drift_cell = f"<span style='color:#b00'>{drift_cell}</span>"
        table.append(
            [
                name,
                f"{row.version['version']}",
                f"{row.traffic}%",
                state,
                escape(row.health),
                escape(number(row.rate)),
                escape(number(row.latency("p50"))),
                escape(number(row.latency("p99"))),
                escape(percent(row.error_rate)),
                drift_cell,
                escape(input_issues_text(row)),
                breaker_cell,
            ]
        )
    return _table(table)


class DeployProgress:
    """``%deploy``: a bar through its stages, the current one named beside it."""

    def __init__(self, title: str, stages: tuple[str, ...]):
        self.stages = stages
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=len(stages), description=title[:20])
        self.label = ipywidgets.Label(stages[0])
        self.widget = ipywidgets.HBox([self.bar, self.label])

    def update(self, stage: int, detail: str = "") -> None:
        """Stage ``stage`` (0-based) has started; ``detail`` says more about it."""
        self.bar.value = min(stage, len(self.stages))
        name = self.stages[min(stage, len(self.stages) - 1)]
        self.label.value = f"{name}: {detail}" if detail else name

    def done(self, text: str) -> None:
        self.bar.value = len(self.stages)
        self.bar.bar_style = "success"
        self.label.value = text

    def failed(self, text: str) -> None:
        self.bar.bar_style = "danger"
        self.label.value = text
