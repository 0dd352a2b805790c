"""Series the hub adds to JupyterHub's own ``/hub/metrics``: the data directory's disk.

JupyterHub exports its series from the process's default registry; these join them, so
Prometheus reads them with the same ``read:metrics`` token. The alert rule
``ShipyardDataDirFilling`` (config/prometheus/rules/shipyard.yml) watches them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class DataDirDisk(Collector):
    """Free and total bytes of the filesystem that holds the data directory, at each scrape."""

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        avail, size = self._families()
        try:
            st = os.statvfs(self.path)
        except OSError:  # the folder is gone: no sample, and the rule sees no data
            return
        avail.add_metric([self.path], st.f_bavail * st.f_frsize)
        size.add_metric([self.path], st.f_blocks * st.f_frsize)
        yield avail
        yield size

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "shipyard_data_dir_filesystem_avail_bytes",
                "Bytes free for the hub's account on the filesystem of the data directory.",
                labels=["path"],
            ),
            GaugeMetricFamily(
                "shipyard_data_dir_filesystem_size_bytes",
                "Size in bytes of the filesystem of the data directory.",
                labels=["path"],
            ),
        )


_registered: dict[str, DataDirDisk] = {}


def register_data_dir(path: str) -> DataDirDisk:
    """Export :class:`DataDirDisk` of ``path`` in the default registry (once per path)."""
    if path not in _registered:
        _registered[path] = DataDirDisk(path)
        REGISTRY.register(_registered[path])
    return _registered[path]
