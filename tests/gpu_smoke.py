"""GPU smoke check for a machine with NVIDIA GPUs (CI has none, so pytest does not collect it).

Checks, with the real driver, what the suite can only check with declared device
indices: that :func:`hub_ext.host.gpus.detect_gpus` finds the GPUs, that the allocator
never hands one GPU to two servers, that the ``CUDA_VISIBLE_DEVICES`` the
spawner sets really hides or shows the GPUs to a CUDA program (PyTorch, when it
is installed) started with it, and (as root) that the kernel isolates them: a
second user's process in its own cgroup cannot open the first user's GPU even
with ``CUDA_VISIBLE_DEVICES`` cleared (#14, point 9; cgroup v1 devices
controller or the v2 BPF filter, whichever the host has).

    sudo python3 tests/gpu_smoke.py     # exit 0 when every check holds
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub_ext.host.cgroups import CgroupPlacementError, Limits, make_driver  # noqa: E402
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable, detect_gpus, device_node  # noqa: E402

PROBE = (
    "import json, torch; print(json.dumps({'count': torch.cuda.device_count(), "
    "'names': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}))"
)


def visible_to_cuda(devices: str) -> dict | None:
    """What a CUDA program started with CUDA_VISIBLE_DEVICES=devices sees (None: no torch)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    if out.returncode and "No module named 'torch'" in out.stderr:
        return None
    if out.returncode:
        raise SystemExit(f"CUDA probe failed: {out.stderr[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: Opens each path given and prints "path ok" or "path <errno>".
OPEN_EACH = (
    "import sys\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        open(p, 'rb').close()\n"
    "        print(p, 'ok')\n"
    "    except OSError as e:\n"
    "        print(p, e.errno)\n"
)
NOBODY = 65534


def in_cgroup(driver, name: str, argv: list[str], uid: int | None = None, **kwargs):
    """Run ``argv`` in cgroup ``name`` (as ``uid`` if given), CUDA_VISIBLE_DEVICES cleared."""
    join = driver.preexec(name)

    def preexec() -> None:
        join()
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES",)}
    return subprocess.run(  # noqa: S603
        argv, env=env, preexec_fn=preexec, capture_output=True, text=True, timeout=120, **kwargs
    )


def check_isolation(gpus: list[str], failures: list[str]) -> None:
    """Two users' cgroups, the first with GPU ``gpus[0]``: the second cannot open it."""
    if os.geteuid() != 0:
        failures.append("isolation not checked: run as root (it creates cgroups)")
        return
    try:
        driver = make_driver("auto", "shipyard-gpu-smoke")
    except CgroupPlacementError as e:  # systemd, but not run from a unit of its own
        failures.append(str(e))
        return
    print(f"cgroup driver: {driver.kind} (base {driver.base or '/'})")
    first, second = tuple(gpus[:1]), tuple(gpus[1:2])
    mount = Path("/sys/fs/cgroup")
    layout = (
        "v2"
        if (mount / "cgroup.controllers").exists()
        else "hybrid"
        if (mount / "unified").is_dir()
        else "v1"
    )
    print(f"cgroup layout: {layout}; kernel {os.uname().release}")
    try:
        try:
            driver.create("first", Limits(gpus=first))
            driver.create("second", Limits(gpus=second))
        except OSError as e:  # e.g. v2 in a container whose root cgroup holds processes
            failures.append(f"the {driver.kind} driver cannot create cgroups here: {e}")
            return
        if not driver.filters_devices:
            failures.append(f"the {driver.kind} driver cannot filter devices on this host")
            return
        node = str(device_node(first[0]))
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        mine = in_cgroup(driver, "first", [python, "-c", OPEN_EACH, node], NOBODY)
        theirs = in_cgroup(driver, "second", [python, "-c", OPEN_EACH, node], NOBODY)
        print(f"{node} from the first user's cgroup: {mine.stdout.strip()} {mine.stderr[-300:]}")
        print(
            f"{node} from the second user's cgroup: {theirs.stdout.strip()} {theirs.stderr[-300:]}"
        )
        if mine.stdout.strip() != f"{node} ok":
            failures.append(f"the first user cannot open its own GPU {node}: {mine.stdout}")
        if theirs.stdout.strip() != f"{node} 1":
            failures.append(f"a second user's process opened {node}: {theirs.stdout}")
        probe = in_cgroup(driver, "second", [sys.executable, "-c", PROBE])
        if "No module named 'torch'" not in probe.stderr:
            seen = probe.stdout.strip().splitlines()[-1:] or [probe.stderr.strip()[-300:]]
            print(f"CUDA in the second user's cgroup, CUDA_VISIBLE_DEVICES cleared: {seen[0]}")
            if not second and probe.returncode == 0 and json.loads(seen[0])["count"] != 0:
                failures.append("CUDA in a cgroup without GPU still sees a GPU")
    finally:
        for name in ("first", "second"):
            driver.remove(name)
        driver.remove_parent()


def main() -> int:
    failures = []
    gpus = detect_gpus()
    print(f"detect_gpus(): {gpus}")
    if not gpus:
        print("FAIL: no GPU found (is nvidia-smi on PATH?)")
        return 1

    allocator = GpuAllocator(gpus)
    owners = [f"user{i}" for i in range(len(gpus))]
    given = {owner: allocator.allocate(owner, 1) for owner in owners}
    print(f"one GPU each for {len(owners)} server(s): {given}")
    flat = [d for ids in given.values() for d in ids]
    if len(set(flat)) != len(flat):
        failures.append(f"a GPU was handed out twice: {given}")
    try:
        extra = allocator.allocate("one-too-many", 1)
        failures.append(f"a server got a GPU none was free for: {extra}")
    except GpuUnavailable as e:
        print(f"refused when all are taken: {e}")
    allocator.release(owners[0])
    again = allocator.allocate("next", 1)
    if again != given[owners[0]]:
        failures.append(f"a released GPU was not handed out again: {again}")

    hidden = visible_to_cuda("")
    if hidden is None:
        print("torch is not installed: CUDA visibility not checked")
    else:
        shown = visible_to_cuda(given[owners[0]][0])
        print(f"CUDA_VISIBLE_DEVICES='' -> {hidden}; ={given[owners[0]][0]} -> {shown}")
        if hidden["count"] != 0:
            failures.append("a server whose profile has no GPU can still see one")
        if shown["count"] != 1:
            failures.append(f"a server given one GPU sees {shown['count']}")

    check_isolation(gpus, failures)

    for failure in failures:
        print(f"FAIL: {failure}")
    print("OK" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
