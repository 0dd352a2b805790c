"""The README says what happens: its commands exist with the options it names, its paths are the defaults.

A newcomer follows the README before anything else; a command it lists that the
CLI does not know, or a folder where nothing is written, is the first surprise
they meet. These checks read the README and ask the code.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hub_ext.cli.main import build_parser
from hub_ext.services.scheduler.app import SchedulerService

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _table_commands() -> list[tuple[list[str], list[str]]]:
    """(command words, options) of each row of the README's command table.

    ``jobs list|run|logs|output`` is four commands; ``models status NAME|rollback NAME
    [--to V]`` gives ``--to`` to ``rollback`` only.
    """
    rows = []
    for cell in re.findall(r"^\| `(shipyard [^`]+)` \|", README, re.M):
        _, group, *rest = cell.replace("\\|", "|").split(" ", 2)
        for alternative in " ".join(rest).split("|") if rest else [""]:
            words = alternative.split()
            options = [w.strip("[]") for w in words if w.lstrip("[").startswith("--")]
            sub = [w for w in words[:1] if not w.lstrip("[").startswith("-")]
            rows.append(([group, *sub], options))
    return rows


@pytest.mark.parametrize("words, options", _table_commands(), ids=lambda v: " ".join(v) or "-")
def test_every_command_in_the_readme_exists_with_its_options(words, options):
    parser = build_parser()
    for word in words:
        if word.isupper() or word.endswith("…"):  # NAME, ENV…: an argument, not a command
            break
        choices = _subcommands(parser)
        assert word in choices, f"README lists `shipyard {' '.join(words)}`; the CLI has no {word}"
        parser = choices[word]
    known = {s for a in parser._actions for s in a.option_strings}
    for option in options:
        assert option.split()[0] in known, f"`shipyard {' '.join(words)}` has no {option}"


def test_the_run_outputs_folder_is_where_runs_write(monkeypatch):
    """The README's `/var/lib/shipyard/runs/<run id>/` with `run.log` and `output/`."""
    from hub_ext.services.scheduler import worker

    monkeypatch.delenv("SHIPYARD_RUNS_DIR", raising=False)
    monkeypatch.delenv("SHIPYARD_INSTANCE", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    runs_dir = SchedulerService().runs_dir
    assert f"`{runs_dir}/<run id>/`" in README
    source = Path(worker.__file__).read_text()
    assert "folder = self.runs_dir / run.id" in source
    assert 'log_path=folder / "run.log"' in source and 'output_dir=folder / "output"' in source
    assert "`run.log`, `output/`" in README
    assert "/runs/<you>/" not in README


def test_the_readme_says_how_people_log_in():
    assert "Nobody shares a password" in README
    assert "shipyard users add NAME" in README
    assert "/hub/signup" in README
