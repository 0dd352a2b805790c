"""What the ``shipyard`` commands share: the error they print, the hub's URL, the data dir,
and whose token a command that calls a hub service sends.

:class:`CLIError` lives here, not in :mod:`hub_ext.cli.main`, so that the command modules
(:mod:`hub_ext.cli.jobs`, :mod:`hub_ext.cli.secrets`...), which ``main`` imports, can raise it
without importing ``main``; ``python -m hub_ext.cli`` runs :mod:`hub_ext.cli.__main__`, which
imports ``main`` as every other caller does, so there is one class to catch.

Whose token
-----------
The scheduler and the deployer act for hub *users*: a job and a deployment have an owner,
and both refuse a service's token (the ``shipyard-cli`` service's, which ``shipyard profiles
usage`` and ``shipyard users`` send). So ``shipyard jobs`` and ``shipyard models`` send,
in this order (:func:`service_access`):

1. ``--token``: what was asked for explicitly;
2. ``$JUPYTERHUB_API_TOKEN``: a terminal of a Shipyard server has it, the user's own;
3. on the hub's machine, the hub's own credentials: when the data dir's ``cli-token`` can be
   read (by whoever ran ``shipyard up``, usually root), the command asks the hub for a token
   of the hub admin (the data dir's ``credentials.json`` names them; ``--as NAME`` names
   another admin) that grants only ``access:services!service=<service>``, and revokes it
   when the command ends (it expires after :data:`TOKEN_SECONDS` even if the command is
   killed). The admin sees every user's jobs and models, as the services let admins.

The user's own token comes before the data dir's so that a terminal of a server never acts
as the admin because its folder happens to hold a readable ``.shipyard``.

Rejected alternatives: the services accepting the CLI's service token as an admin (a second
kind of caller in every service, and actions recorded for no user); a long-lived admin
token kept in the data dir (one more secret that outlives its use); acting as any user
(``--as alice``): the services record what the token does as its user's, so the CLI acts
only as an admin, whose actions the audit trail then shows as theirs, after the hub's
record that the CLI made the token.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

#: The hub's public URL when ``$SHIPYARD_BIND_URL`` is not set (``shipyard up``'s default).
DEFAULT_HUB_URL = "http://127.0.0.1:8000"
#: Seconds an admin token the CLI makes stays valid if the command dies before revoking it:
#: one day, the longest a job's run may take (the scheduler's ``MAX_TIMEOUT_SECONDS``), so
#: that ``jobs logs --follow`` never outlives its token.
TOKEN_SECONDS = 86_400
#: Seconds any one call to the hub's REST API may take.
HUB_TIMEOUT = 30


class CLIError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def hub_url() -> str:
    """The hub's public URL: ``$SHIPYARD_BIND_URL``, else ``shipyard up``'s default."""
    return (os.environ.get("SHIPYARD_BIND_URL") or DEFAULT_HUB_URL).rstrip("/")


def hub_api_url() -> str:
    """The hub's REST API: ``$JUPYTERHUB_API_URL``, else the public URL's ``/hub/api``."""
    return (os.environ.get("JUPYTERHUB_API_URL") or hub_url() + "/hub/api").rstrip("/")


def data_dir_of(args: argparse.Namespace) -> Path:
    """The data dir to read from (``--data-dir``, ``$SHIPYARD_DATA_DIR``, ``.shipyard``).

    Unlike ``shipyard up``, reading never creates it.
    """
    return Path(
        getattr(args, "data_dir", None) or os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard"
    ).resolve()


def add_access_options(parser: argparse.ArgumentParser, service: str, variable: str) -> None:
    """``--url``, ``--token``, ``--data-dir`` and ``--as``: how a command reaches ``service``."""
    parser.add_argument(
        "--url",
        help=f"the {service}'s URL (default: ${variable}, else {hub_url()}/services/{service})",
    )
    parser.add_argument(
        "--token",
        help="a hub API token of yours (default: $JUPYTERHUB_API_TOKEN, which is safer: "
        "command lines are visible to other users; on the hub's machine, the hub's own "
        "credentials in the data dir)",
    )
    parser.add_argument(
        "--data-dir",
        help="the data dir `shipyard up` used, whose credentials an admin on the hub's "
        "machine uses (default: $SHIPYARD_DATA_DIR, else ./.shipyard)",
    )
    parser.add_argument(
        "--as",
        dest="as_admin",
        metavar="ADMIN",
        help="with the hub's credentials: the hub admin to act as (default: the admin of "
        "the data dir's credentials.json)",
    )


def service_url(args: argparse.Namespace, variable: str, path: str) -> str:
    """``--url``, else ``$variable``, else the hub's public URL with the service's ``path``."""
    return getattr(args, "url", None) or os.environ.get(variable) or hub_url() + path


# ---------------------------------------------------------------- the hub, as its CLI


class HubAdmin:
    """The hub's REST API with the ``shipyard-cli`` service token of the data dir.

    Parameters
    ----------
    token : str
        The data dir's ``cli-token``.
    api_url : str
        The hub's API URL (:func:`hub_api_url`).
    token_file : Path
        Where the token came from, named in errors.
    """

    def __init__(self, token: str, api_url: str, token_file: Path):
        self.api_url = api_url
        self.token_file = token_file
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"token {token}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, JSON answer or None)``; a hub that is not reached is a CLIError."""
        try:
            response = self._session.request(
                method,
                self.api_url + path,
                json=body,
                timeout=HUB_TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as e:
            raise CLIError(
                f"Cannot reach the hub at {self.api_url} ({type(e).__name__}): is it running "
                "(`shipyard up`), and is $SHIPYARD_BIND_URL its URL?"
            ) from None
        try:
            answer = response.json() if response.content else None
        except ValueError:
            raise CLIError(
                f"{self.api_url}{path} did not answer JSON: is {self.api_url} the hub's API "
                "URL (it ends in /hub/api)? Set $SHIPYARD_BIND_URL to the hub's URL."
            ) from None
        return response.status_code, answer

    def _refused(self, status: int, answer: Any) -> CLIError:
        message = answer.get("message") if isinstance(answer, dict) else None
        return CLIError(
            f"The hub at {self.api_url} refused the token in {self.token_file} "
            f"({status}{': ' + message if message else ''}): is that the data dir of the "
            "hub at this URL? Pass --data-dir, or set $SHIPYARD_BIND_URL to that hub's URL."
        )

    def admin(self, name: str) -> str:
        """``name`` if it is a hub admin; a CLIError saying what to pass otherwise."""
        status, answer = self.call("GET", f"/users/{quote(name, safe='')}")
        if status == 404:
            raise CLIError(
                f"The hub has no user {name!r} to act as: pass --as with the name of a hub admin."
            )
        if status != 200:
            raise self._refused(status, answer)
        if not answer.get("admin"):
            raise CLIError(
                f"{name!r} is not a hub admin: pass --as with the name of a hub admin (the "
                "CLI acts on the hub's machine only as an admin)."
            )
        return name

    def user_names(self) -> list[str]:
        """Every hub user's name, all pages."""
        names: list[str] = []
        while True:
            status, page = self.call("GET", f"/users?offset={len(names)}&limit=200")
            if status != 200:
                raise self._refused(status, page)
            names += [u["name"] for u in page]
            if len(page) < 200:
                return names

    def issue(self, user: str, service: str, note: str) -> dict:
        """A token of ``user`` that grants only access to ``service``: ``{"id", "token"}``."""
        body = {
            "note": note,
            "expires_in": TOKEN_SECONDS,
            "scopes": [f"access:services!service={service}"],
        }
        path = f"/users/{quote(user, safe='')}/tokens"
        status, answer = self.call("POST", path, body)
        message = answer.get("message") if isinstance(answer, dict) else None
        if status == 400 and "expires_in" in (message or ""):
            # the hub caps token lifetimes lower (token_expires_in_max_seconds): its cap
            del body["expires_in"]
            status, answer = self.call("POST", path, body)
            message = answer.get("message") if isinstance(answer, dict) else None
        if status == 201:
            return answer
        if status == 403:
            raise CLIError(
                "The hub does not let its CLI make tokens (403): restart it with this "
                "Shipyard's config (`shipyard up`: its shipyard-cli role has the tokens "
                "scope), or pass --token with a hub API token of yours."
            )
        if status == 400:
            raise CLIError(
                f"The hub would not make a token for the {service} ({message}): does it run "
                f"the {service} service (SHIPYARD_{service.upper()}=1)?"
            )
        raise self._refused(status, answer)

    def revoke(self, user: str, token_id: str) -> None:
        """Delete a token :meth:`issue` made; a failure is left to its expiry."""
        with contextlib.suppress(CLIError):
            self.call("DELETE", f"/users/{quote(user, safe='')}/tokens/{quote(token_id)}")


@dataclass(frozen=True)
class Access:
    """The token a command sends, and as whom.

    Attributes
    ----------
    token : str
        The hub API token for the service.
    user : str or None
        The hub user it acts as, when known (``$JUPYTERHUB_USER``, or the admin).
    hub : HubAdmin or None
        The hub's API with the data dir's token, when the command uses the hub's
        credentials (an admin may then list every user).
    """

    token: str
    user: str | None
    hub: HubAdmin | None = None


def _no_token(service: str, token_file: Path) -> CLIError:
    return CLIError(
        f"No token for the {service}. On the hub's machine: run this as the user who ran "
        "`shipyard up` (root), where it ran or with its data dir in --data-dir or "
        f"$SHIPYARD_DATA_DIR (there is no {token_file.name} in {token_file.parent}). "
        "Elsewhere: set JUPYTERHUB_API_TOKEN (a terminal of your Shipyard server has it) or "
        f"pass --token with a hub API token of yours ({hub_url()}/hub/token makes one)."
    )


def _admin_name(args: argparse.Namespace, directory: Path) -> str:
    if getattr(args, "as_admin", None):
        return args.as_admin
    try:
        return json.loads((directory / "credentials.json").read_text())["admin_user"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CLIError(
            f"No admin named in {directory / 'credentials.json'}: pass --as with the name of "
            "a hub admin to act as."
        ) from None


@contextlib.contextmanager
def service_access(args: argparse.Namespace, service: str, command: str) -> Iterator[Access]:
    """The token for ``service`` (see the module docstring for the order); CLIError if none.

    Parameters
    ----------
    args : argparse.Namespace
        The command line, with :func:`add_access_options`' options.
    service : str
        The hub service the token must reach, e.g. ``"scheduler"``.
    command : str
        The command, e.g. ``"jobs list"``: the note of a token made for it.
    """
    token = getattr(args, "token", None) or os.environ.get("JUPYTERHUB_API_TOKEN")
    if token:
        yield Access(token, os.environ.get("JUPYTERHUB_USER"))
        return
    directory = data_dir_of(args)
    token_file = directory / "cli-token"
    try:
        cli_token = token_file.read_text().strip()
    except FileNotFoundError:
        raise _no_token(service, token_file) from None
    except OSError as e:  # unreadable for this user: not the one who ran `shipyard up`
        raise CLIError(
            f"Cannot read {token_file} ({e.strerror}): run this as the user who ran "
            "`shipyard up` (root: sudo), or set JUPYTERHUB_API_TOKEN or pass --token with a "
            "hub API token of yours."
        ) from None
    if not cli_token:
        raise _no_token(service, token_file)
    hub = HubAdmin(cli_token, hub_api_url(), token_file)
    admin = hub.admin(_admin_name(args, directory))
    note = f"shipyard {command} on the hub's machine (as {getpass.getuser()})"
    issued = hub.issue(admin, service, note)
    try:
        yield Access(issued["token"], admin, hub)
    finally:
        hub.revoke(admin, issued["id"])
