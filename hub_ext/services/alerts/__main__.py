"""``python -m hub_ext.services.alerts``: how JupyterHub starts the alerts service."""

from .app import main

if __name__ == "__main__":
    main()
