"""The deployer service from a kernel, a terminal or the server.

- :mod:`~server_ext.clients.deployer.client`: the REST client, one method per call;
- :mod:`~server_ext.clients.deployer.publish`: a model into MLflow's registry, with lineage;
- :mod:`~server_ext.clients.deployer.rollout`: the steps of ``%deploy`` and its operations;
- :mod:`~server_ext.clients.deployer.text`: the table of versions, the endpoint and the code
  that calls it, as users read them.
"""
