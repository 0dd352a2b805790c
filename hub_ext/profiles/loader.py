"""Reading a profiles file: YAML with line numbers, every problem reported at once.

:func:`load_profiles` (a path) and :func:`parse_profiles` (its text) return the
validated :class:`~.model.ProfilesConfig`, or raise :class:`ProfilesInvalid` listing
every problem with its ``file:line``, where it is (``profiles[2].mem_limit``) and what to
write instead: pydantic's errors are located in the YAML and reworded, and the rules
that span the whole file (unique slugs, exactly one default, guarantees within limits,
known environments) are checked on the raw data, so they are reported even when a
profile has other errors.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hub_ext.profiles.model import (
    GUARANTEE_ERROR,
    Profile,
    ProfilesConfig,
    guarantee_problems,
)

# ------------------------------------------------------------------ errors


@dataclass(frozen=True)
class ProfileError:
    """One problem in a profiles file, located for the admin."""

    path: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.path}:{self.line}" if self.line else self.path
        return (
            f"{location}: {self.where}: {self.message}"
            if self.where
            else f"{location}: {self.message}"
        )


class ProfilesInvalid(ValueError):
    """A profiles file with one or more problems; ``errors`` lists them all."""

    def __init__(self, errors: Sequence[ProfileError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


# ------------------------------------------------------- YAML with lines


class _Located(dict):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict


class _LocatedList(list):
    line: int = 0
    #: 1-based line of each item, so an error in a scalar item (``- 3`` where a
    #: profile mapping belongs) points at the item, not at the list's parent key
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records 1-based line numbers for every mapping and sequence."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    mapping = _Located()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {mapping.key_lines[key]})",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LocatedList:
    seq = _LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    seq.line = node.start_mark.line + 1
    seq.item_lines = [child.start_mark.line + 1 for child in node.value]
    return seq


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _line_of(data: Any, loc: Sequence[Any]) -> int | None:
    """The line of the value at ``loc``, or of its closest located parent."""
    line = getattr(data, "line", None)
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            line = node.key_lines.get(part, line) if isinstance(node, _Located) else line
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            if isinstance(node, _LocatedList):
                line = node.item_lines[part]
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


def _where(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _field_names(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (for 'unknown key' hints)."""
    model: type[BaseModel] | None = ProfilesConfig
    key_of_dict = False
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        if key_of_dict:
            # a key of a dict[str, Model] field, as `students` in quotas.groups.students:
            # a name the admin chose, not a field (it used to end the lookup, so
            # the hint with the allowed keys went missing)
            key_of_dict = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        key_of_dict = get_origin(annotation) is dict
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = None
        for candidate in candidates:
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nested = inner
        model = nested
    return model


def _explain(error: dict) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        allowed = f"; allowed keys: {_field_names(owner)}" if owner else ""
        return f"unknown key {loc[-1]!r}{allowed}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "bool_type":
        return f"{error['input']!r} is not a boolean; write true or false"
    if kind == "too_short" and tuple(loc) == ("profiles",):
        # pydantic's "List should have at least 1 item after validation" says
        # nothing about what to write
        return "the list is empty; define at least one profile"
    if kind == "string_pattern_mismatch":
        return (
            f"{error['input']!r} is not a valid name: use lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _error_loc(loc: tuple) -> tuple:
    # pydantic adds function-validator names to loc (e.g. 'function-after[...]')
    return tuple(p for p in loc if not (isinstance(p, str) and "[" in p))


def parse_profiles(
    text: str, path: str = "<profiles>", environments: Collection[str] | None = None
) -> ProfilesConfig:
    """Parse and validate a profiles file's text; raise :class:`ProfilesInvalid` with every problem.

    ``environments``, when given, are the environment names a profile may use
    (the folders of ``images/``); any other name is an error.
    """
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(e, "problem", None) or str(e)
        raise ProfilesInvalid(
            [ProfileError(path, line, "", f"not valid YAML: {problem}")]
        ) from None
    if not isinstance(data, dict):
        raise ProfilesInvalid(
            [
                ProfileError(
                    path, getattr(data, "line", 1), "", "expected a mapping with a 'profiles:' list"
                )
            ]
        )

    errors: list[ProfileError] = []
    config = None
    try:
        config = ProfilesConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            if err["type"] == GUARANTEE_ERROR:
                continue  # reported by the whole-file pass below, at the guarantee's line
            loc = _error_loc(err["loc"])
            errors.append(ProfileError(path, _line_of(data, loc), _where(loc), _explain(err)))

    # whole-file rules, checked on the raw data so they are reported even when
    # some profile has other errors
    raw_profiles = data.get("profiles")
    if isinstance(raw_profiles, list):
        seen: dict[str, int] = {}
        defaults = []
        for i, raw in enumerate(raw_profiles):
            if not isinstance(raw, dict):
                continue
            slug = raw.get("slug")
            if isinstance(slug, str):
                if slug in seen:
                    errors.append(
                        ProfileError(
                            path,
                            _line_of(data, ("profiles", i, "slug")),
                            f"profiles[{i}].slug",
                            f"duplicate slug {slug!r} (also profiles[{seen[slug]}]); every slug must be unique",
                        )
                    )
                else:
                    seen[slug] = i
            if raw.get("default") is True:
                defaults.append(i)
            environment = raw.get("environment", Profile.model_fields["environment"].default)
            if environments is not None and isinstance(environment, str):
                if environment not in environments:
                    where = "environment" if "environment" in raw else None
                    errors.append(
                        ProfileError(
                            path,
                            _line_of(data, ("profiles", i, where) if where else ("profiles", i)),
                            f"profiles[{i}].environment",
                            f"environment {environment!r} is not in images/ (known: "
                            f"{', '.join(sorted(environments)) or 'none'}); add images/"
                            f"{environment}/ or name one of these",
                        )
                    )
            for field, message in guarantee_problems(raw):
                errors.append(
                    ProfileError(
                        path,
                        _line_of(data, ("profiles", i, field)),
                        f"profiles[{i}].{field}",
                        message,
                    )
                )
        if raw_profiles and not defaults:
            errors.append(
                ProfileError(
                    path,
                    _line_of(data, ("profiles",)),
                    "profiles",
                    "no profile has 'default: true'; mark exactly one profile as the default",
                )
            )
        for i in defaults[1:]:
            errors.append(
                ProfileError(
                    path,
                    _line_of(data, ("profiles", i, "default")),
                    f"profiles[{i}].default",
                    f"a second default (profiles[{defaults[0]}] is already the default); "
                    "mark exactly one profile as the default",
                )
            )
    errors.sort(key=lambda e: e.line or 0)
    if errors:
        raise ProfilesInvalid(errors)
    assert config is not None
    return config


def _text_line(data: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``data``."""
    return data.count(b"\n", 0, offset) + 1


def load_profiles(
    path: str | os.PathLike, environments: Collection[str] | None = None
) -> ProfilesConfig:
    """Read and validate a profiles file (see :func:`parse_profiles`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ProfilesInvalid(
            [ProfileError(str(path), None, "", f"cannot read the file: {e.strerror}")]
        ) from None
    except UnicodeDecodeError as e:
        # a binary or Latin-1 file: an error to report like any other, not a traceback
        raise ProfilesInvalid(
            [
                ProfileError(
                    str(path),
                    _text_line(e.object, e.start),
                    "",
                    f"not UTF-8 text (byte 0x{e.object[e.start]:02x}); save the file as UTF-8",
                )
            ]
        ) from None
    return parse_profiles(text, str(path), environments)
