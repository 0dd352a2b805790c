"""GPU smoke check for a machine with NVIDIA GPUs (CI has none, so pytest does not collect it).

Checks, with the real driver, what the suite can only check with declared device
indices: that :func:`hub_ext.gpus.detect_gpus` finds the GPUs, that the allocator
never hands one GPU to two servers, and that the ``CUDA_VISIBLE_DEVICES`` the
spawner sets really hides or shows the GPUs to a CUDA program (PyTorch, when it
is installed) started with it.

    python3 tests/gpu_smoke.py          # exit 0 when every check holds
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub_ext.gpus import GpuAllocator, GpuUnavailable, detect_gpus  # noqa: E402

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

    for failure in failures:
        print(f"FAIL: {failure}")
    print("OK" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
