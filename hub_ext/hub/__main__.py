"""``python -m hub_ext.hub``: start Shipyard's JupyterHub (:class:`.app.ShipyardHub`)."""

from hub_ext.hub.app import main

main()
