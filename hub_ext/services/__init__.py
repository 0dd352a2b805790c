"""Hub-managed services: each a small web app behind JupyterHub's own authentication."""
