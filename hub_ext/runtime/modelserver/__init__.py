"""Shipyard's model server: one MLflow model behind MLflow's scoring protocol, one process per replica.

::

    python -m hub_ext.runtime.modelserver --model-uri URI --host 127.0.0.1 --port PORT
        [--name OWNER/NAME/VERSION] [--max-body-bytes 10485760] [--timeout 30]
        [--max-batch 64] [--max-batch-wait-ms 2] [--training-summary PATH] [--workers 1]
        [--data-quality on|off] [--data-quality-margin 0]

The deployer starts it as the model's owner, on the profile's environment
(``images/model-server``), so the package imports only the standard library,
starlette, uvicorn, prometheus_client, numpy, pandas and MLflow, and MLflow only
once the server listens. See docs/deploy-contract.md section 1.

One concern per module:

- :mod:`.contract`: what the deployer and a replica agree on (options and their
  environment form, the replica secret, exit statuses); standard library only, so
  the deployer imports it without the server's packages.
- :mod:`.protocol`: MLflow's scoring protocol, from a request's body to model input,
  and the JSON errors.
- :mod:`.batching`: concurrent small requests sharing one ``predict`` call.
- :mod:`.server`: the model, its loading (and kept copy) and the invocations.
- :mod:`.stats`: ``/stats`` and the Prometheus series.
- :mod:`.app`: the routes, as a starlette app, and the replica secret's check.
- :mod:`.cli`: the process (uvicorn, signals, ``--workers``); ``__main__`` runs it.

This module imports none of them, so that importing :mod:`.contract` costs nothing more.
"""
