"""Scheduling a notebook: the steps of ``%schedule``, and what every caller of the scheduler needs.

``%schedule`` (:mod:`server_ext.magics.jobs`) parses its arguments, calls
:func:`schedule_notebook` and shows what it returns; ``shipyard jobs`` (:mod:`hub_ext.cli.jobs`)
uses the same helpers: the notebook a kernel runs (:func:`current_notebook`), ``-p NAME=VALUE``
parameters (:func:`split_parameters`, then :func:`parameter_values`), default job names (:func:`default_job_name`) and the
webhook secret file (:func:`save_webhook_secret`, :func:`webhook_secret_file`).

A job's webhook secret is never shown in a notebook: the service shows it once, and it goes
to a file only the user can read (``~/.shipyard/webhooks/``), since outputs are saved,
committed and shared with the notebook.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .client import MAX_JOB_NAME, PLAIN_SLUG, SchedulerClient, SchedulerError


def current_notebook(
    explicit: str | None = None,
    namespace: dict | None = None,
    home: Path | None = None,
) -> str:
    """The notebook to schedule, as a path relative to the home (what the service reads).

    ``explicit`` (``--notebook``) is relative to the home, as the file browser shows it, or
    to the current folder, or absolute. Without it: the kernel's notebook, from IPython's
    ``__session__`` (ipykernel sets it) or ``$JPY_SESSION_NAME`` (jupyter-server sets it when
    it starts the kernel; an absolute path, or one relative to the server's root, which in
    Shipyard is the home). Both name the notebook the kernel was started for: after a rename,
    pass ``--notebook``.

    Raises
    ------
    SchedulerError
        When the notebook is unknown, missing, not an ``.ipynb``, or outside the home.
    """
    home = (home or Path.home()).resolve()
    root = Path(os.environ.get("JUPYTERHUB_ROOT_DIR") or home).expanduser()
    if explicit:
        candidates, bases = [explicit], [home, Path.cwd()]
    else:
        candidates = [
            value
            for value in ((namespace or {}).get("__session__"), os.environ.get("JPY_SESSION_NAME"))
            if isinstance(value, str) and value
        ]
        bases = [root, home]
    for value in candidates:
        path = Path(value).expanduser()
        for option in [path] if path.is_absolute() else [base / path for base in bases]:
            if option.suffix != ".ipynb" or not option.is_file():
                continue
            resolved = option.resolve()
            try:
                return resolved.relative_to(home).as_posix()
            except ValueError:
                raise SchedulerError(
                    f"{resolved} is outside your home {home}: jobs run notebooks from your "
                    "home; move or copy it there."
                ) from None
    if explicit:
        raise SchedulerError(
            f"No notebook at {explicit!r}: give the path of an .ipynb file relative to your "
            "home (as the file browser shows it), e.g. --notebook reports/daily.ipynb."
        )
    raise SchedulerError(
        "Cannot tell which notebook this kernel runs (it was not started for a notebook, or "
        "the notebook was renamed since): pass --notebook PATH, e.g. --notebook "
        "reports/daily.ipynb."
    )


def default_job_name(source_path: str) -> str:
    """The notebook's file name, lowercased, as a job name (a slug, :mod:`hub_ext.host.slugs` style).

    A name that already is a plain slug (``daily-report``, ``Sales`` -> ``sales``) is kept; any
    other becomes JupyterHub's ``safe_slug``, with a short hash of the name
    (``Daily Report`` -> ``daily-report-<hash>``), so that two such names never share a job.
    Names that differ only in case do share one; ``%schedule`` refuses to move a job to
    another notebook unless ``--name`` says so.
    """
    from jupyterhub.slugs import safe_slug

    stem = PurePosixPath(source_path).stem.lower()
    if len(stem) <= MAX_JOB_NAME and PLAIN_SLUG.fullmatch(stem):
        return stem
    return safe_slug(stem, max_length=MAX_JOB_NAME)


def split_parameters(items: list[str], option: str = "-p") -> dict[str, str]:
    """``["n=3", "name=abc"]`` as ``{"n": "3", "name": "abc"}``: text, split at the first ``=``.

    Only splitting: what a name may be and what the text stands for (``3`` an int, ``abc``
    a string, for the notebook's declared types) the scheduler judges, with the same rule as
    for the panel's inputs (:func:`parameter_values`).

    Raises
    ------
    SchedulerError
        For an item without ``=``, or a name given twice with different texts.
    """
    params: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SchedulerError(
                f"{option} {item!r} has no '=': write NAME=VALUE, e.g. {option} n=3 or "
                f"{option} city=Berlin."
            )
        if name in params and params[name] != text:
            raise SchedulerError(
                f"{option} {name} is given twice with different values: give it once."
            )
        params[name] = text
    return params


def parameter_values(client: SchedulerClient, notebook: dict, texts: dict[str, str]) -> dict:
    """The values the scheduler reads ``texts`` as, for ``notebook``'s parameters.

    Asks the service (``POST api/previews/parameters``), which reads each text as its
    parameter's declared type and checks it with the rules a job's parameters are held to.

    Raises
    ------
    SchedulerError
        Naming every text the service refused, with its message.
    """
    if not texts:
        return {}
    answer = client.preview_parameters(notebook, texts)
    errors = [v["error"] for v in answer["values"] if v.get("error")]
    if errors:
        raise SchedulerError("; ".join(errors))
    return {v["name"]: v["value"] for v in answer["values"]}


def read_notebook(source: str, home: Path | None = None) -> dict:
    """The notebook at ``source`` (relative to the home, as :func:`current_notebook` gives it).

    Raises
    ------
    SchedulerError
        When it cannot be read or is not JSON.
    """
    path = (home or Path.home()) / source
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise SchedulerError(f"Cannot read the notebook {source}: {e}") from None


def save_webhook_secret(job_name: str, secret: str, home: Path | None = None) -> Path:
    """Keep a webhook secret in ``~/.shipyard/webhooks/<job>.secret``, readable by the user only.

    The secret is shown once, by the service, when the webhook is made. Printed in a
    notebook it would be saved with the notebook's outputs, committed and shared; in this
    file (mode 0600 in a 0700 folder) it is not, and ``$(cat FILE)`` puts it in a request.
    """
    folder = (home or Path.home()) / ".shipyard" / "webhooks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = folder / f"{job_name}.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret.encode() + b"\n")
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class Scheduled:
    """What :func:`schedule_notebook` did: the job as it is now and, for an update, what changed."""

    job: dict
    created: bool
    changed: frozenset[str] = field(default_factory=frozenset)
    notebook_changed: bool = False
    diff: str = ""


def schedule_notebook(
    client: SchedulerClient,
    name: str,
    source: str,
    settings: dict,
    parameters: dict[str, Any],
    *,
    html: bool = False,
    name_given: bool = False,
    parameters_given: bool = False,
) -> Scheduled:
    """Create job ``name`` running notebook ``source``, or update the job of that name.

    A new job gets ``settings`` (triggers, and optionally profile, retries, timeout,
    secrets), ``parameters`` and, with ``html``, HTML output; its profile defaults to this
    server's when jobs may use it (``$SHIPYARD_PROFILE``), else the user's default. An
    existing job gets the settings given, the notebook as saved now, then the parameters
    when ``parameters_given``: settings first, so a bad cron expression changes nothing;
    parameters last, since the service checks them against the notebook the job has by then.

    Raises
    ------
    SchedulerError
        The service's refusals; and, before any change, when the job of that name runs
        another notebook and ``name_given`` is false (the name came from the file name).
    """
    settings = dict(settings)
    existing = client.job_named(name)
    if existing is None:
        profile = settings.pop("profile", None) or client.default_profile(
            os.environ.get("SHIPYARD_PROFILE")
        )
        body = {"name": name, "profile": profile, "source_path": source, **settings}
        body["parameters"] = parameters
        if html:
            body["output_formats"] = ["ipynb", "html"]
        return Scheduled(client.create_job(body), created=True)
    if existing.get("source_path") != source and not name_given:
        raise SchedulerError(
            f"A job named {name!r} already runs {existing.get('source_path') or 'another notebook'}: "
            f"give this one another name with --name, or pass --name {name} to make "
            f"that job run {source} instead."
        )
    if html:
        settings["output_formats"] = sorted({*existing["output_formats"], "html"})
    changed = set(client.update_job(existing["id"], settings)["changed"])
    replaced = client.replace_notebook(existing["id"], source_path=source)
    changed |= set(replaced["changed"])
    job = replaced["job"]
    if parameters_given:
        updated = client.update_job(existing["id"], {"parameters": parameters})
        changed |= set(updated["changed"])
        job = updated["job"]
    return Scheduled(job, False, frozenset(changed), replaced["notebook_changed"], replaced["diff"])


def webhook_secret_file(job: dict, home: Path | None = None) -> Path | None:
    """Where the job's webhook secret is kept, once it is saved there; None without a webhook.

    A secret the service has just shown (``webhook_secret``, in the answer that made the
    webhook) is saved by :func:`save_webhook_secret`; a job without a webhook trigger any
    more has its old file removed, since its secret is void. The file may not exist: the
    webhook was made elsewhere, and its secret shown there.
    """
    path = (home or Path.home()) / ".shipyard" / "webhooks" / f"{job['name']}.secret"
    if not any(t["trigger"]["kind"] == "webhook" for t in job["triggers"]):
        path.unlink(missing_ok=True)
        return None
    if job.get("webhook_secret"):
        path = save_webhook_secret(job["name"], job["webhook_secret"], home)
    return path
