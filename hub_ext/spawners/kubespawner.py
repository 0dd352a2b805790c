"""KubeProfileSpawner: Shipyard's resource profiles, realised as Kubernetes pods.

KubeSpawner already turns a ``profile_list`` into a pod, but it applies
whatever ``profile`` a request names and knows nothing of groups (kubespawner
#589, #889). :class:`KubeProfileSpawner` keeps KubeSpawner's own machinery
(``load_user_options``, ``get_pod_manifest``, every pod trait) and adds what
:class:`~hub_ext.spawners.mixin.ProfileSpawnerMixin` gives the local spawner too: the
profiles file, the spawn form, the hub-side check of the choice (400/403 with
the reason), quotas, and the profile in the pod's environment and in the
spawner state. Both Shipyard spawners therefore accept and refuse exactly the
same choices.

Rejected alternative: a static ``profile_list`` in the hub config (what
``shipyard profiles export --format z2jh`` prints) cannot express groups and
goes stale when the file changes. The default here is a callable that reads
the profiles file (one ``stat`` per call), so an edit takes effect at the next
spawn without restarting the hub.
"""

from __future__ import annotations

import copy

from kubespawner import KubeSpawner
from traitlets import TraitError, Unicode, default, validate

from hub_ext.host import telemetry
from hub_ext.host.k8s import (
    DEFAULT_GID,
    DEFAULT_UID,
    PROFILE_LABEL,
    SECURE_CONTEXT,
    USER_LABEL,
)
from hub_ext.host.slugs import user_slug
from hub_ext.profiles.model import Profile
from hub_ext.profiles.z2jh import kubespawner_profile_list
from hub_ext.spawners.mixin import ProfileSpawnerMixin, Usage


class KubeProfileSpawner(ProfileSpawnerMixin, KubeSpawner):
    """One pod per server, shaped by the resource profile the user chose.

    Select it with ``c.JupyterHub.spawner_class = "shipyard-kubernetes"`` and
    point ``c.KubeProfileSpawner.profiles_file`` at the profiles file. Leave
    ``profile_list`` unset: it follows the profiles file, filtered by the
    user's groups. Pod settings that no profile sets (storage, pull secrets,
    security context) are KubeSpawner's usual traits.
    """

    image_template = Unicode(
        "shipyard/{environment}:latest",
        help="""
        Image of each profile's environment; ``{environment}`` is the profile's ``environment``.

        Every folder ``images/<environment>`` of Shipyard builds one image, and
        every profile names its environment; this template maps the name to
        the image its pods run. Pin a tag rather than ``latest`` in production,
        so every node runs the same build. An empty string keeps KubeSpawner's
        ``image`` for every profile; a profile's
        ``kubernetes.kubespawner_override.image`` wins over both.

        Example::

            c.KubeProfileSpawner.image_template = "registry.example.org/shipyard-{environment}:2026.11"

        .. versionadded:: 0.1
        """,
    ).tag(config=True)

    @validate("image_template")
    def _validate_image_template(self, proposal):
        template = proposal.value
        try:
            template.format(environment="base")
        except (KeyError, IndexError, ValueError) as e:
            raise TraitError(
                f"image_template {template!r} is not a valid template: use {{environment}} "
                f"and no other field ({e!r})"
            ) from None
        return template

    @default("profile_list")
    def _default_profile_list(self):
        # a callable: KubeSpawner calls it at every spawn, so file edits apply
        return self.allowed_profile_list

    def allowed_profile_list(self, spawner=None) -> list[dict]:
        """KubeSpawner's ``profile_list``: the profiles open to this user's groups."""
        allowed = self.profiles.allowed_for(self.user_groups)
        return kubespawner_profile_list(allowed, self.image_template or None)

    @validate("profile_list")
    def _warn_configured_profile_list(self, proposal):
        # Zero to JupyterHub sets it from singleuser.profileList: KubeSpawner would then
        # apply that list while the hub checks choices against the profiles file
        if proposal.value != self.allowed_profile_list:
            self.log.warning(
                "profile_list is configured, so KubeSpawner applies it instead of %s; "
                "choices are still checked against that file. Remove profile_list "
                "(singleuser.profileList in Zero to JupyterHub) to use the file alone.",
                self.profiles_file,
            )
        return proposal.value

    # Secure pod defaults, as trait defaults so that `c.KubeProfileSpawner.uid = ...` or
    # `c.KubeProfileSpawner.container_security_context = {...}` replaces them.
    # They are the defaults of the scheduler's Jobs and the deployer's model servers too
    # (hub_ext.host.k8s: SECURE_CONTEXT, DEFAULT_UID, DEFAULT_GID), and satisfy the Pod
    # Security Standards' "restricted" level, so pods are admitted in a namespace that
    # enforces it: https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    # allowPrivilegeEscalation: false comes from KubeSpawner's own
    # `allow_privilege_escalation` (default False) rather than from this dict, so it stays
    # false when an admin replaces the dict, and that trait remains the one switch for it.

    @default("uid")
    def _default_uid(self):
        return DEFAULT_UID

    @default("fs_gid")
    def _default_fs_gid(self):
        return DEFAULT_GID

    @default("container_security_context")
    def _default_container_security_context(self):
        # a fresh copy each time, so no spawner changes another's
        return {
            key: copy.deepcopy(value)
            for key, value in SECURE_CONTEXT.items()
            if key != "allowPrivilegeEscalation"
        }

    # -------------------------------------------------------------- profile

    async def load_user_options(self):
        """Check the user's choice on the hub, then let KubeSpawner apply the profile.

        KubeSpawner calls this from ``start()``. Checking here too means a
        server started without JupyterHub's pre-spawn step is refused in the
        same way: 400 for unknown options or profiles, 403 for a profile
        outside the user's groups. Only ``{"profile": slug}`` passes, so
        resources, image, uid, privileges, volumes, environment and node
        selectors always come from the profile and the admin's config.
        """
        profile = self.resolve_profile()
        self.profile, self.usage = profile, Usage.of(profile)
        # before KubeSpawner's overrides, so an admin's kubespawner_override wins
        self.apply_profile(profile)
        await super().load_user_options()

    def apply_profile(self, profile: Profile) -> None:
        """Resources (as the mixin sets them) and the cost-accounting labels."""
        super().apply_profile(profile)
        self.extra_labels = {
            **self.extra_labels,
            USER_LABEL: user_slug(self.user.name),
            PROFILE_LABEL: profile.slug,
        }

    def get_env(self):
        env = super().get_env()
        # after KubeSpawner's template expansion, which would mangle the JSON's braces
        env.update(self.profile_env())
        # MLflow's usage telemetry off in the pod unless the admin allows it
        env.update(telemetry.environment())
        return env

    # ---------------------------------------------------------------- state

    def get_state(self):
        state = super().get_state()
        state.update(self._profile_state())
        return state

    def load_state(self, state):
        super().load_state(state)
        self._load_profile_state(state)

    def clear_state(self):
        super().clear_state()
        # a stopped server counts against no quota and shows no profile
        self.profile = self.usage = None
