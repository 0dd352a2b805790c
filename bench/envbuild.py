"""Environment build time: ``shipyard env build`` against venv + pip, on the same lock.

Both contenders install the same lock (images/ENV/requirements.lock, hash-checked,
no dependency resolution) into a new virtual environment made from the same
Python, each with its own warm cache (one uncounted build first), so the figure
is what an admin sees when rebuilding an environment, not a download speed:

- shipyard: ``shipyard env build ENV --force`` (a fresh build beside the current
  one: venv, the lock, Shipyard's wheel, the kernelspec, a check against the lock);
- pip: ``python -m venv D && D/bin/pip install --require-hashes --no-deps -r LOCK``.

Rounds alternate which goes first. The rebuild of an unchanged lock without
``--force`` (what ``shipyard up`` does on every start) is reported on its own line.

    .venv/bin/python bench/envbuild.py                 # base, 3 rounds
    .venv/bin/python bench/envbuild.py --env datascience --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub_ext.environments.catalog import default_python, get_environment  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)  # noqa: S603
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(
            f"{' '.join(argv[:6])} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="base", help="environment of images/ (default: base)")
    parser.add_argument("--rounds", type=int, default=3, help="timed builds of each (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    env = get_environment(args.env)
    python = default_python()
    scratch = Path(tempfile.mkdtemp(prefix="sybench-envbuild-"))
    base_env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    shipyard_env = {**base_env, "SHIPYARD_ENVS_DIR": str(scratch / "envs")}
    # pip with its own cache and no site-wide pip.conf (constraints, find-links), as
    # `shipyard env build --installer pip` runs it
    pip_env = {
        **base_env,
        "PIP_CACHE_DIR": str(scratch / "pip-cache"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_CONSTRAINT": "",
        "PIP_FIND_LINKS": "",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    shipyard_cmd = [sys.executable, "-m", "hub_ext.cli", "env", "build", args.env]

    def shipyard_build() -> float:
        return timed([*shipyard_cmd, "--force"], shipyard_env)

    def pip_build(n: int) -> float:
        target = scratch / f"pip-{n}"
        started = time.perf_counter()
        timed([python, "-m", "venv", str(target)], pip_env)
        install = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        install += ["--require-hashes", "--no-deps", "-r", str(env.lock_path)]
        timed(install, pip_env)
        elapsed = time.perf_counter() - started
        shutil.rmtree(target)
        return elapsed

    samples: dict[str, list[float]] = {"shipyard": [], "pip": []}
    try:
        print(f"warming both caches with one uncounted build of {args.env}", file=sys.stderr)
        shipyard_build()
        pip_build(0)
        for i in range(args.rounds):
            order = ["shipyard", "pip"] if i % 2 == 0 else ["pip", "shipyard"]
            times = {k: shipyard_build() if k == "shipyard" else pip_build(i + 1) for k in order}
            for k, v in times.items():
                samples[k].append(v)
            print(
                f"round {i + 1}/{args.rounds}: shipyard {times['shipyard']:.2f}s, "
                f"pip {times['pip']:.2f}s",
                file=sys.stderr,
            )
        reuse = timed(shipyard_cmd, shipyard_env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = med["pip"] / med["shipyard"]
    result = {
        "environment": args.env,
        "packages": len(env.packages()),
        "rounds": args.rounds,
        "shipyard_env_build_force_s": samples["shipyard"],
        "venv_pip_install_s": samples["pip"],
        "median_shipyard_s": med["shipyard"],
        "median_pip_s": med["pip"],
        "speedup": ratio,
        "unchanged_lock_rebuild_s": reuse,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\nenvironment {args.env}: {result['packages']} packages, {args.rounds} round(s)")
    print(f"{'contender':44} {'median':>8} {'min':>8} {'max':>8}")
    for key, label in (
        ("shipyard", "shipyard env build --force (warm cache)"),
        ("pip", "python -m venv + pip install -r lock (warm)"),
    ):
        s = samples[key]
        print(f"{label:44} {med[key]:7.2f}s {min(s):7.2f}s {max(s):7.2f}s")
    print(f"{'shipyard env build, lock unchanged (reuse)':44} {reuse:7.2f}s")
    print(f"\nspeed-up of shipyard over venv + pip: {ratio:.1f}x (target: at least 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
