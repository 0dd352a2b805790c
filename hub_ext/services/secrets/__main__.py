"""``python -m hub_ext.services.secrets``: how JupyterHub starts the secrets service."""

from .app import main

if __name__ == "__main__":
    main()
