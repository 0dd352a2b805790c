"""The idle culler as the hub runs it: jupyterhub-idle-culler, with no token in its log.

``python -m hub_ext.hub.culler ARGS`` is ``python -m jupyterhub_idle_culler ARGS`` with
two differences, both set up before the culler starts:

* **no secret reaches a log line.** jupyterhub-idle-culler schedules each pass as
  ``functools.partial(cull_idle, url=..., api_token=..., ...)``, and tornado logs a
  callback that raised (the hub is down, say) as ``Exception in callback <its repr>``:
  the service's API token, written into the hub's log (the culler's stderr is the
  hub's). Every log record of this process has the token (``JUPYTERHUB_API_TOKEN``)
  replaced by ``[secret]`` in its message and its traceback, whatever the logger
  or handler (tornado's loggers have none and print through Python's last-resort
  handler). Rejected: a copy of the culler's ``start`` that passes the token some
  other way (a fork of its code to keep in step), and logging less (the error
  itself is worth a line).
* **it exits at once on SIGINT and SIGTERM**, the signals the hub stops services
  with, even where it inherited SIGINT ignored (a hub started in the background);
* **it dies with the hub** (Linux ``PR_SET_PDEATHSIG``), unlike every other
  service: it serves nothing, it only calls the hub, so it is useless while the hub
  is down, and the next hub starts a new one at once. One that outlived a killed
  hub kept calling the new hub's API beside the new hub's own culler, as an orphan
  that no Ctrl-C stopped.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

from hub_ext.host.process import die_with_parent

#: What a secret is replaced with in a log record.
REDACTED = "[secret]"


def redact_log_records(secrets: Iterable[str]) -> None:
    """Replace each of ``secrets`` by :data:`REDACTED` in every later log record.

    The message is formatted (and the traceback rendered) when the record is made,
    then cleaned, so no handler or formatter can bring the secret back.

    Parameters
    ----------
    secrets : iterable of str
        The values to hide; empty ones are ignored.
    """
    hidden = [s for s in secrets if s]
    if not hidden:
        return
    make_record = logging.getLogRecordFactory()

    def clean(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, REDACTED)
        return text

    def redacted_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the template, drop the arguments
            message = str(record.msg)
        record.msg, record.args = clean(message), ()
        if record.exc_info:
            record.exc_text = clean(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = clean(record.stack_info)
        return record

    logging.setLogRecordFactory(redacted_record)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)  # out of tornado's loop: nothing to save, no traceback to print


def main() -> None:
    # the hub stops its services with SIGINT first: a culler that inherited SIGINT ignored
    # (a hub started in the background, by nohup or a service manager) would only go at
    # the SIGTERM that follows the hub's whole interrupt timeout, a minute of Ctrl-C
    signal.signal(signal.SIGINT, _exit)
    signal.signal(signal.SIGTERM, _exit)
    if os.environ.get("JUPYTERHUB_SERVICE_NAME"):
        die_with_parent(signal.SIGTERM, exit_if_orphaned=True)
    redact_log_records([os.environ.get("JUPYTERHUB_API_TOKEN", "")])
    from jupyterhub_idle_culler import main as culler_main

    culler_main()


if __name__ == "__main__":
    main()
