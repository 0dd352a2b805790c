"""Private homes: what one user saves, another user's kernel cannot read (issue 12 point 7).

Real servers for two users on a real hub; the second user's real kernel tries to
list and read the first user's home and the notebook she saved through JupyterLab's
contents API. Homes made before homes were private are repaired at the next spawn.
"""

from __future__ import annotations

import json
import os
import pwd
import stat

import requests

from hub_ext.host.slugs import account_name

from .conftest import needs_root
from .hubtools import run_in_kernel, stdout_of

pytestmark = [needs_root]

PROBE = """
import json, os
facts = {{}}
for what, path in (("list", {home!r}), ("read", {notebook!r}), ("read_file", {file!r})):
    try:
        if what == "list":
            os.listdir(path)
        else:
            open(path).read()
        facts[what] = "allowed"
    except PermissionError:
        facts[what] = "denied"
print(json.dumps(facts))
"""


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_another_users_kernel_cannot_read_a_home_or_what_was_saved_in_it(hub):
    alice_token = hub.create_user("pria")
    bob_token = hub.create_user("prib")
    # a home left 0755 by an earlier version (or a host's HOME_MODE) is repaired at spawn
    hub.start_server("pria")
    alice = pwd.getpwnam(account_name("pria", hub.account_prefix))
    hub.stop_server("pria")
    os.chmod(alice.pw_dir, 0o755)
    hub.start_server("pria")
    hub.start_server("prib")
    assert _mode(alice.pw_dir) == 0o700

    # alice saves a notebook from JupyterLab and a file from her kernel
    notebook = {
        "cells": [],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    r = requests.put(
        hub.server_url("pria") + "api/contents/private.ipynb",
        headers={"Authorization": f"token {alice_token}"},
        json={"type": "notebook", "content": notebook},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    wrote = run_in_kernel(
        hub.server_url("pria"),
        alice_token,
        "open('results.csv', 'w').write('a,b\\n1,2\\n'); print('ok')",
    )
    assert "ok" in stdout_of(wrote)
    saved = os.path.join(alice.pw_dir, "private.ipynb")
    written = os.path.join(alice.pw_dir, "results.csv")
    assert _mode(saved) & 0o077 == 0, oct(_mode(saved))
    assert _mode(written) & 0o077 == 0, oct(_mode(written))

    # bob's kernel: no listing, no reading
    code = PROBE.format(home=alice.pw_dir, notebook=saved, file=written)
    facts = json.loads(stdout_of(run_in_kernel(hub.server_url("prib"), bob_token, code)))
    assert facts == {"list": "denied", "read": "denied", "read_file": "denied"}, facts
    # and alice's own kernel reads them (the check above can fail)
    facts = json.loads(stdout_of(run_in_kernel(hub.server_url("pria"), alice_token, code)))
    assert facts == {"list": "allowed", "read": "allowed", "read_file": "allowed"}, facts
    hub.stop_server("pria")
    hub.stop_server("prib")
