"""What a notebook declares (its ``parameters`` cell) and what changed between two snapshots.

Parameters are checked when a job is created or changed, and when a run is
asked for with its own parameters, so a typo or a wrong type is a 400 on the
request instead of a run that fails an hour later:

- the declared parameters are read with papermill's own inspector
  (:func:`papermill.inspect_notebook`, the ``papermill --help-notebook``
  logic), so "declared" means what papermill means;
- a parameter's type is its annotation (``alpha: float = 0.5``) or, without
  one, the type of its default when that is a Python literal
  (``alpha = 0.5``); a default that is an expression (``today = date.today()``)
  accepts any value;
- an ``int`` parameter takes integers only, a ``float`` one integers or
  floats, ``str`` strings, ``bool`` booleans, ``list``/``tuple`` lists and
  ``dict`` objects. Booleans are never numbers here, although Python says so.

A notebook without a ``parameters`` cell takes no parameters: papermill would
inject them at the top, where nothing reads them, which is never what was meant.

Before any of that, a notebook must be one (:func:`check_notebook`): a JSON
object of nbformat 4 whose cells each have a ``cell_type`` and a ``source``
(text, or a list of lines), no deeper than the services' JSON limit. Checked
when the job is made or its notebook replaced, inline or read from the home,
so a run never fails on a notebook that could never run, and nothing here
walks a ``cells`` that is a number (issue #14, points 3 and 4).
:data:`NOTEBOOK_SCHEMA` is what the OpenAPI document shows and what the check
validates with (one source), a subset of nbformat's own schema: what the
scheduler and papermill read, leaving the rest (outputs, attachments) to
papermill.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ..common.handlers import check_json
from .errors import Invalid

#: Most cells a notebook may have.
MAX_CELLS = 10_000

#: What the scheduler requires of a notebook: JSON Schema 2020-12 (the OpenAPI 3.1 dialect).
NOTEBOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Jupyter notebook (nbformat 4): its cells each have a cell_type and a source.",
    "required": ["cells", "metadata", "nbformat", "nbformat_minor"],
    "properties": {
        "cells": {
            "type": "array",
            "maxItems": MAX_CELLS,
            "items": {
                "type": "object",
                "required": ["cell_type", "source"],
                "properties": {
                    "cell_type": {"enum": ["code", "markdown", "raw"]},
                    "source": {
                        "anyOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    },
                    "metadata": {
                        "type": "object",
                        "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
                    },
                    "outputs": {"type": "array"},
                    "execution_count": {"type": ["integer", "null"]},
                },
            },
        },
        "metadata": {"type": "object"},
        "nbformat": {"const": 4},
        "nbformat_minor": {"type": "integer", "minimum": 0},
    },
}
_NOTEBOOK = Draft202012Validator(NOTEBOOK_SCHEMA)


def notebook_problem(notebook: Any) -> str | None:
    """What makes ``notebook`` (parsed JSON) not a notebook the scheduler can run; None if nothing.

    The first problem only, named by where it is (``cells[3]``), so the message stays short.
    """
    error = best_match(_NOTEBOOK.iter_errors(notebook))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    where = where.lstrip(".") or "the notebook"
    return f"{where}: {error.message}"[:500]


def check_notebook(data: bytes, what: str = "the notebook") -> Any:
    """Return the notebook in ``data`` parsed, or raise :class:`Invalid` saying what is wrong.

    Raises
    ------
    Invalid
        Not JSON, nested deeper than the services' limit, or not a notebook
        (:data:`NOTEBOOK_SCHEMA`): a cell without ``source``, ``cells`` not a list...
    """
    try:
        notebook = json.loads(data)
    except RecursionError:
        raise Invalid(f"{what} nests too deeply to be a notebook") from None
    except (ValueError, UnicodeDecodeError):
        raise Invalid(f"{what} is not JSON, so not a Jupyter notebook (.ipynb)") from None
    check_json(notebook, what=what)
    problem = notebook_problem(notebook)
    if problem is not None:
        raise Invalid(f"{what} is not a Jupyter notebook that can run: {problem}")
    return notebook


#: Annotation or literal type name -> the JSON types a value may have.
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list,),
    "tuple": (list,),
    "dict": (dict,),
}
_JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _type_of(annotation: str | None, default: str) -> str | None:
    if annotation and annotation not in ("None", "NoneType"):
        base = annotation.split("[", 1)[0].strip().lower()
        return base if base in _ACCEPTS else None
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    name = type(value).__name__
    return name if name in _ACCEPTS else None


def declared_parameters(notebook: bytes) -> dict[str, dict[str, Any]] | None:
    """Return ``{name: {"type": ..., "default": ..., "help": ...}}``, or None without a cell.

    ``type`` is None when any value is accepted; ``default`` is the source
    text of the default, as papermill reports it.
    """
    from papermill import inspect_notebook

    nb = json.loads(notebook)
    if not any(
        "parameters" in ((cell.get("metadata") or {}).get("tags") or [])
        for cell in nb.get("cells", [])
    ):
        return None
    fd, path = tempfile.mkstemp(suffix=".ipynb")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(notebook)
        found = inspect_notebook(path)
    finally:
        os.unlink(path)
    return {
        name: {
            "type": _type_of(
                None if p.get("inferred_type_name") in (None, "None") else p["inferred_type_name"],
                p.get("default") or "",
            ),
            "default": p.get("default"),
            "help": p.get("help") or "",
        }
        for name, p in found.items()
    }


def check_against_notebook(
    declared: Mapping[str, Mapping[str, Any]] | None, parameters: Mapping[str, Any]
) -> None:
    """Raise :class:`Invalid` naming every parameter the notebook does not declare or type.

    Parameters
    ----------
    declared : mapping or None
        From :func:`declared_parameters` (None: the notebook has no parameters cell).
    parameters : mapping
        What the user sends (already checked to be identifiers and JSON values).
    """
    if not parameters:
        return
    if declared is None:
        raise Invalid(
            f"the notebook has no cell tagged 'parameters', so it takes no parameters (got "
            f"{', '.join(sorted(parameters))}): tag the cell that sets the defaults "
            "'parameters' (JupyterLab: property inspector, cell tags)"
        )
    problems = []
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        problems.append(
            f"not in the notebook's parameters cell: {', '.join(unknown)} "
            f"(it declares {', '.join(sorted(declared)) or 'none'})"
        )
    for name, value in sorted(parameters.items()):
        if name not in declared:
            continue
        wanted = declared[name]["type"]
        if wanted is None:
            continue
        accepts = _ACCEPTS[wanted]
        if isinstance(value, bool) and bool not in accepts or not isinstance(value, accepts):
            problems.append(
                f"{name} must be {_JSON_NAMES[accepts[-1]]} (the notebook declares {wanted}, "
                f"default {declared[name]['default']}), not {_JSON_NAMES.get(type(value), 'that')}"
            )
    if problems:
        raise Invalid("parameters do not match the notebook: " + "; ".join(problems))


def _cells(notebook: bytes) -> list[tuple[str, str]]:
    nb = json.loads(notebook)
    out = []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        out.append((cell.get("cell_type", "code"), source))
    return out


def notebook_diff(old: bytes, new: bytes, max_lines: int = 200) -> str:
    """A unified diff of the two notebooks' cell sources (outputs ignored), cut at ``max_lines``.

    Empty when only outputs or metadata changed.
    """

    def lines(cells: list[tuple[str, str]]) -> list[str]:
        result = []
        for i, (kind, source) in enumerate(cells, 1):
            result.append(f"# ---- cell {i} ({kind})\n")
            result.extend(
                line if line.endswith("\n") else line + "\n" for line in source.splitlines()
            )
        return result

    diff = list(
        difflib.unified_diff(lines(_cells(old)), lines(_cells(new)), "scheduled", "now", n=1)
    )
    if len(diff) > max_lines:
        diff = diff[:max_lines] + [f"... {len(diff) - max_lines} more lines\n"]
    return "".join(diff)
