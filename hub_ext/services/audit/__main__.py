"""``python -m hub_ext.services.audit``: how JupyterHub starts the audit service."""

from .app import main

if __name__ == "__main__":
    main()
