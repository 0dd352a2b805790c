"""Code the scheduler and deployer services share, so the two cannot drift apart.

Both services are JupyterHub services built the same way: a tornado REST API
behind the hub's login, an OpenAPI document generated from pydantic models,
and an Alembic-migrated database. What is the same in both lives here; what
differs (routes, models, messages, settings) stays in each service.
"""
