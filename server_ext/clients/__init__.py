"""The only way from a user's server or kernel to Shipyard's services: one client per service.

- :mod:`~server_ext.clients.base`: :class:`~server_ext.clients.base.ServiceClient`, what every
  REST client of a hub service shares (URL rules, the hub token in a header, one translator
  of the service's errors, forwarding for the handlers);
- :mod:`~server_ext.clients.scheduler`: the scheduler's client, the steps of ``%schedule``
  and the text of jobs;
- :mod:`~server_ext.clients.deployer`: the deployer's client, publishing models, the steps
  of ``%deploy`` and the text of deployments;
- :mod:`~server_ext.clients.secrets` and :mod:`~server_ext.clients.audit`: the secrets and
  audit services' clients;
- :mod:`~server_ext.clients.tracking`: MLflow through the tracking service, with the metrics
  spool and sender and the lineage a run records.

The magics (:mod:`server_ext.magics`), the handlers (:mod:`server_ext.handlers`) and the
``shipyard`` commands (:mod:`hub_ext.cli.jobs`, :mod:`hub_ext.cli.models`,
:mod:`hub_ext.cli.secrets`) all go through these, so a service's refusal reads the same
everywhere.
"""
