"""The notebook every contender runs, and the clock reading every latency figure uses.

Four code cells, the first tagged ``parameters``: no parameters are passed, so papermill
injects no cell and the first cell is the same everywhere. Its start time is papermill's
own ``cells[0].metadata.papermill.start_time`` (ISO, UTC, on this machine's clock), which
Shipyard's runs, the papermill CLI and jupyter-scheduler all write, so the three are read
with one clock.
"""

from __future__ import annotations

from datetime import datetime

CELLS = [
    ("n = 10", ["parameters"]),
    ("import math\nx = sum(range(n))", []),
    ("y = math.sqrt(x)", []),
    ("print(x, round(y, 3))", []),
]


def notebook(code: list[tuple[str, list[str]]] = CELLS) -> dict:
    """The bench notebook (or the ``(source, tags)`` cells of ``code``) as nbformat 4 JSON.

    Its kernelspec is ``python3``.
    """
    cells = [
        {
            "cell_type": "code",
            "metadata": {"tags": tags},
            "source": source,
            "outputs": [],
            "execution_count": None,
        }
        for source, tags in code
    ]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def first_cell_start(nb: dict) -> float:
    """Epoch seconds at which papermill started the notebook's first cell."""
    stamp = nb["cells"][0]["metadata"]["papermill"]["start_time"]
    return datetime.fromisoformat(stamp).timestamp()
