"""Experiment tracking: MLflow through the hub's tracking service, as the kernel's user.

- :mod:`~server_ext.clients.tracking.client`: ``TrackingClient``, the one client of the
  tracking server (it speaks MLflow's API through MLflow's own client, not
  :class:`~server_ext.clients.base.ServiceClient`, since the service is MLflow);
- :mod:`~server_ext.clients.tracking.spool` and :mod:`~server_ext.clients.tracking.sender`:
  where ``log()`` puts metric values until the server has them, and the background threads
  that send them with the client. They are the client's delivery path, used by the
  tracking magics only, so they live beside the client rather than with the magics;
- :mod:`~server_ext.clients.tracking.lineage`: what a run records about where its cell ran,
  read from the kernel; ``%%track`` and model publishing
  (:mod:`server_ext.clients.deployer.publish`) both record it, so it sits on the client side,
  which the magics depend on, never the reverse.
"""
