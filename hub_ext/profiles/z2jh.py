"""Profiles as KubeSpawner and Zero to JupyterHub take them: ``profile_list`` and values.

The export half of profiles (``shipyard profiles export --format z2jh``, and
KubeProfileSpawner's ``profile_list``), apart from the model and its loader
(:mod:`.model`), which need nothing of Kubernetes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hub_ext.profiles.model import GPU_RESOURCE, Profile, ProfilesConfig
from hub_ext.profiles.quantities import (
    to_jupyterhub_bytes,
)

# ------------------------------------------------------------ KubeSpawner


def kubespawner_overrides(profile: Profile, image: str | None = None) -> dict[str, Any]:
    """KubeSpawner trait overrides that realise ``profile`` as a pod.

    Resource values come from the profile, then the admin's
    ``kubernetes.kubespawner_override`` passthrough is merged last, exactly as
    KubeSpawner merges ``kubespawner_override`` (dicts merge, None deletes).
    """
    override: dict[str, Any] = {}
    if image:
        override["image"] = image
    if profile.cpu_guarantee:
        override["cpu_guarantee"] = profile.cpu_guarantee_cores
    if profile.cpu_limit:
        override["cpu_limit"] = profile.cpu_limit_cores
    if profile.mem_guarantee:
        override["mem_guarantee"] = to_jupyterhub_bytes(profile.mem_guarantee_bytes)
    if profile.mem_limit:
        override["mem_limit"] = to_jupyterhub_bytes(profile.mem_limit_bytes)
    if profile.gpu:
        override["extra_resource_guarantees"] = {GPU_RESOURCE: str(profile.gpu)}
        override["extra_resource_limits"] = {GPU_RESOURCE: str(profile.gpu)}
    if profile.kubernetes.node_selector:
        override["node_selector"] = dict(profile.kubernetes.node_selector)
    if profile.kubernetes.tolerations:
        override["tolerations"] = [
            t.model_dump(exclude_none=True) for t in profile.kubernetes.tolerations
        ]
    override["environment"] = {
        "SHIPYARD_PROFILE": profile.slug,
        "SHIPYARD_ENV": profile.environment,
    }
    for key, value in profile.kubernetes.kubespawner_override.items():
        if isinstance(value, dict) and isinstance(override.get(key), dict):
            merged = dict(override[key])
            merged.update(value)
            override[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            override[key] = value
    return override


def kubespawner_profile_list(
    profiles: Iterable[Profile], image_template: str | None = None
) -> list[dict[str, Any]]:
    """KubeSpawner's (and Zero to JupyterHub's ``singleuser.profileList``) form of ``profiles``."""
    result = []
    for profile in profiles:
        image = image_template.format(environment=profile.environment) if image_template else None
        entry: dict[str, Any] = {
            "display_name": profile.display_name,
            "slug": profile.slug,
            "description": profile.description,
            "kubespawner_override": kubespawner_overrides(profile, image),
        }
        if profile.default:
            entry["default"] = True
        result.append(entry)
    return result


def z2jh_values(config: ProfilesConfig, image_template: str | None = None) -> dict[str, Any]:
    """The Zero to JupyterHub values fragment equivalent to ``config``.

    Group restrictions cannot be expressed in ``singleuser.profileList``
    (KubeSpawner has no server-side group check); they are enforced by
    KubeProfileSpawner, which reads the profiles file itself.
    """
    return {
        "singleuser": {"profileList": kubespawner_profile_list(config.profiles, image_template)}
    }
