"""The deployer's client: one method per REST call of the deployer service.

:class:`DeployerClient` is the one client of the deployer (hub service ``deployer`` at
``<hub>/services/deployer/``, contract section 2, :mod:`hub_ext.services.deployer`). It is
the scheduler's client in shape (:mod:`server_ext.clients.scheduler.client`; both extend
:class:`~server_ext.clients.base.ServiceClient`, which holds what they share): the same
order for the URL (``$SHIPYARD_DEPLOYER_URL``, else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
``/services/deployer``), the same token (``$JUPYTERHUB_API_TOKEN``, the server's own, which
the hub scopes to ``access:services!service=deployer`` and ``custom:models:invoke``), only
ever in the ``Authorization`` header, and one translator (:meth:`DeployerClient._refusal`)
that turns every answer that is not a success into a :class:`DeployerError` whose ``str()``
is the service's own ``message``. :meth:`DeployerClient.forward` serves the server
extension's handlers (:mod:`server_ext.handlers.deployer`).

The rest of the deployer's side lives beside this module, one concern each, all used by
``%deploy`` and ``%deployments`` (:mod:`server_ext.magics.deploy`, which only parse
arguments and show the result, STYLE rule 22) and by ``shipyard models``:

* :mod:`~server_ext.clients.deployer.publish`: putting a model into MLflow's registry, with
  its lineage;
* :mod:`~server_ext.clients.deployer.rollout`: the steps of ``%deploy`` (publish, create
  the version, follow it to ready) and of its one-call operations;
* :mod:`~server_ext.clients.deployer.text`: what users see: the table of versions, the
  endpoint and the code that calls it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..base import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ..base import FORWARDED_HEADERS as FORWARDED_HEADERS
from ..base import Forwarded as Forwarded
from ..base import ServiceClient, ServiceError

#: The prefix the deployer serves under, behind the hub's proxy and on its own port alike.
SERVICE_PATH = "/services/deployer"
#: A deployment's name (the service's ``DeploymentName``): a slug without ``--`` or a final ``-``.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
#: An MLflow run id.
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: ``models:/NAME/VERSION`` in MLflow's registry.
REGISTRY_URI = re.compile(r"^models:/([^/\s]+)/([1-9][0-9]*)$")
#: A version in one of these states has stopped changing.
SETTLED = ("ready", "failed", "stopped")


class DeployerError(ServiceError):
    """A refusal or failure of the deployer the user can act on; ``str()`` is the message.

    As :class:`~server_ext.clients.base.ServiceError`: ``message``, the HTTP ``status``
    (None when the deployer was not reached) and the service's per-field ``errors``.
    """


# ------------------------------------------------------------------- names and URLs


def check_name(name: str) -> str:
    """``name`` if it is a deployment name (the service's rule, checked before any work)."""
    if not NAME.fullmatch(name) or "--" in name or name.endswith("-"):
        raise DeployerError(
            f"{name!r} is not a deployment name: use 1 to 40 lowercase letters, digits and "
            "single dashes, starting with a letter or digit and not ending with a dash, e.g. "
            "--name churn-model."
        )
    return name


def registered_name(user: str, name: str) -> str:
    """The registry name of ``user``'s deployment ``name``: ``<user>-<name>``."""
    return f"{user}-{name}"


def hub_user(environ: dict[str, str] | None = None) -> str:
    """The hub user this kernel belongs to (``$JUPYTERHUB_USER``)."""
    user = (os.environ if environ is None else environ).get("JUPYTERHUB_USER")
    if not user:
        raise DeployerError(
            "Cannot tell which hub user you are: JUPYTERHUB_USER is not set. %deploy works in "
            "a server started from the hub."
        )
    return user


def normalise_url(url: str) -> str:
    """``url`` without a trailing slash, with the service prefix when it has no path.

    Raises
    ------
    DeployerError
        For a URL that is not http(s), or that carries a credential: tokens go in a header.
    """
    return DeployerClient.normalise_url(url)


def deployer_url(environ: dict[str, str] | None = None) -> str:
    """Where this server reaches the deployer: ``$SHIPYARD_DEPLOYER_URL``, else the hub's."""
    return DeployerClient.service_url(environ)


def path_segment(value: str) -> str:
    """A name as one quoted path segment: never a way into another route."""
    return DeployerClient.path_segment(value)


def _owner(owner: str | None) -> dict[str, str] | None:
    """``?owner=``: whose deployment an admin means (the caller's own without it)."""
    return {"owner": owner} if owner else None


# ---------------------------------------------------------------- the REST client


class DeployerClient(ServiceClient):
    """The deployer's REST API, one method per call, each returning the service's JSON.

    Parameters as :class:`~server_ext.clients.base.ServiceClient`'s, ``url`` being e.g.
    ``https://hub.example.org/services/deployer``.

    Examples
    --------
    >>> client = DeployerClient.from_environment()  # doctest: +SKIP
    >>> [d["name"] for d in client.list_deployments()]  # doctest: +SKIP
    ['churn']
    """

    service = "deployer"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_DEPLOYER_URL"
    error = DeployerError
    token_advice = "in JUPYTERHUB_API_TOKEN"
    refused_token_advice = "Restart your server from the hub to get a fresh one."
    segment_noun = "a deployment name"

    def public_url(self, path: str) -> str:
        """A path the service answers with (``Deployment.url``) as a full URL on its origin."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    # ---------------------------------------------------------- deployments

    def list_deployments(self, owner: str | None = None) -> list[dict]:
        """``GET api/deployments``: the user's deployments (an admin's ``owner``'s)."""
        return self._call("GET", "api/deployments", params=_owner(owner))["deployments"]

    def get_deployment(self, name: str, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}`` (an admin's ``owner``'s)."""
        return self._call("GET", f"api/deployments/{path_segment(name)}", params=_owner(owner))

    def find_deployment(self, name: str) -> dict | None:
        """The deployment ``name`` of the user, or None when there is none."""
        try:
            return self.get_deployment(name)
        except DeployerError as exc:
            if exc.status == 404 and not exc.message.startswith("Nothing answers at"):
                return None
            raise

    def create_deployment(self, body: dict) -> dict:
        """``POST api/deployments``: a new deployment, its version 1 ``starting``."""
        return self._call("POST", "api/deployments", json=body)

    def create_version(self, name: str, body: dict) -> dict:
        """``POST api/deployments/{name}/versions``: a new version, ``starting``."""
        return self._call("POST", f"api/deployments/{path_segment(name)}/versions", json=body)

    def get_version(self, name: str, version: int, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}/versions/{v}`` (an admin's ``owner``'s)."""
        return self._call(
            "GET",
            f"api/deployments/{path_segment(name)}/versions/{int(version)}",
            params=_owner(owner),
        )

    def lineage(self, name: str, version: int, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}/versions/{v}/lineage``: where the version came from."""
        return self._call(
            "GET",
            f"api/deployments/{path_segment(name)}/versions/{int(version)}/lineage",
            params=_owner(owner),
        )

    def scale(self, name: str, replicas: int) -> dict:
        """``PATCH api/deployments/{name}``: every running version gets ``replicas``."""
        return self._call(
            "PATCH", f"api/deployments/{path_segment(name)}", json={"replicas": replicas}
        )

    def delete(self, name: str) -> None:
        """``DELETE api/deployments/{name}``: every version stopped, the name free again."""
        self._call("DELETE", f"api/deployments/{path_segment(name)}")

    def set_traffic(self, name: str, split: dict[int, int]) -> dict:
        """``PUT api/deployments/{name}/traffic``: the whole split, summing to 100."""
        body = {"split": {str(v): p for v, p in split.items()}}
        return self._call("PUT", f"api/deployments/{path_segment(name)}/traffic", json=body)

    def promote(self, name: str, version: int) -> dict:
        """``POST api/deployments/{name}/promote``: all traffic to ``version``."""
        return self._call(
            "POST", f"api/deployments/{path_segment(name)}/promote", json={"version": version}
        )

    def rollback(self, name: str, version: int | None = None, owner: str | None = None) -> dict:
        """``POST api/deployments/{name}/rollback``: all traffic back (default: the previous)."""
        body = {"version": version} if version is not None else {}
        return self._call(
            "POST",
            f"api/deployments/{path_segment(name)}/rollback",
            json=body,
            params=_owner(owner),
        )

    def metrics(self, name: str, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}/metrics``: ``{"versions": {"1": VersionMetrics}}``."""
        return self._call(
            "GET", f"api/deployments/{path_segment(name)}/metrics", params=_owner(owner)
        )

    def follow_version(
        self,
        name: str,
        version: int,
        interval: float = 1.0,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict]:
        """The version each time its state changes, until it is ready, failed or stopped.

        Raises
        ------
        DeployerError
            When ``timeout`` seconds pass first; the version goes on starting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            current = self.get_version(name, version)
            if current["state"] != last:
                last = current["state"]
                yield current
            if current["state"] in SETTLED:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise DeployerError(
                    f"Version {version} of {name!r} is still {current['state']} after "
                    f"{timeout:.0f} s; it goes on starting: %deployments shows how it ends."
                )
            sleep(interval)
