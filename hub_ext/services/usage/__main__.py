"""``python -m hub_ext.services.usage``: how JupyterHub starts the usage service."""

from .app import main

if __name__ == "__main__":
    main()
