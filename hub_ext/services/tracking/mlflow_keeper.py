"""``mlflow server`` that ends itself once no tracking gateway has owned it for a while.

``python -m hub_ext.services.tracking.mlflow_keeper server …`` is ``python -m mlflow
server …`` (MLflow's own command, run as is) with one thread beside it. MLflow
outlives its gateway so that a restarted gateway can adopt it
(:mod:`.mlflow_process`); this thread makes sure that it does not outlive every
gateway. It reads the record the gateways keep (``mlflow.json``, named by
``$SHIPYARD_TRACKING_MLFLOW_RECORD``), waits on the owning gateway's exit (a pidfd,
not a timer), and when for :data:`~.mlflow_process.OWNER_GRACE` seconds no running
gateway has owned this MLflow (the last one was killed and none was started, or the
record names another MLflow), it sends SIGTERM to its own process group: MLflow's
command and its uvicorn child.

A thread here rather than a separate watcher process: one process fewer to start
and to orphan, and it ends with MLflow. Rejected: ``PR_SET_PDEATHSIG`` towards the
gateway, which was used before: MLflow then died with every gateway, and each
restart of the service waited for a new MLflow (about 30 s on a loaded machine).
"""

from __future__ import annotations

import os
import runpy
import select
import signal
import sys
import threading
import time
from pathlib import Path

from hub_ext.host.process import start_time

from .mlflow_process import OWNER_GRACE, RECORD_ENV, read_record


def owner(record_path: Path, me: int) -> int | None:
    """The pid of the running gateway that owns MLflow ``me``, per the record; None if none."""
    record = read_record(record_path)
    if record is None or record.get("pid") != me:
        return None
    gateway = record.get("gateway") or {}
    pid = gateway.get("pid")
    if not isinstance(pid, int) or start_time(pid) != gateway.get("started"):
        return None
    return pid


def wait_exit(pid: int, timeout: float) -> None:
    """Return when process ``pid`` exits, or after ``timeout`` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel), or it is gone already
        time.sleep(min(timeout, 1.0))
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def watch(record_path: Path, grace: float = OWNER_GRACE) -> None:
    me = os.getpid()
    unowned_since = time.monotonic()  # a new MLflow is owned once its gateway records it
    while True:
        gateway = owner(record_path, me)
        if gateway is not None:
            # re-read now and then all the same: the record may change under a live owner
            wait_exit(gateway, 30)
            unowned_since = time.monotonic()
            continue
        if time.monotonic() - unowned_since > grace:
            print(
                f"No tracking gateway has owned this MLflow for {grace:.0f} s: stopping it",
                file=sys.stderr,
                flush=True,
            )
            os.killpg(os.getpgrp(), signal.SIGTERM)
            return
        time.sleep(1)


def main() -> None:
    record_path = Path(os.environ.pop(RECORD_ENV))
    threading.Thread(target=watch, args=(record_path,), name="keeper", daemon=True).start()
    sys.argv = ["mlflow", *sys.argv[1:]]
    runpy.run_module("mlflow", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
