"""Resource profiles: the one source of truth for environments and limits.

An admin declares profiles once in a YAML file (``config/profiles.yaml``). The
same parsed, validated :class:`ProfilesConfig` drives

- the spawn form and the hub-side check of every user's choice (both spawners),
- LocalProfileSpawner's cgroup limits and KubeProfileSpawner's ``profile_list``,
- ``shipyard profiles validate`` / ``export --format z2jh`` / ``usage``,
- later, scheduled jobs and model deployments.

Validation reports *every* problem at once with ``file:line`` and what to fix,
because an admin editing a live hub should not play whack-a-mole. The file is
re-read when it changes (:class:`~.store.ProfileStore`); a broken edit is reported in
the hub log and the last good version stays in force, so a typo never locks
users out.

This module holds the typed profiles and their rules; :mod:`.loader` reads a file
into them with ``file:line`` errors, :mod:`.store` keeps the live copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
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


def guarantee_problems(raw: dict) -> list[tuple[str, str]]:
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
        for field, message in guarantee_problems(self.model_dump()):
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
