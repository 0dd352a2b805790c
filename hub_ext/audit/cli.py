"""``shipyard audit``: verify, list and prune the trail from the hub's machine.

Run where the trail lives (the hub's machine, as the account that owns the
data directory): the commands read the file and the table directly, so an
admin can check the trail when the hub is down, and nothing but the file
permissions (0700 directory) guards them, as for the hub's own database.
The REST API (``/services/audit/``) is the way in for admins elsewhere.

``verify`` exits 1 when it finds a break and prints one line per problem;
``list`` prints a table or, with ``--json``, the records as stored (one JSON
object per line, ready for ``jq``). Every command that reads the trail
records an ``audit.read``; ``verify`` first copies into the table any record
of the file it lacks (a writer that lost the database), so that a pending
copy is not reported as a difference.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from . import emit, get_writer
from .actions import ACTIONS
from .db import make_engine, upgrade
from .query import QueryError, list_records, parse_filters
from .retention import prune
from .verify import verify


def _cli_error(message: str) -> Exception:
    from hub_ext.cli.main import CLIError  # late: hub_ext.cli imports this module

    return CLIError(message)


def _actor() -> str:
    return getpass.getuser()


def cmd_verify(args: argparse.Namespace) -> int:
    writer = get_writer()
    if not writer.settings.enabled:
        raise _cli_error("The audit trail is off (SHIPYARD_AUDIT=0): nothing to verify.")
    if not args.no_sync:
        try:
            writer.sync_table()
        except Exception as e:  # the table may be what is broken; verify says how
            print(f"warning: could not copy pending records into the table: {e}")
    report = verify(writer.settings)
    emit(
        "audit.read",
        actor=_actor(),
        actor_kind="system",
        target="audit/verify",
        details={"ok": report.ok, "problems": len(report.problems)},
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(problem)
        span = (
            f"seq {report.first_seq}-{report.last_seq}" if report.first_seq is not None else "empty"
        )
        verdict = "OK" if report.ok else f"BROKEN: {len(report.problems)} problem(s)"
        print(
            f"{verdict}: {report.file_records} records in the file, "
            f"{report.table_records} in the table ({span}), in {writer.settings.directory}"
        )
    return 0 if report.ok else 1


def _format_row(r: dict[str, Any]) -> str:
    time = r.get("__timestamp__", "")[:19].replace("T", " ")
    actor = r.get("actor") or f"({r.get('actor_kind')})"
    if r.get("on_behalf_of"):
        actor += f" for {r['on_behalf_of']}"
    outcome = r.get("outcome", "")
    if r.get("reason"):
        outcome += f": {r['reason']}"
    return (
        f"{r.get('seq', ''):>7} {time:19} {r.get('action', ''):26} {actor:18} "
        f"{(r.get('target') or '-'):30} {(r.get('client') or '-'):15} {outcome}"
    )


def cmd_list(args: argparse.Namespace) -> int:
    try:
        filters = parse_filters(
            user=args.user, action=args.action, since=args.since, limit=args.limit
        )
    except QueryError as e:
        raise _cli_error(str(e)) from None
    writer = get_writer()
    upgrade(writer.settings.db_url)
    engine = make_engine(writer.settings.db_url)
    try:
        records = list_records(engine, filters)
    finally:
        engine.dispose()
    emit(
        "audit.read",
        actor=_actor(),
        actor_kind="system",
        target="audit/records",
        details={k: v for k, v in vars(args).items() if k in ("user", "action", "since") and v},
    )
    records.reverse()  # oldest first on a terminal: the newest line is next to the prompt
    if args.json:
        for r in records:
            print(json.dumps(r, sort_keys=True))
        return 0
    if not records:
        print("No audit records match.")
        return 0
    print(
        f"{'SEQ':>7} {'TIME (UTC)':19} {'ACTION':26} {'ACTOR':18} {'TARGET':30} "
        f"{'CLIENT':15} OUTCOME"
    )
    for r in records:
        print(_format_row(r))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    result = prune()
    print(
        f"rotated: {result['rotated'] or 'no'}; archives deleted: "
        f"{len(result['archives_deleted'])}; rows deleted: {result['rows_deleted']}"
    )
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    for name, description in ACTIONS.items():
        print(f"{name:28} {description}")
    return 0


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("give 1 or more")
    return n


def add_parser(subparsers) -> None:
    """Register ``shipyard audit ...`` on the main parser's subparsers."""
    audit = subparsers.add_parser("audit", help="verify and query the audit trail")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    v = asub.add_parser(
        "verify", help="check the hash chain of the file and the table; exit 1 on a break"
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument(
        "--no-sync",
        action="store_true",
        help="do not copy pending records of the file into the table first",
    )
    v.set_defaults(func=cmd_verify)

    ls = asub.add_parser("list", help="print audit records (oldest of the newest N first)")
    ls.add_argument("--user", help="records where this user acted or owned the target")
    ls.add_argument("--action", help="an action (job.create) or a family (job)")
    ls.add_argument("--since", help="an ISO time (2026-01-31T12:00Z) or an age (30m, 2h, 7d)")
    ls.add_argument(
        "--limit", type=_positive, default=100, help="at most this many records (default 100)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON record per line, as stored")
    ls.set_defaults(func=cmd_list)

    p = asub.add_parser(
        "prune", help="rotate the file and delete records past SHIPYARD_AUDIT_RETENTION_DAYS"
    )
    p.set_defaults(func=cmd_prune)

    a = asub.add_parser("actions", help="the audited actions")
    a.set_defaults(func=cmd_actions)
