"""Code the hub services (scheduler, deployer, secrets) share, so they cannot drift apart.

The services are JupyterHub services built the same way: a tornado REST API
behind the hub's login, an OpenAPI document generated from pydantic models,
and an Alembic-migrated database. What is the same in both lives here; what
differs (routes, models, messages, settings) stays in each service.
"""
