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


def _input_text(kind: str | None, default: str | None) -> str | None:
    # what an input shows for the default, read back by read_parameter_text as the default:
    # a str parameter's string bare (its literal's value) unless the bare string would
    # read as a quoted literal itself; any other default as written
    if default is None:
        return None
    if kind == "str":
        ok, value = _literal(default)
        if ok and isinstance(value, str):
            quoted, inner = _literal(value)
            return default if quoted and isinstance(inner, str) else value
    return default


def declared_parameters(notebook: bytes) -> dict[str, dict[str, Any]] | None:
    """Return ``{name: {"type", "default", "help", "text"}}``, or None without a cell.

    ``type`` is None when any value is accepted; ``default`` is the source
    text of the default, as papermill reports it; ``text`` is what an input shows
    for the default, which :func:`read_parameter_text` reads back as the default
    (a ``str`` parameter's string without its quotes, any other default as written).
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
    declared = {}
    for name, p in found.items():
        kind = _type_of(
            None if p.get("inferred_type_name") in (None, "None") else p["inferred_type_name"],
            p.get("default") or "",
        )
        declared[name] = {
            "type": kind,
            "default": p.get("default"),
            "help": p.get("help") or "",
            "text": _input_text(kind, p.get("default")),
        }
    return declared


def parameter_problem(
    declared: Mapping[str, Mapping[str, Any]] | None, name: str, value: Any
) -> str | None:
    """What is wrong with ``name = value`` for a notebook that declares ``declared``; None if nothing.

    The one check of a parameter against the notebook, for a job, a manual run and the
    parameters preview. ``value`` has passed :func:`.validation.check_parameters`.
    """
    if declared is None:
        return (
            "the notebook has no cell tagged 'parameters', so it takes no parameters: tag the "
            "cell that sets the defaults 'parameters' (JupyterLab: property inspector, cell tags)"
        )
    if name not in declared:
        return (
            f"{name} is not in the notebook's parameters cell "
            f"(it declares {', '.join(sorted(declared)) or 'none'})"
        )
    wanted = declared[name]["type"]
    if wanted is None:
        return None
    accepts = _ACCEPTS[wanted]
    if isinstance(value, bool) and bool not in accepts or not isinstance(value, accepts):
        return (
            f"{name} must be {_JSON_NAMES[accepts[-1]]} (the notebook declares {wanted}, "
            f"default {declared[name]['default']}), not {_JSON_NAMES.get(type(value), 'that')}"
        )
    return None


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
        if name in declared:
            problem = parameter_problem(declared, name, value)
            if problem is not None:
                problems.append(problem)
    if problems:
        raise Invalid("parameters do not match the notebook: " + "; ".join(problems))


#: The JSON spellings a user may type for Python's constants.
_JSON_CONSTANTS = {"true": "True", "false": "False", "null": "None"}
#: What a typed value of each declared type must look like, for the message.
_EXAMPLES = {
    "int": "a whole number, e.g. 3 or -1",
    "float": "a number, e.g. 0.5 or -1e-3",
    "bool": "True or False",
    "list": "a list, e.g. [1, 2, 3]",
    "tuple": "a list, e.g. [1, 2, 3]",
    "dict": "a dict with string keys, e.g. {'a': 1}",
}


def _literal(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` is a Python literal (or true/false/null), else ``(False, None)``.

    Tuples become lists (JSON has none); what JSON cannot carry (a set, bytes, a complex
    number) is returned as it is, for :func:`.validation.check_parameter_value` to name.
    """
    stripped = text.strip()
    try:
        value = ast.literal_eval(_JSON_CONSTANTS.get(stripped, stripped))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None

    def jsonish(item: Any) -> Any:
        if isinstance(item, tuple | list):
            return [jsonish(i) for i in item]
        if isinstance(item, dict):
            return {k: jsonish(v) for k, v in item.items()}
        return item

    return True, jsonish(value)


def read_parameter_text(declared: Mapping[str, Any] | None, name: str, text: str) -> Any:
    """The value the text ``text`` typed for parameter ``name`` stands for.

    How the panel's inputs and ``%schedule -p name=value`` are read, in one place: a
    ``str`` parameter takes a quoted string literal's value (``'3'`` or ``"3"`` is ``3``,
    as text) and any other text as it is (``two words``); any other declared type takes a Python
    literal of that type (``3``, ``0.5``, ``True``, ``[1, 2]``, ``{'a': 1}``; JSON's
    ``true``, ``false`` and ``null`` too), an ``int`` also a float without a fraction;
    a parameter of any type (no annotation, an expression default, or not declared)
    takes a literal when the text is one, else the text as a string.

    Parameters
    ----------
    declared : mapping or None
        The parameter as :func:`declared_parameters` describes it; None when the notebook
        does not declare it (the caller reports that with :func:`parameter_problem`).

    Raises
    ------
    ValueError
        The text is not a value of the declared type; the message says what is wanted.
    """
    wanted = declared["type"] if declared else None
    ok, value = _literal(text)
    if wanted == "str":
        return value if ok and isinstance(value, str) else text
    if wanted is None:
        return value if ok else text
    if ok and wanted == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    accepts = _ACCEPTS[wanted]
    if not ok or isinstance(value, bool) and bool not in accepts or not isinstance(value, accepts):
        raise ValueError(
            f"{name} must be {_EXAMPLES[wanted]} (the notebook declares {wanted}, "
            f"default {declared['default'] if declared else None}), not {text.strip()!r}"
        )
    return value


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
