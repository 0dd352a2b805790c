"""Reading ``pipeline.yaml``: every error names the line and column of the node to fix.

:func:`load_pipeline` reads the text once with PyYAML's composer, which keeps
each node's position (its *mark*), then builds the Python data from those same
nodes, validates it with :class:`~.spec.Pipeline` and checks the graph
(:func:`.graph.problems`). Each error, whatever found it, is reported as
``pipeline.yaml:12:7: <what to fix>`` at the YAML node it is about: a pydantic
error's location (``("steps", "train", "timeout")``) and a graph problem's path
are walked down the node tree to that node; an unknown field points at its key,
a missing one at the mapping that lacks it. All errors are raised together in
one :class:`PipelineError`, in the file's order, so one edit-and-retry fixes
them all. The graph is checked once every field is valid: a graph of steps
that were only half read would report errors that are not there.

What the file may not do although YAML allows it:

- the same key twice in a mapping: YAML loaders keep the last one silently, so
  a second ``timeout:`` would win unseen; refused at the second key, naming the
  line of the first (a merge key, ``<<``, may still be overridden: that is what
  it is for);
- more than :data:`MAX_NODES` nodes once aliases are expanded, or an alias
  inside its own anchor: a few lines of anchors can otherwise expand to
  billions of values (the "billion laughs");
- more than :data:`MAX_FILE_BYTES` bytes, or more than one document.

With ``base_dir`` (the folder of the pipeline file), each notebook step's
notebook must also be a regular file inside that folder, checked by the
scheduler's one path resolver (:func:`..paths.read_in_home`: no link out, no
``..``); a missing one is reported at that step's ``notebook:`` line.

The JSON schema that editors use is generated from the same models
(:mod:`.schema`); put this first line in a pipeline file to have it checked
as you type (with the yaml-language-server, e.g. VS Code's YAML extension)::

    # yaml-language-server: $schema=<path to>/pipeline.schema.json

The schema says what each field may hold; only this loader sees duplicate keys,
the graph, and the notebooks.

Rejected alternatives: ruamel.yaml's round-trip loader, which keeps positions
too but is a second YAML dialect beside the PyYAML every other Shipyard file is
read with; and reporting only the first error, which makes fixing a file a
loop of one edit per run.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel as _BaseModel
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import Invalid, NotFound, SchedulerError
from ..paths import read_in_home
from . import spec
from .graph import Path, Problem, problems
from .spec import NotebookStep, Pipeline

#: The largest pipeline file read, in bytes.
MAX_FILE_BYTES = 1024 * 1024
#: The most nodes a file may hold once its aliases are expanded.
MAX_NODES = 100_000
#: The largest notebook :func:`load_pipeline` opens to check it is there.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_TAG_WORDS = {
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}
#: Union members pydantic names in an error's location, by the field that holds the union.
_UNION_TAGS = {
    "steps": {"notebook", "deploy"},
    "triggers": {"cron", "file", "webhook", "after_job", "after_pipeline"},
}


@dataclass(frozen=True)
class Located:
    """An error in a pipeline file, at a line and column (both from 1)."""

    source: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.message}"


class PipelineError(Invalid):
    """A pipeline file that cannot be used; :attr:`errors` lists every reason, in order.

    Its message is the errors, one a line, as ``file:line:column: what to fix``.
    """

    def __init__(self, errors: list[Located]):
        self.errors = sorted(errors, key=lambda e: (e.line, e.column))
        super().__init__("\n".join(str(e) for e in self.errors))


def _at(source: str, node: Node | None, message: str) -> Located:
    if node is None:
        return Located(source, 1, 1, message)
    return Located(source, node.start_mark.line + 1, node.start_mark.column + 1, message)


def _pairs(node: MappingNode) -> list[tuple[Node, Node]]:
    # the mapping's own pairs, then those it merges (``<<: *defaults``), own ones first
    own = [(k, v) for k, v in node.value if k.tag != _MERGE]
    merged: list[tuple[Node, Node]] = []
    for key, value in node.value:
        if key.tag == _MERGE:
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if isinstance(source, MappingNode):
                    merged.extend(_pairs(source))
    return own + merged


def _structure(source: str, root: Node) -> tuple[list[Located], bool]:
    """Duplicate keys, aliases that recurse, and the expanded size, as errors.

    The flag is False when the data must not be validated: a loop or too many values
    (building it would not end), or a key that is not text (every error after it would
    be about a key the user did not mean).
    """
    errors: list[Located] = []
    fatal = False
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        nonlocal fatal
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Recursive(node)
        open_nodes.add(key)
        total = 1
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], Node] = {}
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.tag not in (_MERGE, _STR):
                    # YAML 1.1 reads on/off/yes/no as booleans, 1 as a number, ~ as null
                    errors.append(
                        _at(
                            source,
                            k,
                            f"the key {k.value!r} is read as {_TAG_WORDS.get(k.tag, k.tag)}, "
                            f"not as text: quote it ('{k.value}')",
                        )
                    )
                    fatal = True
                if isinstance(k, ScalarNode) and k.tag != _MERGE:
                    first = seen.setdefault((k.tag, k.value), k)
                    if first is not k:
                        errors.append(
                            _at(
                                source,
                                k,
                                f"the key {k.value!r} is already set on line "
                                f"{first.start_mark.line + 1}: YAML would keep only the last "
                                "one; remove one of them",
                            )
                        )
                total += size(k) + size(v)
        elif isinstance(node, SequenceNode):
            total += sum(size(item) for item in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise _TooBig(node)
        return total

    try:
        size(root)
    except _Recursive as e:
        return [
            _at(source, e.node, "an alias refers to a node it is inside: remove the loop")
        ], False
    except _TooBig:
        return [
            _at(
                source,
                root,
                f"the file holds more than {MAX_NODES} values once its aliases are expanded: "
                "write it out without nested aliases",
            )
        ], False
    return errors, not fatal


class _Recursive(Exception):
    def __init__(self, node: Node):
        self.node = node


class _TooBig(Exception):
    pass


def _compose(source: str, text: str) -> tuple[Node | None, Any, list[Located]]:
    """Return the node tree, the data built from it, and any error that stops the reading."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        return None, None, [_at(source, None, f"the file is over {MAX_FILE_BYTES} bytes")]
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return (
                None,
                None,
                [_at(source, None, "the file is empty: a pipeline needs at least name and steps")],
            )
        errors, readable = _structure(source, root)
        if not readable:  # building the data would loop or blow up
            return root, None, errors
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(p for p in (e.context, e.problem) if p)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, None, [Located(source, line, column, f"not valid YAML: {what}")]
    except RecursionError:
        return None, None, [_at(source, None, "the file nests too deeply to read")]
    finally:
        loader.dispose()
    if not isinstance(root, MappingNode):
        errors.append(
            _at(source, root, "a pipeline file is a mapping: name, steps and the other fields")
        )
    return root, data, errors


def _strip_tags(path: tuple[Any, ...]) -> tuple[Any, ...]:
    # ("steps", "train", "notebook", "timeout") -> ("steps", "train", "timeout")
    if len(path) > 2 and path[0] in _UNION_TAGS and path[2] in _UNION_TAGS[path[0]]:
        return path[:2] + path[3:]
    return path


def _walk(root: Node, path: tuple[Any, ...]) -> tuple[Node, Node | None, list[Any], list[Any]]:
    """Follow ``path`` down from ``root``: the last node reached, its key, and the parts
    followed and not followed."""
    node: Node = root
    key: Node | None = None
    followed: list[Any] = []
    rest = list(path)
    while rest:
        part = rest[0]
        if part == "[key]":
            return key or node, key, followed, rest[1:]
        if isinstance(node, MappingNode):
            match = next(
                (
                    (k, v)
                    for k, v in _pairs(node)
                    if isinstance(k, ScalarNode) and k.value == str(part)
                ),
                None,
            )
            if match is None:
                break
            key, node = match
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            key, node = None, node.value[part]
        else:
            break
        followed.append(rest.pop(0))
    return node, key, followed, rest


def _dotted(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the file"


def _field_names() -> list[str]:
    names: set[str] = set()
    for value in vars(spec).values():
        if isinstance(value, type) and issubclass(value, _BaseModel):
            names.update(value.model_fields)
    return sorted(names)


def _pydantic_errors(source: str, root: Node, error: ValidationError) -> list[Located]:
    found = []
    for item in error.errors():
        path = _strip_tags(tuple(item["loc"]))
        node, key, followed, rest = _walk(root, path)
        where = _dotted(followed)
        kind = item["type"]
        message = str(item["msg"]).removeprefix("Value error, ")
        if kind == "missing":
            message = f"{where} needs {rest[-1]!r}: add it"
        elif kind == "extra_forbidden":
            name = str(followed[-1]) if followed else str(path[-1])
            close = difflib.get_close_matches(name, _field_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if close and close[0] == name:
                hint = " (a field of another kind of step or trigger)"
            message = f"unknown field {name!r} in {_dotted(followed[:-1])}{hint}: remove it or fix its spelling"
            node = key or node
        elif kind == "literal_error" and path[0] == "steps" and path[-1] == "type":
            message = (
                f"{where}: a step's type is notebook (the default) or deploy, not {item['input']!r}"
            )
        elif kind == "union_tag_not_found" and path and path[0] == "triggers":
            message = f"{where} needs a kind: one of {', '.join(sorted(_UNION_TAGS['triggers']))}"
        else:
            message = f"{where}: {message}"
        found.append(_at(source, node, message))
    return found


def _graph_errors(source: str, root: Node, found: list[Problem]) -> list[Located]:
    return [_at(source, _walk(root, problem.path)[0], problem.message) for problem in found]


def _notebook_errors(
    source: str, root: Node, pipeline: Pipeline, base_dir: str | os.PathLike[str], limit: int
) -> list[Located]:
    found = []
    for step_id, step in pipeline.steps.items():
        if not isinstance(step, NotebookStep):
            continue
        path: Path = ("steps", step_id, "notebook")
        try:
            read_in_home(base_dir, step.notebook, limit)
        except NotFound:
            message = (
                f"step {step_id!r}: no notebook {step.notebook!r} beside pipeline.yaml (the path "
                "is relative to the folder of pipeline.yaml, and a link out of it is not "
                "followed): fix the path or add the notebook"
            )
        except SchedulerError as e:  # not a regular file, or too large
            message = f"step {step_id!r}: {e.message}"
        else:
            continue
        found.append(_at(source, _walk(root, path)[0], message))
    return found


def load_pipeline(
    text: str,
    source: str = "pipeline.yaml",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    max_notebook_bytes: int = MAX_NOTEBOOK_BYTES,
) -> Pipeline:
    """Return the pipeline ``text`` describes, or raise every error in it, located.

    Parameters
    ----------
    text : str
        The content of the pipeline file.
    source : str
        The file's name as errors should show it.
    base_dir : path, optional
        The folder the file is in: when given, every notebook step's notebook must be a
        regular file there (of at most ``max_notebook_bytes``).

    Raises
    ------
    PipelineError
        With one :class:`Located` error per thing to fix.
    """
    root, data, errors = _compose(source, text)
    if root is None or data is None or not isinstance(root, MappingNode):
        raise PipelineError(errors)
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as e:
        raise PipelineError(errors + _pydantic_errors(source, root, e)) from None
    errors += _graph_errors(source, root, problems(pipeline))
    if base_dir is not None:
        errors += _notebook_errors(source, root, pipeline, base_dir, max_notebook_bytes)
    if errors:
        raise PipelineError(errors)
    return pipeline
