"""What a finished step hands on: its recorded values and its declared files, checked.

A notebook step records values with :func:`hub_ext.runtime.outputs.output`,
which appends one JSON line ``{"name": ..., "value": ...}`` per call to the file
named by ``SHIPYARD_OUTPUTS``, and writes files into its workspace
(``SHIPYARD_WORKSPACE``). When the run ends, the scheduler reads both back:

- :func:`read_outputs` parses the outputs file against the step's declared
  ``outputs:`` and returns the last value of each name;
- :func:`check_files` checks that each file under the step's ``files:`` is a
  regular file inside the workspace and returns its path;
- :func:`file_digest` is the SHA-256 of such a file, for lineage.

Both files are written by the owner's account, in a folder that account
controls, so everything here treats them as untrusted (SECURITY rules 1 and
6): the outputs file is opened without following a symlink (``O_NOFOLLOW``),
must be a regular file and is read up to a size limit; every line must be a
JSON object with exactly ``name`` and ``value``, without NaN, infinity or a
repeated key; a declared file is resolved and checked to lie inside the
workspace by path components, so a symlink out of the workspace is refused.

Every refusal is an :class:`OutputError` whose message says what to change in
the notebook or in ``pipeline.yaml``; the engine fails the step with it.

Rejected alternatives: reading the values from the executed notebook (the
notebook would have to be parsed whole, and it is saved last, so a crash loses
what was recorded); coercing a value to its declared type (``"3"`` for an
``integer`` hides a bug in the notebook until a later step misreads it, so a
wrong type is an error as in the pipeline file's own models).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..validation import PARAMETER_NAME_PATTERN
from .spec import OutputType

#: The variables a step's run gets (the names ``hub_ext.runtime.outputs`` reads).
OUTPUTS_ENV = "SHIPYARD_OUTPUTS"
WORKSPACE_ENV = "SHIPYARD_WORKSPACE"
#: The outputs file is read up to this size (``hub_ext.runtime.outputs`` keeps a copy).
MAX_OUTPUTS_BYTES = 1024 * 1024
#: Files are hashed in chunks of this size.
_CHUNK = 1024 * 1024
#: A value shown in a message is cut to this many characters.
_SHOWN = 80

_NAME = re.compile(PARAMETER_NAME_PATTERN)
_NOT_BY_HAND = "record values only with output() from hub_ext.runtime.outputs"


class OutputError(Exception):
    """A step's outputs or files are not what its ``pipeline.yaml`` declares.

    The message is for the pipeline's owner and says what to fix in the
    notebook or in ``pipeline.yaml``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _names(names: Any) -> str:
    listed = ", ".join(repr(n) for n in sorted(names))
    return listed or "none"


def _type_problem(name: str, kind: OutputType, value: Any) -> str | None:
    """Why ``value`` is not of type ``kind``, or None when it is."""
    if kind is OutputType.json:
        return None  # anything the parser accepted is JSON (non-finite numbers were refused)
    if kind is OutputType.string:
        ok = isinstance(value, str)
    elif kind is OutputType.boolean:
        ok = isinstance(value, bool)
    elif kind is OutputType.integer:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # number; finite, as the parser refused NaN, infinity and 1e999
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        return None
    what = "null" if value is None else type(value).__name__
    return (
        f"output {name!r} is declared as {kind.value} but the notebook recorded "
        f"{_shown(value)} ({what}): change the value passed to output({name!r}, ...) or "
        "the type under the step's outputs: in pipeline.yaml"
    )


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999 parses as infinity
        raise ValueError(f"the number {text} is out of range")
    return number


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _parse(line: bytes, number: int) -> tuple[str, Any]:
    where = f"line {number} of the step's outputs file"
    try:
        record = json.loads(
            line.decode("utf-8"),
            parse_float=_finite,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OutputError(f"{where} is not valid JSON ({exc}): {_NOT_BY_HAND}") from None
    if not isinstance(record, dict) or set(record) != {"name", "value"}:
        raise OutputError(
            f"{where} is not an object with exactly 'name' and 'value': {_NOT_BY_HAND}, "
            "and do not write to the file yourself"
        )
    try:  # "\\ud800" parses to a lone surrogate, which no later step could be given
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError(
            f"{where} holds text that is not valid Unicode (a lone surrogate): "
            f"{_NOT_BY_HAND}, which refuses such text"
        ) from None
    except RecursionError:
        raise OutputError(f"{where} is nested too deeply: {_NOT_BY_HAND}") from None
    name = record["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise OutputError(
            f"{where} names {_shown(name)}, which is not an output name: {_NOT_BY_HAND}"
        )
    return name, record["value"]


def _read_limited(path: Path, limit_bytes: int) -> bytes | None:
    """The file's bytes, or None when nothing is there; never through a symlink."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(
                f"the step's outputs file {str(path)!r} is a symbolic link, which is not "
                f"read: the notebook must not replace ${OUTPUTS_ENV}; {_NOT_BY_HAND}"
            ) from None
        raise OutputError(
            f"the step's outputs file {str(path)!r} cannot be opened ({exc.strerror}): the "
            f"notebook must not change ${OUTPUTS_ENV} or its permissions; {_NOT_BY_HAND}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(
                f"the step's outputs file {str(path)!r} is not a regular file: the notebook "
                f"must not replace ${OUTPUTS_ENV}; {_NOT_BY_HAND}"
            )
        too_large = OutputError(
            f"the step's outputs file is over the limit of {limit_bytes} bytes: record "
            "each output once with a small value (a value recorded again counts again), "
            "and write large data to a file declared under the step's files: in "
            "pipeline.yaml"
        )
        if info.st_size > limit_bytes:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while size <= limit_bytes:  # the file may grow while it is read
            chunk = os.read(fd, limit_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit_bytes:
            raise too_large
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_outputs(
    path: Path,
    declared: Mapping[str, OutputType],
    limit_bytes: int = MAX_OUTPUTS_BYTES,
) -> dict[str, Any]:
    """Return the values a step's run recorded, checked against its declared outputs.

    Parameters
    ----------
    path : Path
        The outputs file the run was given as ``SHIPYARD_OUTPUTS``.
    declared : Mapping[str, OutputType]
        The step's ``outputs:`` from ``pipeline.yaml``: name -> type.
    limit_bytes : int
        The largest outputs file read.

    Returns
    -------
    dict
        Each declared name -> the last value recorded for it. A step that
        declares nothing and recorded nothing (no file) gives ``{}``.

    Raises
    ------
    OutputError
        The file is a symlink, not a regular file, or too large; a line is not a
        JSON object of exactly ``name`` and ``value``; a name is not declared; a
        value is not of its declared type; a declared output was never recorded.
    """
    kinds = {name: OutputType(kind) for name, kind in declared.items()}
    data = _read_limited(Path(path), limit_bytes)
    values: dict[str, Any] = {}
    if data is not None:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the newline that ends the last line
        for number, line in enumerate(lines, start=1):
            name, value = _parse(line, number)
            values[name] = value  # the last value of a name wins
    undeclared = set(values) - set(kinds)
    if undeclared:
        raise OutputError(
            f"the notebook recorded {_names(undeclared)}, not declared under the step's "
            f"outputs: in pipeline.yaml (declared: {_names(kinds)}): declare each with its "
            "type (string, number, integer, boolean or json), or remove its output() call"
        )
    problems = [
        problem
        for name, kind in kinds.items()
        if name in values and (problem := _type_problem(name, kind, values[name]))
    ]
    problems += [
        f"step declared output {name!r} but the notebook never called output({name!r}, ...)"
        for name in kinds
        if name not in values
    ]
    if problems:
        raise OutputError("; ".join(problems))
    return {name: values[name] for name in kinds}


def _inside(child: str, parent: str) -> bool:
    # by path components: /ws/run10 is not inside /ws/run1 (SECURITY rule 1)
    return Path(child).parts[: len(Path(parent).parts)] == Path(parent).parts


def check_files(workspace: Path, declared: Mapping[str, str]) -> dict[str, str]:
    """Return each declared file's absolute path, checked to be a regular file inside ``workspace``.

    Parameters
    ----------
    workspace : Path
        The run's workspace (``SHIPYARD_WORKSPACE``).
    declared : Mapping[str, str]
        The step's ``files:`` from ``pipeline.yaml``: name -> path relative to
        the workspace.

    Returns
    -------
    dict
        name -> the file's resolved absolute path. A symlink inside the
        workspace to a file inside it is followed; the path returned is the
        file's own.

    Raises
    ------
    OutputError
        Naming every declared file that is missing, is not a regular file, or
        resolves outside the workspace (a symlink pointing out of it).
    """
    root = os.path.realpath(workspace)
    found: dict[str, str] = {}
    missing: list[str] = []
    refused: list[str] = []
    for name, relative in declared.items():
        pure = PurePosixPath(relative)
        if not relative or "\x00" in relative or pure.is_absolute() or ".." in pure.parts:
            refused.append(f"{name!r} ({relative!r} is not a path inside the workspace)")
            continue
        resolved = os.path.realpath(os.path.join(root, *pure.parts))
        if not _inside(resolved, root):
            refused.append(f"{name!r} ({relative!r} is a symbolic link out of the workspace)")
            continue
        try:
            info = os.lstat(resolved)
        except OSError:
            missing.append(f"{name!r} ({relative!r})")
            continue
        if not stat.S_ISREG(info.st_mode):
            refused.append(f"{name!r} ({relative!r} is not a regular file)")
            continue
        found[name] = resolved
    problems = []
    if missing:
        problems.append(
            f"the notebook did not write the declared files {', '.join(missing)}: write each "
            "under workspace() at the path the step's files: in pipeline.yaml gives, or "
            "correct the path there"
        )
    if refused:
        problems.append(
            f"declared files that cannot be handed on: {', '.join(refused)}; write each as "
            "a regular file inside workspace()"
        )
    if problems:
        raise OutputError("; ".join(problems))
    return found


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 of the regular file at ``path`` as hex, read in chunks.

    The file is opened without following a symlink in its last component, as
    :func:`check_files` returns resolved paths.
    """
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OutputError(f"{str(path)!r} is not a regular file: write it as one")
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
