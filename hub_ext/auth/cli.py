"""``shipyard users``: admins add people, list accounts, reset passwords, approve sign-ups.

    shipyard users add NAME [--group G]...   create NAME; print a one-time password
    shipyard users list [--json]             accounts and sign-ups, with their login state
    shipyard users reset-password NAME       a new one-time password (unlocks the account)
    shipyard users approve NAME              approve a sign-up

The commands talk to the running hub with the CLI's service token (``cli-token`` in the
data dir, readable by root only, whose role has ``admin:users`` and ``admin:groups``),
as ``shipyard profiles usage`` does, rather than writing the hub's database themselves:
the hub stays the only writer of its tables (SQLite or PostgreSQL), its own checks
(valid names, groups) apply, and every change lands in the audit trail with the CLI as
the actor. Users and groups are made through JupyterHub's own REST API; passwords
through the admin-only API of :mod:`hub_ext.auth.native`
(``/hub/api/shipyard/users/...``).

A one-time password is printed once and is never stored in clear: whoever logs in with
it must choose their own password before the hub lets them in.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

#: What ``shipyard users add`` accepts as a name: the hub would take more, but a name
#: typed at a shell is checked here so the error is clear before anything is created.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
GROUP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _errors():
    from hub_ext.cli.main import CLIError, _data_dir

    return CLIError, _data_dir


def _check_name(name: str) -> str:
    CLIError, _ = _errors()
    if not NAME_PATTERN.match(name):
        raise CLIError(
            f"{name!r} is not a valid user name: use 1 to 64 lowercase letters, digits and "
            "'.', '_', '@', '-', starting with a letter or digit."
        )
    return name


def _check_group(group: str) -> str:
    CLIError, _ = _errors()
    if not GROUP_PATTERN.match(group):
        raise CLIError(
            f"{group!r} is not a valid group name: use 1 to 64 letters, digits and '.', "
            "'_', '-', starting with a letter or digit."
        )
    return group


class Hub:
    """The hub's REST API, with the CLI's admin token; errors become one clear line."""

    def __init__(self, args: argparse.Namespace):
        CLIError, data_dir = _errors()
        self.CLIError = CLIError
        token = args.token
        if not token:
            token_file = data_dir(args) / "cli-token"
            if not token_file.exists():
                raise CLIError(
                    f"No hub token in {token_file.parent}: run this as the user who ran "
                    "`shipyard up` (with the same --data-dir), or pass --token with an admin "
                    "token (admin:users, admin:groups)."
                )
            try:
                token = token_file.read_text().strip()
            except OSError as e:
                raise CLIError(f"Cannot read {token_file}: {e.strerror}.") from None
        self.token = token
        self.url = (
            args.hub_api_url
            or os.environ.get("JUPYTERHUB_API_URL")
            or os.environ.get("SHIPYARD_BIND_URL", "http://127.0.0.1:8000").rstrip("/") + "/hub/api"
        ).rstrip("/")

    def call(self, method: str, path: str, body=None, ok=(200, 201, 204)):
        """Return (status, JSON answer or None); raise CLIError unless status is in ``ok``."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - admin-given URL
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except urllib.error.URLError as e:
            raise self.CLIError(
                f"Cannot reach the hub at {self.url}: {e.reason}. Is it running?"
            ) from None
        except OSError as e:
            raise self.CLIError(
                f"Cannot reach the hub at {self.url}: {e!r}. Is it running?"
            ) from None
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            raise self.CLIError(
                f"{self.url}{path} did not answer JSON: is {self.url} the hub's API URL "
                "(it ends in /hub/api)?"
            ) from None
        if status in ok:
            return status, answer
        message = answer.get("message") if isinstance(answer, dict) else None
        if status in (401, 403):
            raise self.CLIError(
                f"The hub refused the token ({status}): use the token `shipyard up` made "
                "(cli-token in the data dir) or --token with admin:users and admin:groups."
            )
        if status == 404 and "/api/shipyard/" in path and not message:
            raise self.CLIError(
                "This hub does not keep passwords (SHIPYARD_AUTH is not native): manage "
                "users in your directory instead."
            )
        raise self.CLIError(message or f"The hub answered {status} for {method} {path}.")


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _login_url(hub: Hub) -> str:
    return hub.url[: -len("/api")] + "/login" if hub.url.endswith("/api") else hub.url


def cmd_add(args: argparse.Namespace) -> int:
    name = _check_name(args.name)
    groups = [_check_group(g) for g in dict.fromkeys(args.group or [])]
    hub = Hub(args)
    status, _ = hub.call("GET", f"/shipyard/users/{_quote(name)}", ok=(200, 404))
    if status == 200:
        raise hub.CLIError(
            f"User {name} exists already (or has signed up): `shipyard users reset-password "
            f"{name}` gives them a new one-time password, `shipyard users approve {name}` "
            "approves a sign-up."
        )
    status, _ = hub.call("GET", f"/users/{_quote(name)}", ok=(200, 404))
    if status == 200:
        raise hub.CLIError(f"User {name} exists already.")
    created_groups = []
    for group in groups:
        status, _ = hub.call("GET", f"/groups/{_quote(group)}", ok=(200, 404))
        if status == 404:
            hub.call("POST", f"/groups/{_quote(group)}", {})
            created_groups.append(group)
    hub.call("POST", f"/users/{_quote(name)}", {})
    for group in groups:
        hub.call("POST", f"/groups/{_quote(group)}/users", {"users": [name]})
    _, answer = hub.call("POST", f"/shipyard/users/{_quote(name)}/one-time-password", {"new": True})
    print(f"Added user {name}" + (f" to group(s) {', '.join(groups)}" if groups else "") + ".")
    for group in created_groups:
        print(f"Created group {group}.")
    print(f"One-time password: {answer['password']}")
    print(
        f"{name} signs in at {_login_url(hub)} with it and must choose their own password "
        "at once; it is shown only now."
    )
    return 0


def cmd_reset_password(args: argparse.Namespace) -> int:
    name = _check_name(args.name)
    hub = Hub(args)
    _, answer = hub.call("POST", f"/shipyard/users/{_quote(name)}/one-time-password", {})
    print(f"One-time password for {answer['name']}: {answer['password']}")
    print(
        "The account is unlocked and its browser sessions ended; at their next login they "
        "must choose a new password."
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    name = _check_name(args.name)
    hub = Hub(args)
    hub.call("POST", f"/shipyard/users/{_quote(name)}/approval", {})
    print(f"Approved {name}: they can sign in with the password they chose.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    hub = Hub(args)
    _, users = hub.call("GET", "/shipyard/users")
    if args.json:
        print(json.dumps(users, indent=2))
        return 0
    print(f"{'USER':24} {'ADMIN':5} {'APPROVED':8} {'STATE':18} GROUPS")
    for u in users:
        if u["locked_seconds"]:
            state = f"locked {u['locked_seconds']}s"
        elif u["must_change_password"]:
            state = "one-time password"
        elif not u["has_password"]:
            state = "no password"
        elif not u["approved"]:
            state = "awaits approval"
        else:
            state = "active"
        print(
            f"{u['name'][:24]:24} {'yes' if u['admin'] else '':5} "
            f"{'yes' if u['approved'] else 'no':8} {state:18} {','.join(u['groups'])}"
        )
    return 0


def add_parser(subparsers) -> None:
    """Register ``shipyard users`` and its actions on the top-level sub-parsers."""
    users = subparsers.add_parser(
        "users", help="add users, list them, reset a password, approve a sign-up"
    )
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    hub = argparse.ArgumentParser(add_help=False)
    hub.add_argument("--data-dir", help="the data dir `shipyard up` used (its cli-token)")
    hub.add_argument(
        "--hub-api-url", help="hub API URL (default: $JUPYTERHUB_API_URL or the local hub)"
    )
    hub.add_argument("--token", help="an admin hub token (default: the data dir's cli-token)")

    add = usub.add_parser("add", parents=[hub], help="create a user; print a one-time password")
    add.add_argument("name", metavar="NAME", help="the user name (lowercase)")
    add.add_argument(
        "--group",
        "-g",
        action="append",
        metavar="G",
        help="a group to put them in (created if missing); repeat for more",
    )
    add.set_defaults(func=cmd_add)

    listing = usub.add_parser("list", parents=[hub], help="accounts and sign-ups")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_list)

    reset = usub.add_parser(
        "reset-password",
        parents=[hub],
        help="give a user a new one-time password (also unlocks the account)",
    )
    reset.add_argument("name", metavar="NAME")
    reset.set_defaults(func=cmd_reset_password)

    approve = usub.add_parser("approve", parents=[hub], help="approve a sign-up")
    approve.add_argument("name", metavar="NAME")
    approve.set_defaults(func=cmd_approve)
