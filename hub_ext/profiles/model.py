"""Resource profiles: the one source of truth for environments and limits.

An admin declares profiles once in a YAML file (``config/profiles.yaml``). The
same parsed, validated :class:`ProfilesConfig` drives

- the spawn form and the hub-side check of every user's choice (both spawners),
- LocalProfileSpawner's cgroup limits and KubeProfileSpawner's ``profile_list``,
- ``shipyard profiles validate`` / ``export --format z2jh`` / ``usage``,
- later, scheduled jobs and model deployments.

Validation reports *every* problem at once with ``file:line`` and what to fix,
because an admin editing a live hub should not play whack-a-mole. The file is
re-read when it changes (:class:`ProfileStore`); a broken edit is reported in
the hub log and the last good version stays in force, so a typo never locks
users out.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hub_ext.profiles.quantities import (
    QuantityError,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)

log = logging.getLogger(__name__)

SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GPU_RESOURCE = "nvidia.com/gpu"


# ---------------------------------------------------------------- quantities


def _as_text(value: Any) -> Any:
    # YAML reads `cpu_limit: 2` as an int; keep what the admin wrote as text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _check_memory(value: str) -> str:
    try:
        parse_memory(value)
    except QuantityError as e:
        raise ValueError(str(e)) from None
    return value


def _check_cpu(value: str) -> str:
    try:
        parse_cpu(value)
    except QuantityError as e:
        raise ValueError(str(e)) from None
    return value


Memory = Annotated[str, BeforeValidator(_as_text), AfterValidator(_check_memory)]
Cpu = Annotated[str, BeforeValidator(_as_text), AfterValidator(_check_cpu)]


GUARANTEE_ERROR = "guarantee_above_limit"


def _guarantee_problems(raw: dict) -> list[tuple[str, str]]:
    """Guarantees above their limits, as (guarantee field, message) pairs.

    Shared by the model and by the whole-file pass, which reports these even
    when the same profile has other errors.
    """
    problems = []
    for kind, parse in (("cpu", parse_cpu), ("mem", parse_memory)):
        guarantee, limit = raw.get(f"{kind}_guarantee"), raw.get(f"{kind}_limit")
        if guarantee is None or limit is None:
            continue
        try:
            above = parse(guarantee) > parse(limit)
        except (QuantityError, TypeError):
            continue  # reported as a bad quantity
        if above:
            problems.append(
                (
                    f"{kind}_guarantee",
                    f"{kind}_guarantee {guarantee} is above {kind}_limit {limit}; "
                    "lower the guarantee or raise the limit",
                )
            )
    return problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------- models


class Toleration(_Strict):
    """A Kubernetes toleration, in the API's own field names."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class KubernetesExtras(_Strict):
    """What only the Kubernetes spawner uses; ignored on one machine."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    kubespawner_override: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Admin-only passthrough of KubeSpawner trait overrides, merged like "
            "KubeSpawner's own profile_list overrides (dicts merge, None deletes)."
        ),
    )


class Profile(_Strict):
    """One resource profile: an environment plus CPU, memory and GPU."""

    slug: Annotated[str, Field(pattern=SLUG_PATTERN, max_length=63)]
    display_name: Annotated[str, Field(min_length=1)]
    description: str = ""
    # strict: pydantic would read `default: 1` or `default: "true"` as True, but the
    # whole-file pass counts only real booleans, so such a file passed with two
    # defaults (or failed with "no default" although it had one)
    default: StrictBool = False
    environment: Annotated[str, Field(pattern=SLUG_PATTERN)] = "base"
    cpu_guarantee: Cpu | None = None
    cpu_limit: Cpu | None = None
    mem_guarantee: Memory | None = None
    mem_limit: Memory | None = None
    gpu: Annotated[int, Field(ge=0)] = 0
    groups: list[str] = Field(default_factory=list)
    kubernetes: KubernetesExtras = Field(default_factory=KubernetesExtras)

    @model_validator(mode="after")
    def _guarantee_within_limit(self) -> Profile:
        for field, message in _guarantee_problems(self.model_dump()):
            raise PydanticCustomError(
                GUARANTEE_ERROR, "{field}: {message}", {"field": field, "message": message}
            )
        return self

    # numeric views, for the local spawner and quotas
    @property
    def cpu_limit_cores(self) -> float | None:
        return parse_cpu(self.cpu_limit) if self.cpu_limit else None

    @property
    def cpu_guarantee_cores(self) -> float | None:
        return parse_cpu(self.cpu_guarantee) if self.cpu_guarantee else None

    @property
    def mem_limit_bytes(self) -> int | None:
        return parse_memory(self.mem_limit) if self.mem_limit else None

    @property
    def mem_guarantee_bytes(self) -> int | None:
        return parse_memory(self.mem_guarantee) if self.mem_guarantee else None

    def allows(self, groups: Iterable[str]) -> bool:
        """True when a member of ``groups`` may use this profile (no groups: everyone)."""
        return not self.groups or bool(set(self.groups) & set(groups))

    def unavailable_reason(self, gpu_count: int | None) -> str | None:
        """Why this profile can never start on a machine with ``gpu_count`` GPUs, or None.

        ``gpu_count`` None means the spawner does not know the machine (Kubernetes: the
        cluster finds a node, or says why not). The reason is what the spawn form's card
        shows and what a refused spawn says, rather than an error about an environment
        that ``shipyard up`` skipped building because there was no GPU for it.
        """
        if gpu_count is None or self.gpu <= gpu_count:
            return None
        if gpu_count == 0:
            return "no GPU on this machine"
        return f"it needs {self.gpu} GPUs and this machine has {gpu_count}"

    def public_summary(self) -> dict[str, Any]:
        """What a user may see of this profile (never the Kubernetes passthrough)."""
        return {
            "slug": self.slug,
            "display_name": self.display_name,
            "description": self.description,
            "environment": self.environment,
            "cpu_guarantee": self.cpu_guarantee,
            "cpu_limit": self.cpu_limit,
            "mem_guarantee": self.mem_guarantee,
            "mem_limit": self.mem_limit,
            "gpu": self.gpu,
        }

    def resource_lines(self) -> list[str]:
        """Short lines for a spawn-form card: ``CPU 1 (0.5 guaranteed)``."""
        lines = []
        if self.cpu_limit or self.cpu_guarantee:
            text = f"CPU {format_cpu(self.cpu_limit_cores)}" if self.cpu_limit else "CPU unlimited"
            if self.cpu_guarantee:
                text += f" ({format_cpu(self.cpu_guarantee_cores)} guaranteed)"
            lines.append(text)
        if self.mem_limit or self.mem_guarantee:
            text = (
                f"Memory {format_memory(self.mem_limit_bytes)}"
                if self.mem_limit
                else "Memory unlimited"
            )
            if self.mem_guarantee:
                text += f" ({format_memory(self.mem_guarantee_bytes)} guaranteed)"
            lines.append(text)
        lines.append(f"GPU {self.gpu}" if self.gpu else "No GPU")
        lines.append(f"Environment {self.environment}")
        return lines


class Quota(_Strict):
    """The most a user may run at once; a field left out is unlimited."""

    max_servers: Annotated[int, Field(ge=0)] | None = None
    cpu: Cpu | None = None
    memory: Memory | None = None
    gpu: Annotated[int, Field(ge=0)] | None = None


class Quotas(_Strict):
    default: Quota | None = Field(
        default=None, description="Quota of users in no group that has one of its own."
    )
    groups: dict[str, Quota] = Field(default_factory=dict)


class ProfilesConfig(_Strict):
    """The whole profiles file."""

    profiles: Annotated[list[Profile], Field(min_length=1)]
    quotas: Quotas = Field(default_factory=Quotas)

    def get(self, slug: str) -> Profile | None:
        return next((p for p in self.profiles if p.slug == slug), None)

    def allowed_for(self, groups: Iterable[str]) -> list[Profile]:
        groups = set(groups)
        return [p for p in self.profiles if p.allows(groups)]

    def default_for(self, groups: Iterable[str], gpu_count: int | None = None) -> Profile | None:
        """The file's default when the user may use it, else their first allowed profile.

        With ``gpu_count``, a profile that cannot start on such a machine is passed over
        while another can (see :meth:`Profile.unavailable_reason`).
        """
        allowed = self.allowed_for(groups)
        usable = [p for p in allowed if p.unavailable_reason(gpu_count) is None] or allowed
        return next((p for p in usable if p.default), usable[0] if usable else None)

    def resolve(
        self, slug: str | None, groups: Iterable[str], gpu_count: int | None = None
    ) -> Profile:
        """Return the profile a user asked for, or say exactly why they cannot have it.

        ``gpu_count`` is how many GPUs the machine has (None: unknown, not checked).

        Raises
        ------
        ProfileChoiceError
            unknown slug (400), a profile outside the user's groups (403), no
            profile open to the user at all (403), or a profile this machine cannot
            run, e.g. a GPU profile without a GPU (409).
        """
        groups = sorted(set(groups))
        allowed = self.allowed_for(groups)
        if not allowed:
            raise ProfileChoiceError(
                403,
                f"No profile is open to you: your groups ({', '.join(groups) or 'none'}) match "
                "none of the profiles' groups. Ask an admin to add you to a group.",
            )
        usable = [p for p in allowed if p.unavailable_reason(gpu_count) is None]
        choices = (
            f"Choose one of: {', '.join(p.slug for p in usable)}."
            if usable
            else "None of the profiles open to you can start on this machine: ask an admin."
        )
        if not slug:
            profile = self.default_for(groups, gpu_count)
        else:
            profile = self.get(slug)
            if profile is None:
                raise ProfileChoiceError(400, f"Unknown profile {slug!r}. {choices}")
            if not profile.allows(groups):
                raise ProfileChoiceError(
                    403,
                    f"Profile {slug!r} is only for members of the groups "
                    f"{', '.join(profile.groups)}; you are in {', '.join(groups) or 'no group'}. "
                    f"{choices}",
                )
        reason = profile.unavailable_reason(gpu_count)
        if reason:
            raise ProfileChoiceError(
                409, f"Profile {profile.slug!r} cannot start: {reason}. {choices}"
            )
        return profile

    def quota_for(self, groups: Iterable[str]) -> Quota | None:
        """The quota for a user: the most generous of their groups' quotas, per field.

        A field that any applicable quota leaves out is unlimited. Users in no
        group with a quota get ``quotas.default`` (None: unlimited).
        """
        applicable = [self.quotas.groups[g] for g in sorted(set(groups)) if g in self.quotas.groups]
        if not applicable:
            return self.quotas.default
        if len(applicable) == 1:
            return applicable[0]
        merged: dict[str, Any] = {}
        for name, parse in (
            ("max_servers", int),
            ("cpu", parse_cpu),
            ("memory", parse_memory),
            ("gpu", int),
        ):
            values = [getattr(q, name) for q in applicable]
            if any(v is None for v in values):
                merged[name] = None
            else:
                merged[name] = max(values, key=parse)
        return Quota(**merged)


# ------------------------------------------------------------------ errors


class ProfileChoiceError(Exception):
    """A user's profile choice that the hub refuses; carries the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
            for field, message in _guarantee_problems(raw):
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


# -------------------------------------------------------------- live store


class ProfileStore:
    """A profiles file that is re-read when it changes, without a hub restart.

    Every call to :meth:`get` costs one ``stat``. When the file changes and the
    new version is invalid, the error is logged (every problem, with lines)
    and the last valid version stays in force.
    """

    _shared: dict[str, ProfileStore] = {}
    _shared_lock = threading.Lock()

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._config: ProfilesConfig | None = None
        self._stamp: tuple[int, int] | None = None
        self.last_error: ProfilesInvalid | None = None

    @classmethod
    def for_path(cls, path: str | os.PathLike) -> ProfileStore:
        """One store per file per process, so all spawners share one parse."""
        key = str(Path(path).resolve())
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(key)
            return cls._shared[key]

    def get(self) -> ProfilesConfig:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if self._config is not None and stamp == self._stamp:
            return self._config
        try:
            config = load_profiles(self.path)
        except ProfilesInvalid as e:
            if self._config is None:
                raise
            if self.last_error is None or str(e) != str(self.last_error):
                log.error(
                    "Profiles file %s changed but is invalid; keeping the previous version.\n%s",
                    self.path,
                    e,
                )
            self.last_error = e
            self._stamp = stamp
            return self._config
        if self._config is not None:
            log.info("Reloaded profiles from %s (%d profiles)", self.path, len(config.profiles))
        self._config, self._stamp, self.last_error = config, stamp, None
        return config
