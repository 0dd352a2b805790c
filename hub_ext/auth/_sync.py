"""Audit records for what the directory changes in the hub at a login or a refresh.

With ``manage_groups`` the hub takes a user's groups (and, with admin groups, their
admin status) from the directory at every login and refresh, and creates the user at
their first login. JupyterHub applies these changes itself (``auth_to_user`` and
``User.sync_groups``), not through its REST API, so the hub's request-level audit
records never see them. :func:`record_directory_changes` compares what the directory
says with what the hub holds just before JupyterHub applies it, and records each change
with the action names an admin's API call would get: ``user.create``, ``group.create``,
``group.members_add``, ``group.members_remove`` and ``role.change``. The actor is the
directory (``ldap`` or ``oidc``, kind ``system``): the change is the directory's, made
at the moment that user logged in or was refreshed.
"""

from __future__ import annotations

from jupyterhub import orm

from .audited import audit


def record_directory_changes(source: str, handler, name: str, auth_model: dict, user=None):
    """Record what applying ``auth_model`` to the hub's user ``name`` will change.

    Parameters
    ----------
    source : str
        ``ldap`` or ``oidc``: the actor of the records.
    handler : tornado.web.RequestHandler or None
        The hub's handler of the login or refresh (the client address, the database).
    name : str
        The hub user's name.
    auth_model : dict
        What the authenticator returned: ``groups`` (None or absent: groups unmanaged)
        and ``admin`` (None: unchanged).
    user : jupyterhub.user.User, optional
        The hub's user when known (a refresh); looked up through ``handler`` otherwise.
    """
    if user is None and handler is not None:
        user = handler.find_user(name)
    request = getattr(handler, "request", None)
    common = {
        "actor": source,
        "actor_kind": "system",
        "outcome": "allowed",
        "client": getattr(request, "remote_ip", None),
    }
    if user is None:
        audit(
            "user.create", target=f"user/{name}", owner=name, details={"source": source}, **common
        )
        old_groups, old_admin = set(), False
    else:
        old_groups, old_admin = {g.name for g in user.groups}, bool(user.admin)
    groups = auth_model.get("groups")
    if groups is not None:
        new_groups = set(groups)
        db = getattr(handler, "db", None)
        for group in sorted(new_groups - old_groups):
            if db is not None and orm.Group.find(db, group) is None:
                audit("group.create", target=f"group/{group}", details={"source": source}, **common)
            audit(
                "group.members_add",
                target=f"group/{group}",
                details={"users": [name], "source": source},
                **common,
            )
        for group in sorted(old_groups - new_groups):
            audit(
                "group.members_remove",
                target=f"group/{group}",
                details={"users": [name], "source": source},
                **common,
            )
    admin = auth_model.get("admin")
    if admin is not None and bool(admin) != old_admin:
        audit(
            "role.change",
            target=f"user/{name}",
            owner=name,
            details={"admin": bool(admin), "source": source},
            **common,
        )
