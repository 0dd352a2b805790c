"""Model serving throughput, latency and start time: Shipyard's model server against ``mlflow models serve``.

Both servers serve the same model, on the same machine, one at a time: an sklearn
``LogisticRegression`` on 4 float features, trained here on 2,000 random rows and
saved with ``mlflow.sklearn.save_model`` with its signature. Shipyard's is
``python -m hub_ext.runtime.modelserver --model-uri DIR`` with its
defaults (``--max-batch 64 --max-batch-wait-ms 2``); MLflow's is
``mlflow models serve -m DIR --env-manager local`` (FastAPI under uvicorn, one
worker, as MLflow starts it). For each server, in this order:

(a) *Start to first 200*: from starting the process to the first ``200`` of a
    ``POST /invocations`` with one row, polled every 20 ms (connection refused and
    503 count as not yet).
(b) *Warm-up*: ``--warmup`` seconds (3) of load at concurrency 8, not counted.
(c) *Single-row requests* at concurrency 1, 8 and 32: ``--duration`` seconds (8)
    each of closed-loop load with the same body, ``{"dataframe_split": {"columns":
    [...], "data": [[...]]}}``: requests/s, p50 and p99 latency, errors (non-2xx
    or socket errors; there should be none).
(d) *One 1,000-row request*: median and max latency of ``--big-requests`` (20)
    sequential ``dataframe_split`` requests of 1,000 rows.

The load generator is ``wrk`` (``apt-get install -y wrk``) with a Lua script that
sets the POST body and prints the percentiles as JSON; without ``wrk`` a Python
thread pool with one ``requests.Session`` per thread is used instead (it
saturates a core by itself, so its figures are lower for both servers), and the
output says which one ran. The machine has as many cores as ``os.cpu_count()``
says (2 here); the load generator shares them with the server, equally for both.
``--rounds`` (1) repeats everything, alternating which server goes first, and the
report keeps each figure's median over rounds.

(e) *%deploy to first 200* (``--deploy-rounds``, 3; 0 skips it): the whole path a
    scientist takes, on a real hub of the embedded config with the tracking service and
    the deployer (:class:`tests.hubtools.HubProcess`, ``sybenchd-`` accounts,
    ``shipyard-bench-deploy`` cgroups): in an IPython shell with the server extension
    loaded, ``%deploy model --name ... --input-example X --profile serving`` on a freshly
    trained model of the same shape, timed from the call to the first ``200`` of a
    one-row request through the hub's proxy with the user's token. It includes logging
    and registering the model in MLflow, the deployer's checks, starting the replica as
    the user's account in its cgroup, and loading the model there. Each round deploys a
    new endpoint. MLflow has no equivalent; its figure to compare with is (a).

Targets (issue #6): at least 3x MLflow's requests/s at concurrency 32; p99 at
concurrency 8 at most half of MLflow's; %deploy to first 200 under 3 s.

Run it from the repository root::

    .venv/bin/python bench/serving.py
    .venv/bin/python bench/serving.py --rounds 2 --duration 10 --json /tmp/serving.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/serving.py`
    sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from bench.harness.deploy import COLUMNS, ONE_ROW, first_200, services_up, train_model  # noqa: E402
from tests.hubtools import free_port  # noqa: E402

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def make_model(workdir: Path) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model, X = train_model()
    model_dir = workdir / "model"
    mlflow.sklearn.save_model(model, model_dir, signature=infer_signature(X, model.predict(X)))
    return model_dir


class Server:
    """One server process, started in its own session so the whole group can be stopped."""

    def __init__(self, kind: str, model_dir: Path, log_path: Path):
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        venv_bin = str(Path(sys.executable).parent)
        if kind == "shipyard":
            cmd = [sys.executable, "-m", "hub_ext.runtime.modelserver",
                   "--model-uri", str(model_dir), "--port", str(self.port)]  # fmt: skip
        else:
            cmd = [os.path.join(venv_bin, "mlflow"), "models", "serve", "-m", str(model_dir),
                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def first_200(self, timeout: float = 120) -> float:
        session = requests.Session()
        headers = {"Content-Type": "application/json"}
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}")
            try:
                r = session.post(
                    self.url + "/invocations", data=ONE_ROW, headers=headers, timeout=5
                )
                if r.status_code == 200:
                    return time.perf_counter() - self.t0
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.kind} server gave no 200 in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def load_wrk(url: str, concurrency: int, duration: float, script: Path) -> dict:
    threads = min(concurrency, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url + "/invocations",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON ") :])
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": raw["errors"],
    }


def load_threads(url: str, concurrency: int, duration: float, script: Path | None = None) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def client():
        nonlocal errors
        session = requests.Session()
        mine, bad = [], 0
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                ok = session.post(
                    url + "/invocations", data=ONE_ROW, headers={"Content-Type": "application/json"}
                ).ok
            except requests.RequestException:
                ok = False
            mine.append(time.perf_counter() - t)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors += bad

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "requests": len(latencies),
        "errors": errors,
    }


def big_request(url: str, n: int) -> dict:
    import numpy as np

    rows = np.random.default_rng(1).normal(size=(1000, len(COLUMNS))).round(6).tolist()
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}})
    session = requests.Session()
    times = []
    for _ in range(n + 1):
        t = time.perf_counter()
        r = session.post(
            url + "/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        r.raise_for_status()
        assert len(r.json()["predictions"]) == 1000
        times.append(time.perf_counter() - t)
    times = times[1:]  # the first is a warm-up
    return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000}


def measure(kind: str, model_dir: Path, workdir: Path, args, load, script) -> dict:
    server = Server(kind, model_dir, workdir / f"{kind}.log")
    try:
        result = {"start_to_first_200_s": server.first_200()}
        load(server.url, 8, args.warmup, script)
        for c in (1, 8, 32):
            result[f"c{c}"] = load(server.url, c, args.duration, script)
        result["rows_1000"] = big_request(server.url, args.big_requests)
        return result
    finally:
        server.stop()


SERVING_PROFILES = """
profiles:
  - slug: serving
    display_name: Serving
    default: true
    environment: model-server
    cpu_limit: 1
    mem_limit: 1Gi
"""
DEPLOY_TRAIN = f"""
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(2000, 4)), columns={COLUMNS!r})
model = LogisticRegression().fit(X, (X["a"] + X["b"] > 0).astype(int))
"""


def deploy_to_first_200(workdir: Path, rounds: int) -> list[float]:
    """Seconds from ``%deploy`` to the endpoint's first 200, once per round (see (e))."""
    from IPython.core.interactiveshell import InteractiveShell

    from bench.harness.envs import build_environment
    from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts, wait_for

    build_environment("model-server")
    workdir.mkdir(parents=True, exist_ok=True)
    profiles = workdir / "profiles.yaml"
    profiles.write_text(SERVING_PROFILES)
    homes = workdir / "homes"
    homes.mkdir()
    workdir.chmod(0o755)
    homes.chmod(0o755)
    prefix, parent = "sybenchd-", "shipyard-bench-deploy"
    hub = HubProcess(
        data_dir=workdir / "hub",
        profiles_file=profiles,
        home_root=homes,
        account_prefix=prefix,
        cgroup_parent=parent,
        extra_env={"SHIPYARD_TRACKING": "1", "SHIPYARD_DEPLOYER": "1"},
    )
    saved = dict(os.environ)
    try:
        hub.start()
        token = hub.create_user("bench")
        tracking, deployer = f"{hub.url}/services/tracking", f"{hub.url}/services/deployer"
        wait_for(
            lambda: services_up(hub.url, token), 240, 0.5, "the tracking service and the deployer"
        )
        os.environ.update(
            {
                "JUPYTERHUB_API_TOKEN": token,
                "JUPYTERHUB_USER": "bench",
                "SHIPYARD_DEPLOYER_URL": deployer,
                "MLFLOW_TRACKING_URI": tracking,
                "MLFLOW_TRACKING_TOKEN": token,
                "MLFLOW_EXPERIMENT_NAME": "bench/Default",
                "SHIPYARD_SPOOL_DIR": str(workdir / "spool"),
            }
        )
        shell = InteractiveShell.instance()
        shell.config.ShipyardMagics.poll_interval = 0.05
        shell.run_line_magic("load_ext", "server_ext")
        shell.run_cell(DEPLOY_TRAIN)
        times = []
        for r in range(rounds):
            name = f"bench{r}"
            url = f"{deployer}/models/bench/{name}/invocations"
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # what the magic prints
                shell.run_line_magic(
                    "deploy", f"model --name {name} --input-example X --profile serving"
                )
            times.append(first_200(url, token, t0))
            print(f"%deploy round {r + 1}: {times[-1]:.2f}s", file=sys.stderr, flush=True)
        return times
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if hub.proc is not None:
            hub.stop()
        remove_test_accounts(prefix)
        remove_cgroups(parent)
        remove_cgroups(f"{parent}-models")  # the deployer's replicas: <cgroup_parent>-models


def median_of(rounds: list[dict]) -> dict:
    def merge(values):
        if isinstance(values[0], dict):
            return {k: merge([v[k] for v in values]) for k in values[0]}
        return statistics.median(values)

    return merge(rounds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds of load per concurrency")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of uncounted load first")
    p.add_argument("--big-requests", type=int, default=20, help="1,000-row requests to time")
    p.add_argument(
        "--rounds", type=int, default=1, help="rounds, alternating which server is first"
    )
    p.add_argument(
        "--deploy-rounds", type=int, default=3, help="%%deploy-to-first-200 rounds (0 skips)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args()

    wrk = shutil.which("wrk")
    generator = "wrk" if wrk else "python threads + requests (wrk not installed)"
    load = load_wrk if wrk else load_threads
    results: dict[str, list[dict]] = {"shipyard": [], "mlflow": []}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        model_dir = make_model(workdir)
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT % ONE_ROW)
        for r in range(args.rounds):
            order = ["mlflow", "shipyard"] if r % 2 == 0 else ["shipyard", "mlflow"]
            for kind in order:
                print(f"round {r + 1}: {kind} ...", file=sys.stderr, flush=True)
                results[kind].append(measure(kind, model_dir, workdir, args, load, script))
        deploys = []
        if args.deploy_rounds > 0:
            print("%deploy to first 200 ...", file=sys.stderr, flush=True)
            deploys = deploy_to_first_200(workdir / "deploy", args.deploy_rounds)

    s, m = median_of(results["shipyard"]), median_of(results["mlflow"])
    print(f"load generator: {generator}; {os.cpu_count()} cores; {args.rounds} round(s), "
          f"{args.duration:g}s per point")  # fmt: skip
    print(f"{'':28}{'shipyard':>22}{'mlflow models serve':>24}")
    for c in (1, 8, 32):
        for key, unit in (("rps", "req/s"), ("p50_ms", "ms"), ("p99_ms", "ms")):
            label = f"c={c} {key.replace('_ms', '')} ({unit})"
            print(f"{label:28}{s[f'c{c}'][key]:>22.1f}{m[f'c{c}'][key]:>24.1f}")
        errs = f"{s[f'c{c}']['errors']:.0f} / {m[f'c{c}']['errors']:.0f}"
        print(f"{f'c={c} errors':28}{errs:>46}")
    print(
        f"{'1,000 rows median (ms)':28}{s['rows_1000']['median_ms']:>22.1f}{m['rows_1000']['median_ms']:>24.1f}"
    )
    print(
        f"{'1,000 rows max (ms)':28}{s['rows_1000']['max_ms']:>22.1f}{m['rows_1000']['max_ms']:>24.1f}"
    )
    print(
        f"{'start to first 200 (s)':28}{s['start_to_first_200_s']:>22.2f}{m['start_to_first_200_s']:>24.2f}"
    )
    deploy_s = statistics.median(deploys) if deploys else None
    if deploys:
        spread = f"(min {min(deploys):.2f}, max {max(deploys):.2f}, n {len(deploys)})"
        print(f"{'%deploy to first 200 (s)':28}{deploy_s:>22.2f}{'-':>24}  {spread}")
    ratios = {
        "rps_c32_vs_mlflow": s["c32"]["rps"] / m["c32"]["rps"],
        "p99_c8_vs_mlflow": s["c8"]["p99_ms"] / m["c8"]["p99_ms"],
        "start_to_first_200_s": s["start_to_first_200_s"],
        "deploy_to_first_200_s": deploy_s,
    }
    checks = {
        "rps_c32_vs_mlflow": ratios["rps_c32_vs_mlflow"] >= 3,
        "p99_c8_vs_mlflow": ratios["p99_c8_vs_mlflow"] <= 0.5,
        "start_to_first_200_s": ratios["start_to_first_200_s"] < 3,
        "deploy_to_first_200_s": deploy_s is not None and deploy_s < 3,
    }
    print(f"targets: req/s at c=32 {ratios['rps_c32_vs_mlflow']:.1f}x mlflow (>= 3x: "
          f"{'met' if checks['rps_c32_vs_mlflow'] else 'MISSED'}); "
          f"p99 at c=8 {ratios['p99_c8_vs_mlflow']:.2f}x mlflow (<= 0.5x: "
          f"{'met' if checks['p99_c8_vs_mlflow'] else 'MISSED'}); "
          f"start to first 200 {ratios['start_to_first_200_s']:.2f}s; "
          f"%deploy to first 200 "
          + (f"{deploy_s:.2f}s (< 3s: {'met' if checks['deploy_to_first_200_s'] else 'MISSED'})"
             if deploy_s is not None else "not measured"))  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "generator": generator,
                    "cpus": os.cpu_count(),
                    "shipyard": s,
                    "mlflow": m,
                    "rounds": results,
                    "deploy_to_first_200_s": deploys,
                    "ratios": ratios,
                    "targets_met": checks,
                },  # fmt: skip
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
