"""A papermill process with its kernel already started, waiting for the one run it will serve.

Run as ``<environment python> -m hub_ext.runtime.warm [FOLDER]`` by
:class:`~.local.LocalExecutor`'s pool (:mod:`.pool`), exactly where and as whom
a cold ``python -m papermill`` would run: the run owner's account, the
profile's environment and limits, an environment built from nothing. Every
built environment has Shipyard itself installed, with papermill and ipykernel.

The protocol, on the process's own pipes:

1. it imports papermill, nbclient and jupyter_client, starts **one** kernel
   (the environment's ``python3``) with jupyter_client's ``AsyncKernelManager``,
   listening on Unix sockets in FOLDER (:func:`kernel_config`),
   waits until the kernel answers, and prints :data:`READY` on a line of its own;
2. it reads **one** JSON line from stdin (:func:`request_line` writes it)::

       {"input": path, "output": path, "parameters_file": path, "cwd": path,
        "env": {name: value}, "execution_timeout": seconds or null}

   ``env`` is what the run adds to the environment the process started with
   (run id, result file, the owner's tracking settings);
3. it applies ``env`` and ``cwd`` to itself and to the kernel, then runs
   ``papermill.execute_notebook`` on that kernel with the CLI's settings
   (``--log-output --log-level INFO --no-progress-bar``, parameters read from
   the YAML file with papermill's own loader), so its log lines, its saved
   notebook and its exit status are the CLI's: 0 when the notebook ran, 1 on
   any error (a failing cell's notebook is saved by papermill before), and
   :data:`DEAD_KERNEL_EXIT` (138) when the kernel died;
4. it shuts the kernel down and exits. A kernel serves one run, never two.

The cold path's papermill is :data:`PAPERMILL_CLI_CODE`: ``python -c CODE
FOLDER`` is ``python -m papermill ARGS`` (the same click command, exit
statuses and output) with ARGS read from FOLDER's :data:`PAPERMILL_ARGS_FILE`
and its kernel on Unix sockets in FOLDER, as :func:`kernel_config` starts them.

End of input before a request (the pool stopping it, or the service gone)
shuts the kernel down and exits 0; a kernel that dies while waiting makes it
exit :data:`KERNEL_LOST_EXIT`, and the pool discards it.

Requirements: the notebook must see what it would see under the CLI, and
no value of the request may ever become code. The kernel learns its run's
variables and folder from a preamble made only of Python literals
(:func:`kernel_preamble`), executed silently (no output, no execution count).
A notebook that names another kernel than ``python3`` gets what the CLI
would give it: the pre-started kernel is shut down and papermill starts the
one the notebook names (or fails as the CLI fails).

Rejected alternatives: handing a kernel of one run to the next (state,
imports and files of one run would leak into another, and a run would not
start from what its notebook says); starting the kernel only once the run's
environment is known (the start is the slow part being saved); and setting
the run's variables with code built by f-strings around the values
(SECURITY rule 4).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import sys
import tempfile
import traceback
from collections.abc import Mapping
from typing import Any

#: The line the process prints once its kernel answers.
READY = "READY"
#: The kernel it starts: every Shipyard environment registers its own ``python3``.
KERNEL_NAME = "python3"
#: papermill's exit status when the kernel died (``papermill.cli``).
DEAD_KERNEL_EXIT = 138
#: Exit status when the pre-started kernel died before a run came.
KERNEL_LOST_EXIT = 3
#: The largest request line read (the run's variables are its only sizeable part).
MAX_REQUEST_BYTES = 1 << 20
#: Seconds the kernel may take to start and answer, as papermill's ``--start-timeout``.
START_TIMEOUT = 60
#: How often, waiting for a run, the process checks that its kernel still lives.
ALIVE_INTERVAL = 1.0
#: Modules kept from being imported in a warm process (never in its kernel).
#: jsonschema, which nbformat's validator imports, imports ``rfc3987_syntax`` when it is
#: installed (jupyter-events brings it into every environment), and that builds an Earley
#: parser for IRIs as it is imported: 0.95 s of CPU, 80% of ``import papermill``, for two
#: format checks ("iri", "iri-reference") that no notebook schema uses and nbformat does
#: not run. Without it jsonschema leaves those two formats unchecked, as where it is not
#: installed.
UNUSED_MODULES = ("rfc3987_syntax",)


def request_line(
    *,
    input: str,
    output: str,
    parameters_file: str,
    cwd: str,
    env: Mapping[str, str],
    execution_timeout: float | None = None,
) -> bytes:
    """The one line the pool writes to a warm process's stdin to hand it a run."""
    request = {
        "input": str(input),
        "output": str(output),
        "parameters_file": str(parameters_file),
        "cwd": str(cwd),
        "env": dict(env),
        "execution_timeout": execution_timeout,
    }
    return json.dumps(request).encode() + b"\n"


def parse_request(line: bytes) -> dict[str, Any]:
    """The request in ``line``, checked field by field; ValueError names what is wrong."""
    request = json.loads(line)
    if not isinstance(request, dict):
        raise ValueError("the request is not a JSON object")
    for name in ("input", "output", "parameters_file", "cwd"):
        if type(request.get(name)) is not str or not request[name]:
            raise ValueError(f"the request's {name!r} is not a path")
    env = request.get("env")
    if not isinstance(env, dict) or not all(
        type(k) is str and type(v) is str for k, v in env.items()
    ):
        raise ValueError("the request's 'env' is not a mapping of strings to strings")
    timeout = request.get("execution_timeout")
    if timeout is not None and (type(timeout) not in (int, float) or timeout <= 0):
        raise ValueError("the request's 'execution_timeout' is not a positive number")
    return request


def kernel_preamble(env: Mapping[str, str], cwd: str) -> str:
    """Code that gives the kernel the run's variables and folder, built only from literals.

    Safe for any value: ``repr`` of a ``str``, and of a ``dict`` of ``str`` to
    ``str``, is a Python literal that evaluates back to exactly that value
    and cannot contain code, whatever characters the values hold (quotes,
    newlines, ``\\x00``); the values are data rendered as literals (SECURITY
    rule 4). The types are checked here so that no subclass's own ``repr``
    takes part.
    """
    if not all(type(k) is str and type(v) is str for k, v in env.items()) or type(cwd) is not str:
        raise TypeError("the preamble takes only str names, values and folder")
    return (
        "import os as __shipyard_os\n"
        f"__shipyard_os.environ.update({dict(env)!r})\n"
        f"__shipyard_os.chdir({cwd!r})\n"
        "del __shipyard_os\n"
    )


def _format_safe(path: str) -> str:
    # papermill passes input and output paths through str.format(**parameters);
    # the CLI is given them escaped (base.papermill_args), and so is this
    return path.replace("{", "{{").replace("}", "}}")


def _notebook_kernel(path: str) -> str | None:
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # papermill reports an unreadable notebook itself, as the CLI does
        return None
    return (nb.metadata.get("kernelspec") or {}).get("name")


def _wait_for_request(km, run_sync) -> bytes | None:
    """The request line; None at end of input, or when the kernel died (after saying so)."""
    is_alive = run_sync(km.is_alive)
    buffer = b""
    while True:
        readable, _, _ = select.select([sys.stdin.fileno()], [], [], ALIVE_INTERVAL)
        if readable:
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                return None
            buffer += chunk
            if b"\n" in buffer:
                return buffer.split(b"\n", 1)[0]
            if len(buffer) > MAX_REQUEST_BYTES:
                raise ValueError(f"the request is longer than {MAX_REQUEST_BYTES} bytes")
        elif not is_alive():
            print("The pre-started kernel died before a run came.", file=sys.stderr)
            sys.exit(KERNEL_LOST_EXIT)


async def _run_preamble(kc, code: str) -> None:
    msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    while True:
        reply = await kc.get_shell_msg(timeout=START_TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    content = reply["content"]
    if content.get("status") != "ok":
        raise RuntimeError(
            "Could not set the run's environment in the kernel: "
            f"{content.get('ename')}: {content.get('evalue')}"
        )


def _kernel_manager_class():
    """An AsyncKernelManager whose one client is the one that saw the kernel ready.

    nbclient asks the manager for a client and waits until the kernel answers
    on it; jupyter_client's wait ends with 0.2 s of listening for stray IOPub
    messages, once per client. The client made before READY has already done
    that wait, so it is handed to papermill as is: its channels are started
    once, and it waits for the kernel once. (Defined in a function so that the
    service, which imports this module for its constants, imports no
    jupyter_client.)
    """
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ReadyClient(AsyncKernelClient):
        _ready = False

        def start_channels(self, *args, **kwargs) -> None:
            if not self.channels_running:
                super().start_channels(*args, **kwargs)

        async def wait_for_ready(self, timeout: float | None = None) -> None:
            if not self._ready:
                await super().wait_for_ready(timeout=timeout)
                self._ready = True

    class WarmKernelManager(AsyncKernelManager):
        _client = None

        @default("client_factory")
        def _default_client_factory(self):
            return ReadyClient

        def client(self, **kwargs):
            if self._client is None:
                self._client = super().client(**kwargs)
            return self._client

    return WarmKernelManager


def skip_unused_imports() -> None:
    """Make :data:`UNUSED_MODULES` unimportable in this process (their import raises ImportError)."""
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)


def kernel_config(folder: str | None = None):
    """jupyter_client settings for every kernel a run's papermill starts: Unix sockets.

    The sockets are in ``folder`` (the owner's, 0700: the executor makes and removes
    it), else in a new temporary folder removed at exit.

    A TCP kernel listens on five ports, which jupyter_client picks by binding port 0
    and letting go of it before the kernel binds it; runs that start together then
    draw the same port, and the kernel dies ("Address already in use") or papermill
    waits its 60 s start timeout for a kernel that never answers: 1 or 2 of 40 runs
    started at once failed so (bench/scheduler.py). IPC sockets in a folder of the
    owner's own (0700, removed at exit) cannot collide, and no other account on the
    machine can connect to them, as it could to 127.0.0.1 ports.
    """
    from traitlets.config import Config

    if folder is None:
        folder = tempfile.mkdtemp(prefix="shipyard-kernel-")
        atexit.register(shutil.rmtree, folder, True)
    ip = os.path.join(folder, "kernel")
    if len(ip.encode()) > 100:  # a Unix socket's path has at most 107 bytes (a long $TMPDIR)
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": ip}})


#: The file in a cold run's private work folder that holds papermill's arguments (a
#: JSON list). Not the command line: every account of the machine reads a process's
#: command line, and the arguments name the run's folders (its id) and the notebook;
#: the folder is the owner's alone (0700).
PAPERMILL_ARGS_FILE = "papermill-args.json"

#: ``python -c PAPERMILL_CLI_CODE FOLDER``: ``python -m papermill ARGS`` with ARGS read
#: from FOLDER/:data:`PAPERMILL_ARGS_FILE` and its kernels on Unix sockets in FOLDER (the
#: run's private work folder, which the executor removes), as :func:`kernel_config`
#: starts them (keep the two in step); exits as the CLI does. The CLI's one call of
#: ``execute_notebook`` gets the config as an engine keyword, which reaches nbclient's
#: NotebookClient, which gives it to the kernel manager.
#: Code of its own rather than this module's ``main``: ``python -m`` this module imports
#: its packages (pydantic, traitlets, the profiles: 0.15 s), which a cold run does not need.
PAPERMILL_CLI_CODE = f"""\
import functools, json, os, sys
sys.modules.setdefault("rfc3987_syntax", None)  # as UNUSED_MODULES: 0.95 s of import
import papermill.cli
from traitlets.config import Config
ip = os.path.join(sys.argv[1], "kernel")
if len(ip.encode()) <= 100:  # a Unix socket's path has at most 107 bytes: else TCP
    config = Config({{"KernelManager": {{"transport": "ipc", "ip": ip}}}})
    papermill.cli.execute_notebook = functools.partial(papermill.cli.execute_notebook, config=config)
with open(os.path.join(sys.argv[1], {PAPERMILL_ARGS_FILE!r})) as f:
    args = json.load(f)
papermill.cli.papermill.main(args=args, prog_name="papermill")
"""


def main() -> int:
    """Start a kernel, say READY, serve one run; the exit status is papermill CLI's."""
    skip_unused_imports()
    # as papermill's CLI does before it starts a kernel
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    import logging

    # the CLI's --log-level INFO: papermill's lines, one message per line, on stderr
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import nbformat
    from jupyter_core.utils import run_sync

    # nbformat loads and compiles its schema on the first save; papermill saves the
    # notebook as each cell starts, so do it now rather than at the run's first cell
    nbformat.validate(nbformat.v4.new_notebook())

    config = kernel_config(sys.argv[1] if len(sys.argv) > 1 else None)
    km = _kernel_manager_class()(kernel_name=KERNEL_NAME, config=config)
    try:
        # nbclient starts its kernels with an in-memory history (NotebookClient.ipython_hist_file)
        run_sync(km.start_kernel)(extra_arguments=["--HistoryManager.hist_file=:memory:"])
        kc = km.client()
        try:
            return _serve(km, kc, run_sync, config)
        finally:
            kc.stop_channels()
    finally:
        try:
            if km.has_kernel and run_sync(km.is_alive)():
                run_sync(km.shutdown_kernel)()
        except Exception:
            traceback.print_exc()


def _serve(km, kc, run_sync, config) -> int:
    import nbclient.exceptions
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from papermill.iorw import read_yaml_file

    kc.start_channels()
    run_sync(kc.wait_for_ready)(timeout=START_TIMEOUT)
    print(READY, flush=True)

    line = _wait_for_request(km, run_sync)
    if line is None:
        return 0
    request = parse_request(line)
    env, cwd = request["env"], request["cwd"]
    os.environ.update(env)
    os.chdir(cwd)
    run_sync(_run_preamble)(kc, kernel_preamble(env, cwd))

    if _notebook_kernel(request["input"]) != KERNEL_NAME:
        # the notebook names another kernel (or none): papermill does as the CLI would
        run_sync(km.shutdown_kernel)(now=True)
        kernel = None
    else:
        kernel = km
    try:
        papermill.execute_notebook(
            _format_safe(request["input"]),
            _format_safe(request["output"]),
            parameters=read_yaml_file(request["parameters_file"]) or {},
            progress_bar=False,
            log_output=True,
            cwd=cwd,
            execution_timeout=request["execution_timeout"],
            km=kernel,
            config=config,  # for the kernel papermill starts when the notebook names another
        )
    except nbclient.exceptions.DeadKernelError:
        traceback.print_exc()
        return DEAD_KERNEL_EXIT
    except PapermillExecutionError:
        traceback.print_exc()  # what the CLI prints for it, with exit status 1
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
