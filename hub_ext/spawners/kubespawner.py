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

Where the pods go and as whom they run is :class:`~hub_ext.host.k8s.KubePlacement`,
the same configurable that places the scheduler's Jobs and the deployer's model
servers, so one ``c.KubePlacement.image_template`` configures the images of
servers, runs and models. The placement gives *defaults* to KubeSpawner's own
traits (``namespace``, ``uid``, ``gid``, ``fs_gid``) rather than replacing them:
every KubeSpawner setting an admin knows (``c.KubeProfileSpawner.uid``,
``enable_user_namespaces``, the Zero to JupyterHub values that set them) keeps
working and wins. Rejected alternative: settings of the placement declared again
here, with "keep these equal" in their help, as ``image_template`` was until 0.16
(the old name still works for one release, with a warning).
"""

from __future__ import annotations

import copy

from kubespawner import KubeSpawner
from traitlets import Instance, Unicode, default, observe, validate

from hub_ext.host import telemetry
from hub_ext.host.deprecation import MOVED_IN, warn_moved
from hub_ext.host.k8s import (
    PROFILE_LABEL,
    SECURE_CONTEXT,
    USER_LABEL,
    KubePlacement,
    shared_by,
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
    user's groups. The image of each profile, the namespace and the uid/gid
    come from ``c.KubePlacement`` (shared with the scheduler's Jobs and the
    deployer's model servers); pod settings that no profile sets (storage,
    pull secrets, security context, service account) are KubeSpawner's usual
    traits, which also win over the placement's defaults.
    """

    placement = Instance(
        KubePlacement,
        help="""
        Where the servers' pods go and as whom they run: a KubePlacement of this spawner's config.

        ``c.KubePlacement`` (shared with the services) or
        ``c.KubeProfileSpawner.KubePlacement`` (the servers alone).
        """,
    )

    @default("placement")
    def _default_placement(self):
        return KubePlacement(parent=self)

    image_template = Unicode(
        None,
        allow_none=True,
        help=f"""
        Deprecated in {MOVED_IN}: use ``c.KubePlacement.image_template``.

        ``c.KubePlacement.image_template`` gives the image of each profile's
        environment to the users' servers, the scheduler's Jobs and the
        deployer's model servers alike. This name is still honoured for one
        release, for the servers alone, with a warning, unless
        ``c.KubePlacement.image_template`` is set too (then it is ignored).

        Example (the old form)::

            c.KubeProfileSpawner.image_template = "registry.example.org/sy-{{environment}}:2026.11"

        .. versionadded:: 0.1
        .. deprecated:: {MOVED_IN}
        """,
    ).tag(config=True)

    @observe("image_template")
    def _deprecated_image_template(self, change):
        if change.new is None:
            return
        old = f"{type(self).__name__}.image_template"
        warn_moved(self.log, old, f"KubePlacement.image_template, {shared_by('image_template')}")
        if self._placement_configures("image_template"):
            self.log.warning(
                "Ignoring the deprecated %s = %r: KubePlacement.image_template is set",
                old,
                change.new,
            )
            return
        self.placement.image_template = change.new  # checked there: a bad template is refused

    def _placement_configures(self, name: str) -> bool:
        """Whether the config sets the placement's ``name`` (shared, or for this spawner)."""
        config = self.config
        sections = [config, *(config[c.__name__] for c in type(self).mro() if c.__name__ in config)]
        return any(
            "KubePlacement" in section and name in section["KubePlacement"] for section in sections
        )

    @default("profile_list")
    def _default_profile_list(self):
        # a callable: KubeSpawner calls it at every spawn, so file edits apply
        return self.allowed_profile_list

    def allowed_profile_list(self, spawner=None) -> list[dict]:
        """KubeSpawner's ``profile_list``: the profiles open to this user's groups."""
        allowed = self.profiles.allowed_for(self.user_groups)
        return kubespawner_profile_list(allowed, self.placement.image_template or None)

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

    # Placement and secure pod defaults, as trait defaults so that
    # `c.KubeProfileSpawner.uid = ...` or `c.KubeProfileSpawner.container_security_context = {...}`
    # replaces them. They come from the placement that places the scheduler's Jobs and the
    # deployer's model servers too (hub_ext.host.k8s: KubePlacement, SECURE_CONTEXT), and
    # satisfy the Pod Security Standards' "restricted" level, so pods are admitted in a
    # namespace that enforces it:
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    # allowPrivilegeEscalation: false comes from KubeSpawner's own
    # `allow_privilege_escalation` (default False) rather than from this dict, so it stays
    # false when an admin replaces the dict, and that trait remains the one switch for it.
    # service_account stays KubeSpawner's: see KubePlacement's docstring.

    @default("namespace")
    def _default_namespace(self):
        return self.placement.namespace

    @default("uid")
    def _default_uid(self):
        return self.placement.uid

    @default("gid")
    def _default_gid(self):
        return self.placement.gid

    @default("fs_gid")
    def _default_fs_gid(self):
        return self.placement.gid

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
