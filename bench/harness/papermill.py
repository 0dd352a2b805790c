"""papermill on its own, the baseline of the latency and per-run benchmarks.

Two ways of running the bench notebook with papermill in the same ``base`` environment as
Shipyard's runs, as root and outside any hub:

- :meth:`Papermill.cold_cli`: ``python -m papermill``, timed from starting the process to
  the first cell's start, what a cron line or a CI step pays for every notebook;
- :meth:`Papermill.warm_loop`: ``papermill.execute_notebook`` called again and again in one
  Python process that already imported papermill (each call still starts its own kernel),
  the cheapest way papermill runs notebooks one after the other;

and, for :mod:`bench.pipeline`, :class:`PapermillPipeline` (:meth:`Papermill.pipeline`):
the steps of a pipeline one after the other by ``papermill.execute_notebook`` in one such
process, handing each step's recorded values and files on to the steps after it as
Shipyard's engine does. The process stays up between passes, and each pass is asked for
when the bench wants it, so the passes can alternate with Shipyard's runs and both sides
see the same load on a shared machine.

All run in a child process so that the bench's own imports (the hub's, the client's) do not
count, and so that the environment's Python is the one timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .notebook import first_cell_start, notebook

#: The child of :class:`PapermillPipeline`: one pass per line read on stdin, its result as
#: one line on stdout after :data:`PASS_MARK`. Each pass gets a fresh workspace; a step
#: gets the pipeline's parameters, then its own, then its inputs (a recorded value, or a
#: file's path in the workspace), the order of ``engine.step_parameters``; its notebook's
#: ``output()`` and ``workspace()`` read the two variables a Shipyard step gets, which the
#: kernel inherits from this process.
PIPELINE_PASSES = """\
import json, os, sys, time
from datetime import datetime
from pathlib import Path
import papermill
plan = json.loads(Path(sys.argv[1]).read_text())
root = Path(sys.argv[2])
for i, _ in enumerate(sys.stdin):
    space = root / f"workspace-{i}"
    (space / ".outputs").mkdir(parents=True)
    outputs, steps = {}, {}
    started = time.perf_counter()
    for step in plan["steps"]:
        values = {**plan["parameters"], **step["parameters"]}
        for name, reference in step["inputs"].items():
            _, source, kind, key = reference.split(".")
            values[name] = (
                outputs[source][key]
                if kind == "outputs"
                else str(space / plan["files"][source][key])
            )
        record = space / ".outputs" / f"{step['id']}.jsonl"
        os.environ["SHIPYARD_WORKSPACE"] = str(space)
        os.environ["SHIPYARD_OUTPUTS"] = str(record)
        begun = time.time()
        papermill.execute_notebook(
            step["notebook"], str(space / ".outputs" / f"{step['id']}.ipynb"),
            parameters=values, kernel_name="python3", progress_bar=False,
            cwd=str(Path(step["notebook"]).parent),
        )
        ended = time.time()
        first = json.loads(Path(space / ".outputs" / f"{step['id']}.ipynb").read_text())
        stamp = first["cells"][0]["metadata"]["papermill"]["start_time"]
        steps[step["id"]] = [begun, datetime.fromisoformat(stamp).timestamp(), ended]
        lines = record.read_text().splitlines() if record.exists() else []
        outputs[step["id"]] = {d["name"]: d["value"] for d in map(json.loads, lines)}
    wall = time.perf_counter() - started
    print(f"{time.time():.3f} pass {i}: {wall:.3f}s", file=sys.stderr, flush=True)
    print("%(mark)s" + json.dumps({"wall_s": wall, "steps": steps, "outputs": outputs}), flush=True)
"""
#: What starts the line of a pass's result (papermill or a kernel may print other lines).
PASS_MARK = "@@pass "
PIPELINE_PASSES = PIPELINE_PASSES.replace("%(mark)s", PASS_MARK)


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

    def pipeline(self, name: str, plan: dict) -> PapermillPipeline:
        """A process that runs the passes of ``plan`` in folder ``name`` (see the class)."""
        return PapermillPipeline(self, name, plan)


class PapermillPipeline:
    """The steps of a pipeline, one after the other, in one warm process, a pass at a time.

    The process starts with the first :meth:`run_pass` (after importing papermill, as the
    loop of :meth:`Papermill.warm_loop` does) and stays up until :meth:`close`.

    Parameters
    ----------
    papermill : Papermill
        Whose Python, environment and folder.
    name : str
        A folder name for this pipeline's notebooks, workspaces and log.
    plan : dict
        ``parameters`` (the pipeline's), ``steps`` in run order (``id``, ``notebook`` as
        nbformat JSON, ``parameters``, ``inputs`` as ``steps.<id>.<kind>.<name>``), and
        ``files`` (step id to file name to path in the workspace).
    """

    def __init__(self, papermill: Papermill, name: str, plan: dict):
        self.papermill = papermill
        self.folder = papermill.folder / name
        self.folder.mkdir()
        steps = []
        for step in plan["steps"]:
            path = self.folder / f"{step['id']}.ipynb"
            path.write_text(json.dumps(step["notebook"]))
            steps.append({**step, "notebook": str(path)})
        self.plan_file = self.folder / "plan.json"
        self.plan_file.write_text(json.dumps({**plan, "steps": steps}))
        log_dir = papermill.log_dir or self.folder
        self.log_path = log_dir / f"papermill-pipeline-{name}.log"
        self.proc: subprocess.Popen | None = None

    def run_pass(self) -> dict:
        """One pass of every step: ``wall_s`` (perf counter, first step's call to the last
        step's return), ``steps`` (id to ``[call, first cell, return]``, epoch seconds of
        its call, of papermill's start of its first cell and of the call's return) and
        ``outputs`` (id to the values it recorded)."""
        if self.proc is None:
            argv = [self.papermill.python, "-c", PIPELINE_PASSES, str(self.plan_file)]
            argv.append(str(self.folder))
            with open(self.log_path, "w") as log_file:
                self.proc = subprocess.Popen(  # noqa: S603
                    argv,
                    env=self.papermill.env,
                    cwd=self.folder,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    text=True,
                )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("pass\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(PASS_MARK):
                return json.loads(line[len(PASS_MARK) :])
        self.proc.wait()
        log = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"papermill pipeline process ended ({self.proc.returncode}):\n{log}")

    def close(self) -> None:
        """End the process (it ends when its stdin closes); again is harmless."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
