"""``shipyard usage report``: usage and cost by user, group, profile or object.

The usage service's client (:mod:`server_ext.clients.usage`), reached as ``shipyard jobs``
reaches the scheduler: ``--url``, else ``$SHIPYARD_USAGE_URL``, else the hub's URL with
``/services/usage``; whose token it sends is :func:`hub_ext.cli.common.service_access`'s
to decide (a user's own: their usage; on the hub's machine, the hub admin's: everyone's).

``--since`` and ``--until`` take an ISO date or time (``2026-12-01``, UTC without a zone)
or an age (``30d``, ``12h``, ``90m``). The table ends with the waste report (idle servers
holding resources, limits far above use) unless ``--no-waste``; ``--csv`` prints the usage
rows alone, as CSV, for a spreadsheet.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from datetime import datetime, timezone

from hub_ext.cli.common import CLIError, add_access_options, service_access, service_url

_AGE = re.compile(r"(\d+(?:\.\d+)?)([mhd])")
_UNIT = {"m": 60, "h": 3600, "d": 86400}
COLUMNS = ("cpu_hours", "mem_gib_hours", "gpu_hours", "wall_hours", "cost")


def parse_time(value: str, now: float | None = None) -> float:
    """An ISO date or time, or an age (``30d``, ``12h``, ``90m``), as seconds since the epoch."""
    now = time.time() if now is None else now
    match = _AGE.fullmatch(value.strip())
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(
            f"{value!r} is neither an ISO date or time (2026-12-01, 2026-12-01T08:00Z) nor "
            "an age (30d, 12h, 90m)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def days(count: float) -> str:
    return f"{count:g} day" if count == 1 else f"{count:g} days"


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def print_table(report: dict, out=None) -> None:
    out = out or sys.stdout
    rows = report["rows"]
    by = report["by"]
    print(
        f"Usage by {by}, {_day(report['since'])} to {_day(report['until'])} "
        f"(cost in {report['currency']})",
        file=out,
    )
    if not rows:
        print("No usage recorded in this period.", file=out)
        return
    width = max(len(by), *(len(r["key"]) for r in rows))
    header = ["CPU-H", "MEM GiB-H", "GPU-H", "WALL-H", "COST"]
    print(f"{by.upper():{width}}  " + "  ".join(f"{h:>10}" for h in header), file=out)
    totals = dict.fromkeys(COLUMNS, 0.0)
    for row in rows:
        cells = "  ".join(
            f"{row[c]:>10.3f}" if c != "cost" else f"{row[c]:>10.2f}" for c in COLUMNS
        )
        print(f"{row['key']:{width}}  {cells}", file=out)
        for c in COLUMNS:
            totals[c] += row[c]
    if by != "group":  # a user in two groups counts in both: the groups' sum is no total
        cells = "  ".join(
            f"{totals[c]:>10.3f}" if c != "cost" else f"{totals[c]:>10.2f}" for c in COLUMNS
        )
        print(f"{'TOTAL':{width}}  {cells}", file=out)


def print_waste(waste: dict, out=None) -> None:
    out = out or sys.stdout
    print("", file=out)
    if not waste["idle"] and not waste["rightsizing"]:
        print(f"No idle server and no oversized limit over {days(waste['days'])}.", file=out)
        return
    if waste["idle"]:
        print("Idle servers holding resources:", file=out)
        for item in waste["idle"]:
            print(f"  {item['message']}", file=out)
    if waste["rightsizing"]:
        print(f"Right-sizing (peaks over {days(waste['days'])}):", file=out)
        for item in waste["rightsizing"]:
            print(f"  {item['message']}", file=out)


def cmd_report(args: argparse.Namespace) -> int:
    from server_ext.clients.usage import SERVICE_PATH, UsageClient, UsageError

    now = time.time()
    query = {
        "by": args.by,
        "since": parse_time(args.since, now) if args.since else None,
        "until": parse_time(args.until, now) if args.until else None,
        "user": args.user,
    }
    try:
        url = UsageClient.normalise_url(service_url(args, "SHIPYARD_USAGE_URL", SERVICE_PATH))
        with service_access(args, "usage", "usage report") as access:
            client = UsageClient(url, access.token)
            if not args.csv:
                print(f"Asking the usage service at {url}...", file=sys.stderr)
            report = client.usage(**query)
            waste = None
            if not args.csv and not args.no_waste:
                days = max(1.0, (report["until"] - report["since"]) / 86400)
                waste = client.waste(days=round(days, 3), user=args.user)
    except UsageError as e:
        raise CLIError(e.message) from None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([args.by, "cpu_seconds", *COLUMNS, "currency"])
        for row in report["rows"]:
            writer.writerow(
                [row["key"], row["cpu_seconds"], *(row[c] for c in COLUMNS), report["currency"]]
            )
        return 0
    print_table(report)
    if waste is not None:
        print_waste(waste)
    return 0


def add_parser(subparsers) -> None:
    """Register ``shipyard usage report`` on the main parser's subparsers."""
    usage = subparsers.add_parser("usage", help="resource usage, its cost, and right-sizing")
    usub = usage.add_subparsers(dest="usage_command", required=True, metavar="COMMAND")
    report = usub.add_parser(
        "report", help="usage and cost by user, group, profile or object, then the waste"
    )
    report.add_argument(
        "--by",
        choices=("user", "group", "profile", "object", "kind", "day"),
        default="user",
        help="what the rows are: kind is server, run, step, replica; day is one row a UTC "
        "day, oldest first (default: user)",
    )
    report.add_argument(
        "--since", help="from: an ISO date or time (UTC), or an age: 30d, 12h (default: 30d)"
    )
    report.add_argument("--until", help="until (excluded), as --since (default: now)")
    report.add_argument("--user", help="only this user's usage (admins; a user sees their own)")
    report.add_argument("--csv", action="store_true", help="the rows as CSV, nothing else")
    report.add_argument(
        "--no-waste", action="store_true", help="leave out idle servers and right-sizing"
    )
    add_access_options(report, "usage", "SHIPYARD_USAGE_URL")
    report.set_defaults(func=cmd_report)
