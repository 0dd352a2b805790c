"""What a configurable trait's help must give, for the tests that check every trait's."""

from __future__ import annotations

import textwrap


def help_problem(trait) -> str | None:
    """Why a trait's help is not good enough, or None."""
    text = textwrap.dedent(trait.help or "").strip()
    if not text:
        return "has no help"
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return f"has a one-line help ({text!r}); add detail and an example"
    return None
