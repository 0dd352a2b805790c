"""Values a notebook hands on to the later steps of its pipeline: :func:`output`.

A pipeline step declares in ``pipeline.yaml`` the values it makes
(``outputs: {model_uri: string, auc: number}``) and the files it writes
(``files: {table: out/table.parquet}``); later steps receive them as notebook
parameters. The notebook records a value with :func:`output` and writes files
under :func:`workspace`::

    from hub_ext.runtime.outputs import output, workspace

    table = workspace() / "out" / "table.parquet"
    table.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(table)
    output("rows", len(df))
    output("auc", 0.91)

Inside a pipeline step the scheduler sets two variables in the run's
environment: ``SHIPYARD_OUTPUTS``, the file :func:`output` appends to, and
``SHIPYARD_WORKSPACE``, the run's workspace. Outside a pipeline (a notebook run
by hand) neither is set: :func:`output` warns once that values are recorded
only when the notebook runs as a pipeline step, keeps them in this kernel so
:func:`recorded` shows what a later step would get, and :func:`workspace` is the
current directory.

Each call appends one JSON line ``{"name": ..., "value": ...}`` and syncs it to
disk before returning. JSON lines because the file is only ever appended to:
what was recorded before a kernel crash is on disk whole, a value recorded
twice needs no rewrite (the scheduler reads the last one), and the scheduler
reads it back line by line with a size limit, as untrusted input (it is written
by the owner's account, see :mod:`hub_ext.services.scheduler.pipelines.outputs`).

Rejected alternatives:

- papermill's ``record()`` or scrapbook's ``glue()``: papermill removed
  ``record()`` (it moved to scrapbook), scrapbook would be one more package in
  every environment, and both keep values in the output notebook, which the
  scheduler would then have to parse whole.
- the notebook's metadata: it is written when the notebook is saved at the
  end, so a crash loses every value recorded before it.

This module runs in the user's kernel, with the environment's Python: it
imports only the standard library, and copies the two rules it shares with the
scheduler (the name pattern and the file's size limit) rather than importing
them; a test keeps the copies equal.
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["MAX_FILE_BYTES", "MAX_VALUE_BYTES", "output", "recorded", "workspace"]

#: The variable naming the file :func:`output` appends to (set in a pipeline step).
OUTPUTS_ENV = "SHIPYARD_OUTPUTS"
#: The variable naming the run's workspace (set in a pipeline step).
WORKSPACE_ENV = "SHIPYARD_WORKSPACE"
#: One value, as JSON, is at most this many bytes: larger data belongs in a file.
MAX_VALUE_BYTES = 64 * 1024
#: The scheduler reads at most this much of the outputs file (a copy of
#: ``pipelines.outputs.MAX_OUTPUTS_BYTES``): values recorded again count again.
MAX_FILE_BYTES = 1024 * 1024
#: An output name: a copy of ``PARAMETER_NAME_PATTERN`` in
#: ``hub_ext/services/scheduler/validation.py``, the rule of ``OutputName`` in
#: ``pipelines/spec.py`` (a later step gets the value as a notebook parameter).
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
_NAME = re.compile(NAME_PATTERN)

_NOT_IN_PIPELINE = (
    "this notebook is not running as a pipeline step ({outputs} and {workspace} are not "
    "set): output() records values for later steps only when the notebook runs as a "
    "pipeline step; here they stay in this kernel (see recorded()), and workspace() is "
    "the current directory"
)

_lock = threading.Lock()
_values: dict[str, Any] = {}
_warned = False


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        # stacklevel 3: the notebook cell that called output() or workspace()
        warnings.warn(
            _NOT_IN_PIPELINE.format(outputs=OUTPUTS_ENV, workspace=WORKSPACE_ENV),
            UserWarning,
            stacklevel=3,
        )


def _encode(name: str, value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a ValueError: first
        raise ValueError(
            f"output {name!r}: the value holds text that is not valid Unicode (a lone "
            "surrogate, as from decoding bytes with errors='surrogateescape'): decode the "
            "text properly or record it as a string of hex digits"
        ) from None
    except TypeError as exc:
        raise TypeError(
            f"output {name!r}: {exc}; record JSON values only (str, int, float, bool, None, "
            "and lists and dicts of them with string keys): convert a numpy number with "
            ".item() or an array with .tolist(), or write the data to a file under "
            "workspace() and declare it under the step's files: in pipeline.yaml"
        ) from None
    except ValueError as exc:
        raise ValueError(
            f"output {name!r}: {exc}; JSON has no NaN or infinity: record None or a string "
            "instead, and no value may contain itself"
        ) from None
    except RecursionError:
        raise ValueError(
            f"output {name!r}: the value is nested too deeply to record as JSON; flatten it "
            "or write it to a file under workspace()"
        ) from None


def output(name: str, value: Any) -> None:
    """Record ``value`` as the output ``name`` of this pipeline step.

    Later steps that name ``steps.<this step>.outputs.<name>`` in their inputs get
    it as a notebook parameter. The step must declare ``name`` with its type under
    ``outputs:`` in ``pipeline.yaml``. Recording a name again replaces the value
    (the last one wins).

    Parameters
    ----------
    name : str
        Letters, digits and underscores, not starting with a digit (at most 100).
    value
        A JSON value (str, int, float, bool, None, lists and dicts of them), at
        most :data:`MAX_VALUE_BYTES` as JSON; no NaN or infinity.

    Raises
    ------
    TypeError
        ``name`` is not a string, or ``value`` is not JSON (a numpy array, a
        DataFrame, a datetime).
    ValueError
        ``name`` is not an identifier, ``value`` holds NaN, infinity or a lone
        surrogate, contains itself, or is larger than :data:`MAX_VALUE_BYTES` as
        UTF-8 JSON, or the step's outputs would pass :data:`MAX_FILE_BYTES` in all.
    """
    if not isinstance(name, str):
        raise TypeError(f"an output name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"output name {name!r} is not valid: use letters, digits and underscores, not "
            "starting with a digit, at most 100 characters (e.g. 'model_uri'), the name "
            "declared under the step's outputs: in pipeline.yaml"
        )
    encoded = _encode(name, value)
    size = len(encoded)
    if size > MAX_VALUE_BYTES:
        raise ValueError(
            f"output {name!r} is {size} bytes as JSON, over the limit of {MAX_VALUE_BYTES} "
            "bytes: write large data to a file under workspace(), declare it under the "
            "step's files: in pipeline.yaml, and record only small values"
        )
    line = (
        json.dumps({"name": name, "value": json.loads(encoded)}, ensure_ascii=False) + "\n"
    ).encode("utf-8")
    target = os.environ.get(OUTPUTS_ENV)
    with _lock:
        if target:
            with open(target, "ab") as f:
                written = os.fstat(f.fileno()).st_size
                if written + len(line) > MAX_FILE_BYTES:
                    raise ValueError(
                        f"output {name!r} would take this step's outputs past "
                        f"{MAX_FILE_BYTES} bytes in all ({written} recorded so far; a "
                        "value recorded again counts again): record each output once, at "
                        "the end, and write large data to a file declared under files:"
                    )
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        else:
            _warn_once()
        # as a later step reads it: tuples are lists, dict keys are strings
        _values[name] = json.loads(encoded)


def recorded() -> dict[str, Any]:
    """Return the outputs this kernel recorded so far, by name (last value of each).

    The values are as a later step gets them (read back from their JSON), so a
    tuple shows as a list. Useful outside a pipeline to check what a step would
    hand on.
    """
    with _lock:
        return json.loads(json.dumps(_values))


def workspace() -> Path:
    """Return the run's workspace: where files declared under ``files:`` are written.

    The paths under a step's ``files:`` in ``pipeline.yaml`` are relative to it.
    Outside a pipeline step it is the current directory (with the one-time
    warning of :func:`output`).
    """
    folder = os.environ.get(WORKSPACE_ENV)
    if folder:
        return Path(folder)
    _warn_once()
    return Path.cwd()
