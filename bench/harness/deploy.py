"""``%deploy`` as the benchmarks time it: a model published as the magic does, to first 200.

:mod:`bench.serving` times the whole ``%deploy`` of one hub (in an IPython shell with the
server extension loaded); :mod:`bench.containers` times a deployment on two hubs side by
side, one per placement. Both share what is here: the model (:func:`train_model`, a
scikit-learn ``LogisticRegression`` on 4 float features), the one-row request
(:data:`ONE_ROW`), the wait for the hub's tracking service and deployer
(:func:`services_up`) and the poll for the endpoint's first ``200`` through the hub's
proxy (:func:`first_200`).

:class:`DeployUser` makes the magic's calls without the shell: it logs and registers the
model in the hub's tracking service with
:class:`~server_ext.clients.deployer.publish.ModelPublisher` (``<user>-<name>``, the
magic's registered name and lineage), and creates and deletes deployments of it with
:class:`~server_ext.clients.deployer.client.DeployerClient`, the client of ``%deploy`` and
``shipyard models``. Publishing is done once per hub and not timed by
:meth:`DeployUser.timed_deploy`: it is the same MLflow work for every placement, so it would
only dilute a comparison of where the replica runs.

Rejected alternative: the magic itself in an IPython shell per hub (what
:mod:`bench.serving` does for one hub). The magic reads its hub from the process's
environment and MLflow's tracking URI is global, so two hubs in one shell would mean
swapping both between every call, and the timing would include the publishing above.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import requests

from server_ext.clients.deployer.client import DeployerClient, registered_name
from server_ext.clients.deployer.publish import ModelPublisher, signature_json
from server_ext.clients.tracking.client import TrackingClient
from tests.hubtools import HubProcess

COLUMNS = ["a", "b", "c", "d"]
ONE_ROW = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[0.1, -0.2, 0.3, 0.4]]}})
#: A profile on the ``model-server`` environment, as serving profiles are.
SERVING_PROFILE = """
  - slug: serving
    display_name: Serving
    environment: model-server
    cpu_limit: 1
    mem_limit: 1Gi
"""
#: Seconds between two requests while an endpoint gives no 200 yet.
POLL_S = 0.02
#: Seconds any one call of the deployer's client may take (a deployment starts replicas).
CALL_TIMEOUT = 120.0


def train_model() -> tuple[Any, Any]:
    """A ``LogisticRegression`` fitted on 2,000 random rows of :data:`COLUMNS`, and the rows."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({c: rng.normal(size=2000) for c in COLUMNS})
    y = (X.a + X.b - X.c > 0).astype(int)
    return LogisticRegression().fit(X, y), X


def services_up(hub_url: str, token: str) -> bool:
    """Whether the hub's tracking service and deployer both answer 200 through its proxy."""
    try:
        t = requests.get(
            f"{hub_url}/services/tracking/version",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        d = requests.get(f"{hub_url}/services/deployer/health", timeout=5)
    except requests.RequestException:
        return False
    return t.status_code == d.status_code == 200


def first_200(url: str, token: str, t0: float, timeout: float = 300) -> float:
    """Seconds from ``t0`` (``time.perf_counter``) to the first 200 of :data:`ONE_ROW` at ``url``.

    Polled every :data:`POLL_S`; a refused connection and any other status (the proxy's 503
    while the route is missing, the deployer's while no replica is ready) are not yet.
    """
    session = requests.Session()
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    while True:
        with contextlib.suppress(requests.RequestException):
            if session.post(url, data=ONE_ROW, headers=headers, timeout=30).status_code == 200:
                return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{url} gave no 200 in {timeout:.0f} s")
        time.sleep(POLL_S)


@contextlib.contextmanager
def tracking_of(tracking_url: str, token: str) -> Iterator[None]:
    """MLflow pointed at one hub's tracking service with the user's token, then restored.

    MLflow's tracking URI is process-wide and it reads ``MLFLOW_TRACKING_TOKEN`` from the
    environment at each request, as in a user's kernel.
    """
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")}
    previous = mlflow.get_tracking_uri()
    os.environ.update({"MLFLOW_TRACKING_URI": tracking_url, "MLFLOW_TRACKING_TOKEN": token})
    mlflow.set_tracking_uri(tracking_url)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class DeployUser:
    """One hub user's model, published once, and deployments of it timed to first 200.

    Parameters
    ----------
    hub : HubProcess
        A hub started with the tracking service and the deployer.
    user, token : str
        The hub user and its API token.
    """

    def __init__(self, hub: HubProcess, user: str, token: str):
        self.user = user
        self.token = token
        self.hub_url = hub.url
        self.deployer_url = f"{hub.url}/services/deployer"
        self.client = DeployerClient(self.deployer_url, token, CALL_TIMEOUT)
        #: what :meth:`publish` registered: the model's URI, signature and lineage
        self.body: dict = {}

    def invocations_url(self, name: str) -> str:
        """The endpoint of deployment ``name`` through the hub's proxy."""
        return f"{self.deployer_url}/models/{self.user}/{name}/invocations"

    def publish(self, name: str) -> str:
        """Log and register :func:`train_model`'s model as ``%deploy model --name NAME`` does.

        Returns the registered version's URI (``models:/<user>-<name>/<version>``).
        """
        import mlflow

        model, X = train_model()
        # MLflow prints the run's and experiment's links on stdout, the bench's report
        with (
            tracking_of(f"{self.hub_url}/services/tracking", self.token),
            contextlib.redirect_stdout(sys.stderr),
        ):
            publisher = ModelPublisher(TrackingClient(mlflow.get_tracking_uri()), self.user)
            signature = publisher.example_signature(model, "sklearn", X)
            run_id, uri = publisher.log(
                model, "sklearn", f"{self.user}/Default", f"deploy-{name}", None, signature, X
            )
            registered = registered_name(self.user, name)
            lineage = publisher.kernel_lineage(run_id)
            version = publisher.register(uri, registered, lineage)
        model_uri = f"models:/{registered}/{version}"
        self.body = {
            "model_uri": model_uri,
            "signature": signature_json(signature),
            "lineage": {**lineage, "registered_model": registered, "model_version": version},
        }
        return model_uri

    def timed_deploy(self, name: str, profile: str) -> float:
        """Seconds from ``POST api/deployments`` of ``name`` to its endpoint's first 200."""
        if not self.body:
            raise RuntimeError("publish() the model before deploying it")
        t0 = time.perf_counter()
        self.client.create_deployment({"name": name, "profile": profile, **self.body})
        return first_200(self.invocations_url(name), self.token, t0)

    def delete(self, name: str) -> None:
        """Delete deployment ``name``: its replicas stopped, the name free again."""
        self.client.delete(name)
