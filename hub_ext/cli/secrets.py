"""``shipyard secrets list | set NAME | delete NAME``: a user's secrets from a terminal.

The same client as ``%secret`` (:class:`server_ext.clients.secrets.SecretsClient`), found the
way ``shipyard jobs`` finds the scheduler: ``--url``, else ``$SHIPYARD_SECRETS_URL`` (a
Shipyard server's terminal has it), else ``$SHIPYARD_BIND_URL`` + ``/services/secrets``,
else the embedded default; the token from ``--token`` or ``$JUPYTERHUB_API_TOKEN``.

``set`` never takes the value on the command line (it would be in the shell's history and
in every process listing): it asks with :func:`getpass.getpass`, or reads it from standard
input with ``--stdin`` (``vault read ... | shipyard secrets set DB_PASSWORD --stdin``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from hub_ext.cli.common import CLIError

DEFAULT_SECRETS_URL = "http://127.0.0.1:8000/services/secrets"


def _cli_error(message: str) -> Exception:
    """The ``CLIError`` that ``hub_ext.cli.main`` catches, as one line without a traceback."""
    return CLIError(message)


def _client(args: argparse.Namespace):
    from server_ext.clients.secrets import SERVICE_PATH, SecretsClient, SecretsError

    bind = os.environ.get("SHIPYARD_BIND_URL")
    url = (
        args.url
        or os.environ.get("SHIPYARD_SECRETS_URL")
        or (bind.rstrip("/") + SERVICE_PATH if bind else DEFAULT_SECRETS_URL)
    )
    token = args.token or os.environ.get("JUPYTERHUB_API_TOKEN")
    try:
        SecretsClient.normalise_url(url)  # first: a token in the URL is refused
    except SecretsError as e:
        raise _cli_error(e.message) from None
    if not token:
        raise _cli_error(
            "No token: set JUPYTERHUB_API_TOKEN (a terminal of your Shipyard server has it) or "
            "pass --token with a hub API token of yours (the hub's Token page makes one)."
        )
    return SecretsClient(url, token)


def _command(command):
    """Run ``command``; the service's errors become one line, as every CLIError."""

    def run(args: argparse.Namespace) -> int:
        from server_ext.clients.secrets import SecretsError

        try:
            return command(args)
        except SecretsError as e:
            raise _cli_error(e.message) from None

    return run


def cmd_list(args: argparse.Namespace) -> int:
    secrets = _client(args).list()
    if not secrets:
        print("You have no secrets. Add one with `shipyard secrets set NAME`.")
        return 0
    width = max(4, *(len(s["name"]) for s in secrets))
    print(f"{'NAME':{width}}  {'CREATED':19}  UPDATED")
    for s in secrets:
        created = s["created_at"][:19].replace("T", " ")
        updated = s["updated_at"][:19].replace("T", " ")
        print(f"{s['name']:{width}}  {created:19}  {updated}")
    return 0


def _read_value(args: argparse.Namespace) -> str:
    if args.stdin:
        value = sys.stdin.read()
        # one trailing newline is the shell's (echo, a file), not the value's
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    else:
        if not sys.stdin.isatty():
            raise _cli_error(
                "No terminal to ask for the value: pipe it in with --stdin "
                f"(e.g. `cat file | shipyard secrets set {args.name} --stdin`)."
            )
        value = getpass.getpass(f"Value of {args.name} (not shown): ")
    if not value:
        raise _cli_error(f"No value given; {args.name} was not changed.")
    return value


def cmd_set(args: argparse.Namespace) -> int:
    client = _client(args)
    result = client.set(args.name, _read_value(args))
    what = "created" if result["created"] else "updated"
    print(f"Secret {args.name} {what}.")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _client(args).delete(args.name)
    print(f"Secret {args.name} deleted.")
    return 0


def add_parser(subparsers) -> None:
    """Register ``shipyard secrets`` and its sub-commands on ``subparsers``."""
    secrets = subparsers.add_parser(
        "secrets", help="your secrets for jobs and models (values are never shown)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="the secrets service (default: $SHIPYARD_SECRETS_URL, else "
        "$SHIPYARD_BIND_URL/services/secrets)",
    )
    common.add_argument("--token", help="a hub API token of yours (default: $JUPYTERHUB_API_TOKEN)")
    ssub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    slist = ssub.add_parser("list", parents=[common], help="your secrets' names and times")
    slist.set_defaults(func=_command(cmd_list))
    sset = ssub.add_parser(
        "set", parents=[common], help="create or replace a secret; the value is asked for"
    )
    sset.add_argument("name", help="the secret's name, an environment variable name")
    sset.add_argument(
        "--stdin",
        action="store_true",
        help="read the value from standard input instead of a prompt (never from the command line)",
    )
    sset.set_defaults(func=_command(cmd_set))
    sdelete = ssub.add_parser("delete", parents=[common], help="delete a secret")
    sdelete.add_argument("name", help="the secret's name")
    sdelete.set_defaults(func=_command(cmd_delete))
