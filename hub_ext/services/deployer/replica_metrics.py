"""The replicas' own Prometheus series, passed on with the labels that say whose they are.

A replica (:mod:`hub_ext.runtime.modelserver.stats`) exports ``shipyard_model_*``
series about itself, but it does not know its deployment, and on one machine it answers
only requests carrying its secret (:meth:`.backend.Backend.request_headers`), which
Prometheus must not hold: with it, anyone could call the model past the deployer's
checks. So the deployer scrapes each ready replica's ``/metrics`` itself when
Prometheus scrapes ``GET metrics/replicas``, and answers the union, every sample
labelled ``user`` (the owner), ``deployment``, ``version`` and ``replica`` (its index
among the version's endpoints), the labels every Shipyard series uses. It is the
federation form Prometheus documents for targets behind a gateway; on Kubernetes the
same endpoint serves, so no pod needs to be reachable from Prometheus.

A replica runs the user's code, so what it answers is not trusted: only its
``shipyard_model_*`` families are passed on, the labels above replace any of the same
name it sent, and a replica that does not answer within :data:`SCRAPE_TIMEOUT`, answers
more than :data:`MAX_BYTES` or answers text that does not parse is left out of that
scrape (``shipyard_deployer_replica_scrape_errors_total`` counts it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from tornado.httpclient import AsyncHTTPClient

log = logging.getLogger(__name__)

#: Seconds one replica's ``/metrics`` may take.
SCRAPE_TIMEOUT = 3.0
#: Largest ``/metrics`` answer read from one replica, in bytes.
MAX_BYTES = 4 * 1024**2
#: The families a replica may pass on (:mod:`hub_ext.runtime.modelserver.stats`).
PREFIX = "shipyard_model_"

SCRAPE_ERRORS = Counter(
    "shipyard_deployer_replica_scrape_errors",
    "Replicas that did not answer the deployer's scrape of their /metrics.",
    ["user", "deployment", "version"],
)


class _Families(Collector):
    """A fixed list of metric families, for :func:`prometheus_client.generate_latest`."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def parse(text: str) -> list[Metric]:
    """The metric families of an exposition text; ValueError if it does not parse."""
    return list(text_string_to_metric_families(text))


def relabel(
    scraped: Iterable[tuple[Mapping[str, str], Iterable[Metric]]],
) -> list[Metric]:
    """Merge the families of several replicas, each sample given its replica's labels.

    ``scraped`` holds (labels to set, families from :func:`parse`) per replica; only
    :data:`PREFIX` families are kept. Families of the same name are merged into one (the
    exposition format allows each name once).
    """
    merged: dict[str, Metric] = {}
    for extra, families in scraped:
        for family in families:
            if not family.name.startswith(PREFIX):
                continue
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
                into.unit = family.unit
            for sample in family.samples:
                labels = {**sample.labels, **extra}
                into.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                )
    return list(merged.values())


_clients: list[AsyncHTTPClient] = []


def _client() -> AsyncHTTPClient:
    """The client of the scrapes: its own, for its bound on the answer's size."""
    if not _clients:
        _clients.append(AsyncHTTPClient(force_instance=True, max_body_size=MAX_BYTES))
    return _clients[0]


async def scrape(routes: Iterable[Any], backend: Any) -> bytes:
    """``GET metrics/replicas``: every ready replica's series, relabelled (module docstring).

    ``routes`` are the router's routes (``owner``, ``name``, ``keys``: version to key);
    ``backend`` gives each key's endpoints and the headers its replicas ask for.
    """
    client = _client()
    targets: list[tuple[dict[str, str], str, dict[str, str]]] = []
    for route in routes:
        for version, key in route.keys.items():
            headers = dict(backend.request_headers(key))
            for index, endpoint in enumerate(backend.endpoints(key)):
                labels = {
                    "user": route.owner,
                    "deployment": route.name,
                    "version": str(version),
                    "replica": str(index),
                }
                targets.append((labels, endpoint.rstrip("/") + "/metrics", headers))

    async def one(labels: dict[str, str], url: str, headers: dict[str, str]):
        try:
            response = await client.fetch(url, headers=headers, request_timeout=SCRAPE_TIMEOUT)
            return labels, parse(response.body.decode())
        except Exception as e:  # going away, or not answering metrics: left out this time
            log.info("No metrics from %s: %s", url, e)
            SCRAPE_ERRORS.labels(labels["user"], labels["deployment"], labels["version"]).inc()
            return None

    answers = await asyncio.gather(*(one(*target) for target in targets))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(relabel(a for a in answers if a is not None)))
    return generate_latest(registry)
