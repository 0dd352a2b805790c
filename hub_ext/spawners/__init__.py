"""The hub's spawners: LocalProfileSpawner (this machine) and KubeProfileSpawner.

Both take the user's profile (:mod:`hub_ext.profiles`) and realise it: the local
one with the machine's accounts, cgroups, GPUs and environments
(:mod:`hub_ext.host`), the Kubernetes one as a pod. The spawn form's template is
``templates/``.
"""
