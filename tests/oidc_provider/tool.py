"""Administer and run the test OpenID Connect provider: ``python -m tests.oidc_provider.tool``.

``setup SPEC.json``
    Create the database (Django's migrations), an RSA signing key, the hub's client
    (confidential, code flow, consent asked once and then remembered) and the users with
    their passwords and groups, from a JSON spec::

        {"client": {"id": ..., "secret": ..., "redirect_uris": [...]},
         "users": {"alice": {"password": ..., "groups": ["staff"]}}}
``groups USER [GROUP ...]``
    Make USER a member of exactly these groups, as an administrator of the directory
    would (created when missing).
``serve PORT``
    Serve the provider on 127.0.0.1:PORT (Django's threaded server, no reloader).

The environment (``OIDC_TEST_DB``, ``OIDC_TEST_URL``) says which provider; see
``settings.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
    import django

    django.setup()


def setup(spec_path: str) -> None:
    from django.core.management import call_command

    _django()
    from django.contrib.auth.models import Group, User
    from oidc_provider.models import Client, ResponseType, RSAKey

    spec = json.loads(Path(spec_path).read_text())
    call_command("migrate", verbosity=0, interactive=False)
    if not RSAKey.objects.exists():
        call_command("creatersakey", verbosity=0)
    client = spec["client"]
    c, _ = Client.objects.update_or_create(
        client_id=client["id"],
        defaults={
            "name": "Shipyard",
            "client_type": "confidential",
            "client_secret": client["secret"],
            "require_consent": True,
            "reuse_consent": True,
        },
    )
    c.redirect_uris = client["redirect_uris"]
    c.save()
    c.response_types.set([ResponseType.objects.get(value="code")])
    for name, user in spec["users"].items():
        u, _ = User.objects.get_or_create(username=name, defaults={"email": f"{name}@idp.test"})
        u.set_password(user["password"])
        u.save()
        u.groups.set([Group.objects.get_or_create(name=g)[0] for g in user.get("groups", [])])


def set_groups(username: str, groups: list[str]) -> None:
    _django()
    from django.contrib.auth.models import Group, User

    user = User.objects.get(username=username)
    user.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])


def serve(port: str) -> None:
    from django.core.management import execute_from_command_line

    _django()
    execute_from_command_line(["tool", "runserver", "--noreload", f"127.0.0.1:{port}"])


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "setup":
        setup(*args)
    elif command == "groups":
        set_groups(args[0], args[1:])
    elif command == "serve":
        serve(*args)
    else:
        sys.exit(f"unknown command {command!r}: use setup, groups or serve")
