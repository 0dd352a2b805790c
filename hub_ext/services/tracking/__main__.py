"""``python -m hub_ext.services.tracking``: how JupyterHub starts the tracking service."""

from .app import main

if __name__ == "__main__":
    main()
