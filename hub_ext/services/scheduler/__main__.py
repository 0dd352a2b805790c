"""``python -m hub_ext.services.scheduler``: how JupyterHub starts the scheduler service."""

from .app import main

if __name__ == "__main__":
    main()
