"""The command line of the benches that compare hubs side by side in rounds.

``bench/spawn.py`` (Shipyard's spawner against the stock one) and
``bench/containers.py`` (the container placement against processes) take the same
options: how many measured rounds, whether to print JSON too, and where to keep the
hubs' logs. They differ only in what a round measures and how many hubs keep logs,
which the help texts say.

Rejected alternative: ``bench/containers.py`` importing ``bench/spawn.py``'s parser.
Its help texts speak of spawners and two hubs, and a change for one bench would reach
the other unseen; here both call one function with their own words.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_rounds(
    argv: list[str] | None, description: str, rounds_help: str, logs_help: str
) -> argparse.Namespace:
    """``--rounds`` (10, at least 1), ``--json`` and ``--log-dir`` from ``argv``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments; None reads ``sys.argv``.
    description : str
        The bench's one-line description (its module docstring's first line).
    rounds_help : str
        What one round measures, for ``--rounds``'s help.
    logs_help : str
        Whose logs ``--log-dir`` keeps, for its help.

    Returns
    -------
    argparse.Namespace
        ``rounds`` (int), ``json`` (bool), ``log_dir`` (Path or None). A count of
        rounds under 1 exits with argparse's usage error.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=10, help=f"{rounds_help} (10)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--log-dir", type=Path, help=f"keep {logs_help} in this directory")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args
