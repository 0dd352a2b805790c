"""``python -m hub_ext.services.deployer``: run the deployer service."""

from .app import main

if __name__ == "__main__":
    main()
