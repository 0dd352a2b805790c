"""``%secret``: a user's named secrets from a notebook, without a value ever in a cell.

- ``%secret set NAME`` asks for the value with :func:`getpass.getpass` (the
  notebook's password prompt, which the frontend neither echoes nor saves):
  the value is never typed into a cell, so it is never in the notebook, its
  history or its outputs;
- ``%secret list`` shows names and times, never values;
- ``%secret delete NAME`` deletes one.

A job or a deployment names the secrets it needs (``%schedule --secret NAME``,
``%deploy --secret NAME``); its run or replica gets them as environment
variables. A value cannot be read back here: there is no such call.

Registered by :func:`server_ext.magics.load_ipython_extension` beside the other families;
it has no settings, so it is a plain ``Magics`` rather than a
:class:`~server_ext.magics.base.ShipyardMagics`.
"""

from __future__ import annotations

import getpass

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..clients.secrets import SecretsClient, SecretsError

#: The verbs of ``%secret``.
VERBS = ("set", "list", "delete")


@magics_class
class SecretMagics(Magics):
    """``%secret set|list|delete``: the user's secrets for their jobs and models."""

    def client(self) -> SecretsClient:
        return SecretsClient.from_environment()

    @magic_arguments()
    @argument("verb", help="set NAME (asks for the value), list, or delete NAME")
    @argument("name", nargs="?", help="the secret's name, an environment variable name")
    @line_magic
    def secret(self, line: str = ""):
        """Keep secrets for jobs and models: ``%secret set NAME``, ``list``, ``delete NAME``."""
        words = line.split()
        if len(words) > 2 or (len(words) == 2 and "=" in words[1]):
            # someone typed the value into the cell: refuse it before it is sent anywhere
            raise UsageError(
                "%secret takes only a verb and a NAME; the value is asked for in a password "
                "prompt, never typed into a cell (cells are saved with the notebook)."
            )
        args = parse_argstring(self.secret, line)  # a bad line raises UsageError
        if args.verb not in VERBS:
            raise UsageError(
                f"Unknown %secret verb {args.verb!r}: use set NAME, list or delete NAME."
            )
        if args.verb == "list":
            if args.name:
                raise UsageError("%secret list takes no name.")
            return self._list()
        if not args.name:
            raise UsageError(f"Name the secret: %secret {args.verb} NAME")
        if args.verb == "set":
            return self._set(args.name)
        return self._delete(args.name)

    def _set(self, name: str) -> None:
        try:
            client = self.client()
        except SecretsError as e:
            raise UsageError(str(e)) from None
        value = getpass.getpass(f"Value of {name} (not shown, not saved in the notebook): ")
        if not value:
            raise UsageError(f"No value given; {name} was not changed.")
        try:
            result = client.set(name, value)
        except SecretsError as e:
            raise UsageError(str(e)) from None
        finally:
            value = None  # noqa: F841 - drop the reference as soon as it is sent
        what = "created" if result["created"] else "updated"
        print(
            f"Secret {name} {what}. Jobs and deployments that name it (--secret {name}) get it "
            f"as ${name} when they run."
        )

    def _list(self) -> None:
        try:
            secrets = self.client().list()
        except SecretsError as e:
            raise UsageError(str(e)) from None
        if not secrets:
            print("You have no secrets. Add one with %secret set NAME.")
            return
        width = max(len(s["name"]) for s in secrets)
        print(f"{'NAME':{width}}  UPDATED")
        for s in secrets:
            print(f"{s['name']:{width}}  {s['updated_at'][:19].replace('T', ' ')}")

    def _delete(self, name: str) -> None:
        try:
            self.client().delete(name)
        except SecretsError as e:
            raise UsageError(str(e)) from None
        print(f"Secret {name} deleted; jobs and deployments that name it now fail to start.")
