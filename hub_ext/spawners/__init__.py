"""The hub's spawners: LocalProfileSpawner and ContainerProfileSpawner (this machine), KubeProfileSpawner.

All take the user's profile (:mod:`hub_ext.profiles`), chosen, checked and
counted against quotas by what they share (:mod:`.mixin`), and realise it: the
local one (:mod:`.spawner`) with the machine's accounts, cgroups, GPUs and
environments, started by :meth:`hub_ext.host.local.LocalHost.launch`, the
container one (:mod:`.containers`, ``c.LocalHost.placement = "container"``) as a
podman container of the profile's image, the Kubernetes one (:mod:`.kubespawner`)
as a pod. The spawn form's template is
``templates/``.
"""
