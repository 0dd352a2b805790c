"""The cost of the model server's data-quality checks: the checker alone, and a scoring call with them on and off.

The model is a scikit-learn pipeline (one-hot ``city``, then a
``LogisticRegression``) on three inputs, ``age`` (double), ``visits``
(long) and ``city`` (string), trained here on 2,000 random rows and saved by
``mlflow.sklearn.save_model`` with its signature; the training summary is
``hub_ext.runtime.drift.summarize`` of the same rows.

(a) *The checker*: ``hub_ext.runtime.quality.check`` on frames of 1, 8, 64 and
    1,000 training rows, as the model server builds them (the signature's dtypes):
    median and p99 of ``--calls`` calls each, in microseconds.
(b) *A scoring call*: two model servers of that model, both with the training
    summary, one with ``--data-quality on`` (the default) and one with ``off``;
    ``--requests`` one-row ``dataframe_split`` requests to each, sent one at a time
    and alternating between the two servers (so that whatever else the machine does
    falls on both alike); p50 and p99 of each as the client sees them, and the
    difference of the p50s. The same with 64-row requests.

Target (issue 19 point 6): well under 0.1 ms added at p50 for a small frame.

Run it from the repository root::

    .venv/bin/python bench/data_quality.py [--requests 2000] [--calls 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub_ext.runtime import drift  # noqa: E402
from hub_ext.runtime.quality import Column, Expectations, check  # noqa: E402
from tests.hubtools import free_port, wait_for  # noqa: E402

CITIES = ["paris", "lyon", "nice", "lille", "brest"]


def training_rows(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 90, size=n),
            "visits": rng.integers(0, 20, size=n),
            "city": pd.Series(rng.choice(CITIES, size=n), dtype=object),
        }
    )


def make_model(workdir: Path) -> tuple[Path, Path]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = training_rows()
    y = (X.age + 2 * X.visits > 70).astype(int)
    prep = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))])
    model.fit(X, y)
    model_dir = workdir / "model"
    mlflow.sklearn.save_model(
        model,
        model_dir,
        signature=infer_signature(X, model.predict(X)),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    summary = workdir / "summary.json"
    summary.write_text(json.dumps(drift.summarize(X)))
    return model_dir, summary


def checker_figures(summary: dict, calls: int) -> dict:
    signature = [Column("age", "double"), Column("visits", "long"), Column("city", "string")]
    expect = Expectations.build(signature, summary)
    X = training_rows()
    out = {}
    for rows in (1, 8, 64, 1000):
        # as ModelInputs.frame builds them: one numpy array per column, strings as objects
        frame = pd.DataFrame(
            {
                "age": X.age.to_numpy()[:rows],
                "visits": X.visits.to_numpy()[:rows],
                "city": np.array(X.city.tolist()[:rows], dtype=object),
            }
        )
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            check(frame, expect)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[rows] = {
            "p50_us": round(times[len(times) // 2] * 1e6, 1),
            "p99_us": round(times[int(len(times) * 0.99)] * 1e6, 1),
        }
    return out


class Server:
    def __init__(self, model_dir: Path, summary: Path, quality: str, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub_ext.runtime.modelserver", "--model-uri",
             str(model_dir), "--port", str(self.port), "--training-summary", str(summary),
             "--data-quality", quality, *extra],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},  # no thread pool start per predict
        )  # fmt: skip

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {self.proc.returncode}")
        try:
            return requests.get(self.url + "/health", timeout=2).json()["status"] == "ready"
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


def scoring_figures(on: Server, off: Server, n: int, rows: int) -> dict:
    X = training_rows()
    body = json.dumps(
        {"dataframe_split": {"columns": list(X.columns), "data": X.iloc[:rows].values.tolist()}}
    )
    headers = {"Content-Type": "application/json"}
    sessions = {"on": requests.Session(), "off": requests.Session()}
    urls = {"on": on.url + "/invocations", "off": off.url + "/invocations"}
    times: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(n + 50):
        for which in ("on", "off") if i % 2 else ("off", "on"):
            t0 = time.perf_counter()
            r = sessions[which].post(urls[which], data=body, headers=headers, timeout=30)
            elapsed = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 50:  # the first 50 warm up
                times[which].append(elapsed * 1000)
    out = {}
    for which, values in times.items():
        values.sort()
        out[which] = {
            "p50_ms": round(statistics.median(values), 3),
            "p99_ms": round(values[int(len(values) * 0.99)], 3),
        }
    out["added_p50_ms"] = round(out["on"]["p50_ms"] - out["off"]["p50_ms"], 3)
    issues = requests.get(on.url + "/stats", timeout=10).json()
    out["rows_checked"] = issues.get("rows_checked")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="requests to each server")
    p.add_argument("--calls", type=int, default=5000, help="checker calls per frame size")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dq-") as tmp:
        workdir = Path(tmp)
        model_dir, summary_path = make_model(workdir)
        summary = json.loads(summary_path.read_text())
        results: dict = {"checker": checker_figures(summary, args.calls)}
        print("checker (3 columns), microseconds per call:")
        for rows, fig in results["checker"].items():
            print(f"  {rows:5d} rows: p50 {fig['p50_us']:8.1f}  p99 {fig['p99_us']:8.1f}")
        on = Server(model_dir, summary_path, "on", workdir / "on.log")
        off = Server(model_dir, summary_path, "off", workdir / "off.log")
        try:
            wait_for(lambda: on.ready() and off.ready(), 180, 0.1, "both model servers")
            for rows in (1, 64):
                fig = scoring_figures(on, off, args.requests, rows)
                results[f"scoring_{rows}_rows"] = fig
                print(
                    f"scoring call, {rows} row(s), {args.requests} requests each: "
                    f"checks on p50 {fig['on']['p50_ms']:.3f} ms (p99 {fig['on']['p99_ms']:.3f}), "
                    f"off p50 {fig['off']['p50_ms']:.3f} ms (p99 {fig['off']['p99_ms']:.3f}); "
                    f"added at p50 {fig['added_p50_ms'] * 1000:.0f} us"
                )
        finally:
            on.stop()
            off.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
