"""papermill on its own, the baseline of the latency and per-run benchmarks.

Two ways of running the bench notebook with papermill in the same ``base`` environment as
Shipyard's runs, as root and outside any hub:

- :meth:`Papermill.cold_cli`: ``python -m papermill``, timed from starting the process to
  the first cell's start, what a cron line or a CI step pays for every notebook;
- :meth:`Papermill.warm_loop`: ``papermill.execute_notebook`` called again and again in one
  Python process that already imported papermill (each call still starts its own kernel),
  the cheapest way papermill runs notebooks one after the other.

Both run in a child process so that the bench's own imports (the hub's, the client's) do not
count, and so that the environment's Python is the one timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .notebook import first_cell_start, notebook


class Papermill:
    """The same notebook with papermill in the ``base`` environment, as root, outside any hub."""

    def __init__(self, scratch: Path, python: Path, env_bin: Path, log_dir: Path | None):
        self.log_dir = log_dir
        self.folder = scratch / "papermill"
        self.folder.mkdir()
        self.input = self.folder / "bench.ipynb"
        self.input.write_text(json.dumps(notebook()))
        self.python = str(python)
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
            "PATH": os.pathsep.join([str(env_bin), os.environ.get("PATH", "")]),
            "VIRTUAL_ENV": str(env_bin.parent),
        }

    def cold_cli(self) -> float:
        """Seconds from starting ``python -m papermill`` to its first cell's start."""
        output = self.folder / "cli-out.ipynb"
        argv = [self.python, "-m", "papermill", str(self.input), str(output)]
        argv += ["--log-output", "--no-progress-bar", "--log-level", "INFO"]
        started = time.time()
        proc = subprocess.run(  # noqa: S603
            argv, env=self.env, cwd=self.folder, capture_output=True, text=True
        )
        if proc.returncode:
            raise RuntimeError(f"papermill failed:\n{proc.stderr[-3000:]}")
        return first_cell_start(json.loads(output.read_text())) - started

    def warm_loop(self, runs: int) -> list[float]:
        """``runs`` timed ``papermill.execute_notebook`` calls in one process (one uncounted first)."""
        script = (
            "import json, sys, time\n"
            "import papermill\n"
            "src, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
            "times = []\n"
            "for i in range(runs + 1):\n"
            "    t = time.perf_counter()\n"
            "    papermill.execute_notebook(src, out, progress_bar=False)\n"
            "    times.append(time.perf_counter() - t)\n"
            "    print(f'{time.time():.3f} call {i}: {times[-1]:.3f}s', file=sys.stderr)\n"
            "print(json.dumps(times[1:]))\n"
        )
        output = self.folder / "loop-out.ipynb"
        argv = [self.python, "-c", script, str(self.input), str(output), str(runs)]
        proc = subprocess.run(  # noqa: S603
            argv, env=self.env, cwd=self.folder, capture_output=True, text=True
        )
        if self.log_dir:
            (self.log_dir / "papermill-loop.log").write_text(proc.stderr)
        if proc.returncode:
            raise RuntimeError(f"papermill loop failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
