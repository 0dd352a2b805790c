"""Shipyard from a notebook cell: one module per family of magics, as IPython's own.

- :mod:`~server_ext.magics.tracking`: ``%experiment``, ``%%track``, ``%runs``, ``%compare``
  and ``log()``;
- :mod:`~server_ext.magics.jobs`: ``%schedule``, ``%jobs``, ``%run_now``;
- :mod:`~server_ext.magics.pipelines`: ``%pipeline``;
- :mod:`~server_ext.magics.deploy`: ``%deploy``, ``%deployments``;
- :mod:`~server_ext.magics.lineage`: ``%lineage`` (and ``--reproduce``);
- :mod:`~server_ext.magics.secrets`: ``%secret``;
- :mod:`~server_ext.magics.base`: their settings (``c.ShipyardMagics.*``) and the one
  translator of the services' errors into ``UsageError``;
- :mod:`~server_ext.magics.widgets`: what they display.

Each magic parses its arguments, calls a client of :mod:`server_ext.clients` and shows the
result (STYLE rule 22). ``%load_ext server_ext`` (which every Shipyard kernel runs, see
ipython-config/) and ``%load_ext server_ext.magics`` both call
:func:`load_ipython_extension`.
"""

from __future__ import annotations

from .deploy import DeployMagics
from .jobs import JobMagics
from .lineage import LineageMagics
from .pipelines import PipelineMagics
from .secrets import SecretMagics
from .tracking import MetricLogger, TrackingMagics


def load_ipython_extension(ip) -> None:
    """Register the magics, put ``log`` in the namespace, and send what dead kernels left."""
    tracking = TrackingMagics(shell=ip)
    ip.register_magics(tracking)
    ip.register_magics(JobMagics(shell=ip))
    ip.register_magics(PipelineMagics(shell=ip))
    ip.register_magics(DeployMagics(shell=ip, tracking=tracking))
    ip.register_magics(LineageMagics(shell=ip))
    ip.register_magics(SecretMagics(shell=ip))
    if isinstance(ip.user_ns.get("log", tracking.logger), MetricLogger):
        ip.push({"log": tracking.logger}, interactive=False)
    else:
        ip.push({"shipyard_log": tracking.logger}, interactive=False)
        print("Shipyard: `log` is taken in this namespace; use shipyard_log(...) in %%track.")
    adopted = tracking.sender.recover()
    if adopted:
        values = sum(j.total - j.state["sent"] for j in adopted)
        print(f"Shipyard: sending {values} metric values of {len(adopted)} unfinished run(s).")
