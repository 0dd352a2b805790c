"""The local backend: each replica of a model version is a model server process on this machine.

This is the "one machine" column of ARCHITECTURE.md for deployed models. A
version goes through a short list of named steps, as a scheduled run does in
:mod:`hub_ext.services.scheduler.executors.local`, whose building blocks it
shares through :mod:`hub_ext.host.localproc` (accounts, cgroups, environments; not its
death with the parent, see below). One module per concern:

- :mod:`.backend`: :class:`LocalBackend`, the deployer's interface and its settings
  (``c.LocalBackend.<trait>``), composed of the parts below;
- :mod:`.versions`: the profile's built environment, the owner's system account
  (a model is code and runs only as its owner, SECURITY rule 5), the version's
  private folder with the training summary and the model's copy;
- :mod:`.logs`: the version's log, what its replicas print and the backend's notes;
- :mod:`.replicas`: per replica, a cgroup with the profile's limits (SECURITY
  rule 6) and ``python -m hub_ext.runtime.modelserver`` on 127.0.0.1, as the
  owner, with an environment built from nothing (SECURITY rule 8); its
  supervisor restarts it when it exits or stops answering;
- :mod:`.health`: ``GET /health`` until a replica is ready, then while it serves;
- :mod:`.process`: the replica's process, its output FIFO, its cgroup and GPUs;
- :mod:`.records`: the running versions' records, by which a deployer adopts
  the replicas of one that died;
- :mod:`.state`: what the parts share about a running version and its replicas.

**Replicas outlive a deployer that dies** (a crash, ``kill -9``, the OOM
killer) and are adopted by the next one, so a deployer restart costs the
models no restart and no lost request (:mod:`.records`). A clean stop of the
deployer (SIGTERM, Ctrl-C of the hub) stops every replica. **Each deployer
process on a machine needs its own** ``cgroup_parent`` and ``runtime_dir``: the
recovery cannot tell another live deployer's replicas from a dead one's.

Rejected alternatives: loading models in the deployer's own process (a model
is code: SECURITY rule 5), one process serving several owners' models (same
rule), Unix sockets instead of TCP ports (the model server's contract binds a
host and port). **Replicas listen on 127.0.0.1**: other accounts on this
machine can reach a replica's port without the deployer's authorization, as
they can reach other local services; use the Kubernetes backend, whose
NetworkPolicy admits only the deployer, where local users must not.

:class:`LocalBackend` is this package's one public name: the entry point
``local`` of ``shipyard.deployer_backends`` and ``c.DeployerService.backend_class``
name it here (``hub_ext.services.deployer.local.LocalBackend``), as admins' config
files may.
"""

from .backend import LocalBackend

__all__ = ["LocalBackend"]
