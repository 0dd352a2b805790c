"""``shipyard models list | status NAME | rollback NAME [--to V]``: deployed models from a terminal.

What ``%deployments`` and ``%deploy --rollback`` do in a notebook, for a terminal and for the
admin on the hub's machine. The deployer's client is the magics' own
(:class:`server_ext.clients.deployer.client.DeployerClient`), so the service's refusals read the same
everywhere; whose token the command sends is :func:`hub_ext.cli.common.service_access`'s to
decide, and the service decides what that token may see: a user their own deployments, a
hub admin anyone's (``OWNER/NAME``, ``?owner=`` on the wire).

``list`` shows one line per deployment. With the hub's credentials (the admin on the hub's
machine) it lists every hub user's deployments, one call per user, since the deployer lists
one owner at a time; elsewhere the caller's own, or ``--owner``'s for an admin.

A deployment the caller cannot see and one that does not exist get the same one line: the
deployer answers both with a 404 (SECURITY rule 3), and so does this command.
"""

from __future__ import annotations

import argparse
import sys
import time

from hub_ext.cli.common import CLIError, add_access_options, service_access, service_url

#: Seconds between two looks at a version a rollback waits for (a cheap read).
POLL_SECONDS = 0.5


def _command(name: str, command):
    """Run ``command(args, client, access)`` with the deployer's client; errors as one line."""

    def run(args: argparse.Namespace) -> int:
        from server_ext.clients.deployer.client import SERVICE_PATH, DeployerClient, DeployerError

        try:
            # what can be checked here first: a bad name, a token in the URL
            if getattr(args, "name", None):
                _check_ref(args.name)
            url = DeployerClient.normalise_url(
                service_url(args, "SHIPYARD_DEPLOYER_URL", SERVICE_PATH)
            )
            with service_access(args, "deployer", f"models {name}") as access:
                return command(args, DeployerClient(url, access.token), access)
        except DeployerError as e:
            if getattr(args, "name", None) and _missing(e):
                # another user's deployment and a missing one: the same answer
                raise CLIError(
                    f"No deployment {args.name!r} that you can see: `shipyard models list` "
                    "lists them."
                ) from None
            raise CLIError(e.message) from None

    return run


def _check_ref(ref: str) -> None:
    """A CLIError unless ``ref`` is ``NAME`` or ``OWNER/NAME`` (the deployer's name rule)."""
    from server_ext.clients.deployer.client import DeployerError, check_name

    try:
        check_name(ref.rpartition("/")[2])
    except DeployerError:
        valid = False
    else:
        valid = ref.count("/") <= 1 and not ref.startswith("/")
    if not valid:
        raise CLIError(
            f"{ref!r} is not a deployment: give NAME or OWNER/NAME as `shipyard models list` "
            "shows them (a name is 1 to 40 lowercase letters, digits and single dashes, e.g. "
            "churn or alice/churn)."
        )


def _missing(error) -> bool:
    """Whether the deployer said the deployment is not there (or not the caller's to see)."""
    return error.status == 404 and (
        error.message == "no such deployment" or error.message.startswith("no deployment ")
    )


def _split(ref: str, user: str | None) -> tuple[str | None, str]:
    """``OWNER/NAME`` or ``NAME`` as (owner, name); the owner None for the caller's own."""
    owner, _, name = ref.rpartition("/")
    return (owner if owner and owner != user else None), name


def _label(deployment: dict, user: str | None) -> str:
    """A deployment as the commands take it: ``NAME``, or ``OWNER/NAME`` for another's."""
    if deployment["owner"] == user:
        return deployment["name"]
    return f"{deployment['owner']}/{deployment['name']}"


def _when(value: str | None) -> str:
    from server_ext.clients.scheduler.text import format_time

    return format_time(value)


def traffic_text(deployment: dict) -> str:
    """``v1 90% v3 10%``, and the version waiting to take the traffic (``-> v1 100%``)."""
    split = sorted(deployment["traffic"].items(), key=lambda item: int(item[0]))
    text = " ".join(f"v{v} {p}%" for v, p in split if p) or "none"
    for version in deployment["versions"]:
        if version.get("pending_percent"):
            text += f" -> v{version['version']} {version['pending_percent']}% when ready"
    return text


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as columns of text, each as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def deployments_table(deployments: list[dict], user: str | None) -> str:
    """One line per deployment: its traffic, newest version and its state, replicas."""
    rows = [("NAME", "TRAFFIC", "NEWEST", "STATE", "REPLICAS", "PROFILE", "UPDATED")]
    for d in sorted(deployments, key=lambda d: (d["owner"] != user, d["owner"], d["name"])):
        newest = max(d["versions"], key=lambda v: v["version"])
        state = newest["state"]
        if newest.get("reason") and state in ("failed", "stopped"):
            state += f": {newest['reason']}"
        rows.append(
            (
                _label(d, user),
                traffic_text(d),
                f"v{newest['version']}",
                state[:60],
                str(d["replicas"]),
                d["profile"],
                _when(d["updated_at"]),
            )
        )
    return table(rows)


def cmd_list(args: argparse.Namespace, client, access) -> int:
    if args.owner:
        owners = [args.owner]
    elif access.hub is not None:  # the admin on the hub's machine: everyone's
        owners = access.hub.user_names()
    else:
        owners = [None]
    deployments = [d for owner in owners for d in client.list_deployments(owner)]
    if not deployments:
        whose = f"{args.owner} has" if args.owner else "There are" if access.hub else "You have"
        print(f"{whose} no deployments: deploy a model with %deploy MODEL --name NAME.")
        return 0
    print(deployments_table(deployments, access.user))
    return 0


def cmd_status(args: argparse.Namespace, client, access) -> int:
    from server_ext.clients.deployer.text import deployments_text, endpoint_url, version_rows

    owner, name = _split(args.name, access.user)
    d = client.get_deployment(name, owner)
    print(
        f"Deployment {_label(d, access.user)} (owner {d['owner']}): profile {d['profile']}, "
        f"{d['replicas']} replica(s) per version, updated {_when(d['updated_at'])}."
    )
    print(f"Traffic: {traffic_text(d)}")
    print(f"Endpoint: {endpoint_url(client, d)}")
    if d.get("previous_version"):
        print(
            f"Previous version: v{d['previous_version']} (`shipyard models rollback "
            f"{args.name}` sends all traffic back to it)."
        )
    print()
    print(deployments_text(version_rows(client, [d])))
    print()
    for v in sorted(d["versions"], key=lambda v: -v["version"]):
        print(f"v{v['version']}: {v['model_uri']}, created {_when(v['created_at'])}")
    return 0


def _serving(deployment: dict) -> str:
    serving = sorted(int(v) for v, p in deployment["traffic"].items() if p > 0)
    if not serving:
        return "Nothing serves under this name."
    return " and ".join(f"v{v}" for v in serving) + " keep(s) serving."


def _wait_ready(client, args, owner: str | None, name: str, target: int) -> dict:
    """Version ``target`` once it is ready, failed or stopped; progress on stderr."""
    tty = sys.stderr.isatty()
    started = time.monotonic()
    shown = None
    while True:
        version = client.get_version(name, target, owner)
        elapsed = time.monotonic() - started
        line = f"  v{target} {version['state']}"
        if tty:
            print(f"\r{line} ({elapsed:.0f} s)   ", end="", file=sys.stderr, flush=True)
        elif line != shown:
            print(line, file=sys.stderr, flush=True)
        shown = line
        if version["state"] in ("ready", "failed", "stopped"):
            if tty:
                print(file=sys.stderr)
            return version
        if elapsed > args.timeout:
            if tty:
                print(file=sys.stderr)
            raise CLIError(
                f"v{target} of {args.name!r} is still {version['state']} after "
                f"{args.timeout:.0f} s; the rollback goes on: `shipyard models status "
                f"{args.name}` shows how it ends."
            )
        time.sleep(POLL_SECONDS)


def cmd_rollback(args: argparse.Namespace, client, access) -> int:
    from server_ext.clients.deployer.text import rollback_target

    owner, name = _split(args.name, access.user)
    if args.to is None:
        before = client.get_deployment(name, owner)
        if before.get("previous_version") is None:
            raise CLIError(
                f"No earlier version has served {args.name!r}: give the version to go back "
                f"to with --to N (`shipyard models status {args.name}` lists them)."
            )
    d = client.rollback(name, args.to, owner)
    target = args.to or rollback_target(d)
    version = next(v for v in d["versions"] if v["version"] == target)
    if version["state"] != "ready":
        print(
            f"Rolling back {args.name!r} to v{target}: it is {version['state']}; it takes the "
            "traffic once it is ready.",
            file=sys.stderr,
            flush=True,
        )
        if args.no_wait:
            print(f"`shipyard models status {args.name}` shows when it serves.")
            return 0
        try:
            version = _wait_ready(client, args, owner, name, target)
        except KeyboardInterrupt:
            print(
                f"\nStopped waiting; the rollback goes on (`shipyard models status "
                f"{args.name}` shows it).",
                file=sys.stderr,
            )
            return 130
        d = client.get_deployment(name, owner)
        if version["state"] != "ready":
            reason = version.get("reason") or "the deployer gave no reason"
            raise CLIError(
                f"v{target} of {args.name!r} {version['state']}: {reason}. {_serving(d)}"
            )
    share = d["traffic"].get(str(target), 0)
    print(f"Rolled back {args.name!r}: v{target} takes {share}% of the traffic.")
    return 0


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("give 1 or more")
    return number


def add_parser(subparsers) -> None:
    """Register ``shipyard models`` and its actions on the top-level sub-parsers."""
    models = subparsers.add_parser(
        "models", help="deployed models: list them, one's versions and health, roll back"
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    service = argparse.ArgumentParser(add_help=False)
    add_access_options(service, "deployer", "SHIPYARD_DEPLOYER_URL")
    name_help = "the deployment's name (OWNER/NAME for someone else's, as an admin)"

    mlist = msub.add_parser(
        "list",
        parents=[service],
        help="your deployments (the admin on the hub's machine: everyone's): traffic, "
        "newest version, state",
    )
    mlist.add_argument("--owner", help="this user's deployments (hub admins only)")
    mlist.set_defaults(func=_command("list", cmd_list))

    status = msub.add_parser(
        "status",
        parents=[service],
        help="one deployment: endpoint, traffic, each version's state, health and latency",
    )
    status.add_argument("name", metavar="NAME", help=name_help)
    status.set_defaults(func=_command("status", cmd_status))

    rollback = msub.add_parser(
        "rollback",
        parents=[service],
        help="send all traffic back to the version before (or --to VERSION); waits for it",
    )
    rollback.add_argument("name", metavar="NAME", help=name_help)
    rollback.add_argument(
        "--to", type=_positive, metavar="VERSION", help="the version to go back to"
    )
    rollback.add_argument(
        "--no-wait",
        action="store_true",
        help="return at once when the version must start again first",
    )
    rollback.add_argument(
        "--timeout",
        type=_positive,
        default=600,
        metavar="SECONDS",
        help="how long to wait for it to be ready (default 600)",
    )
    rollback.set_defaults(func=_command("rollback", cmd_rollback))
