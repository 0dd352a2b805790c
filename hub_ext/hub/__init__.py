"""The hub process: Shipyard's JupyterHub and what runs beside it.

- :mod:`.app`: ``ShipyardHub``, JupyterHub with its services supervised and adopted
  across restarts (``python -m hub_ext.hub`` starts it, :mod:`.__main__`);
- :mod:`.proxy`: the proxy it starts and adopts;
- :mod:`.culler`: the idle culler, run as a hub service;
- :mod:`.embedded`: the data dir, the first admin's credentials and service tokens
  of ``shipyard up``.
"""
