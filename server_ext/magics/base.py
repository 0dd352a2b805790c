"""What every family of Shipyard's magics shares: the settings, the error translator, quoting.

:class:`ShipyardMagics` is the one configurable class (STYLE rule 22): every setting of the
magics is a trait here, so ``c.ShipyardMagics.poll_interval = 5`` reaches each family
(:class:`~server_ext.magics.tracking.TrackingMagics`, :class:`~server_ext.magics.jobs.JobMagics`,
:class:`~server_ext.magics.deploy.DeployMagics`), which are its subclasses, as IPython's own
magics are one class per family (``IPython.core.magics``). Rejected alternative: one trait
set per family, which would split ``c.ShipyardMagics`` into names users must learn again and
warn about every setting a family does not have.
"""

from __future__ import annotations

import functools

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from traitlets import Float, Unicode, default

from ..clients.deployer.client import DeployerError
from ..clients.scheduler.client import SchedulerError
from ..clients.tracking.client import TrackingError
from ..clients.tracking.spool import default_spool_dir


def user_errors(magic):
    """The one translator: a Tracking-, Scheduler- or DeployerError becomes a ``UsageError``.

    So the user sees a message that says what to do (for a service, the service's own
    message), never a traceback.
    """

    @functools.wraps(magic)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
        try:
            return magic(*args, **kwargs)
        except (TrackingError, SchedulerError, DeployerError) as exc:
            raise UsageError(str(exc)) from None

    return wrapper


class ShipyardMagics(Magics):
    """The settings of Shipyard's magics; each family of magics is a subclass."""

    spool_dir = Unicode(
        help="""Where metrics wait until the tracking server has them.

        Every ``log()`` value is appended here first, so values survive a killed kernel or
        an unreachable server; a kernel that loads the extension sends what a dead one left.
        Defaults to ``$SHIPYARD_SPOOL_DIR``, else ``~/.shipyard/spool``.

        Example: ``c.ShipyardMagics.spool_dir = "/scratch/me/spool"``

        .. versionadded:: 0.1
        """
    ).tag(config=True)

    finish_timeout = Float(
        60.0,
        help="""The longest a cell waits for the tracking server, in seconds.

        Tracked cells do not wait for MLflow, except: the kernel's first ``%%track`` run
        on a server waits for its creation, a scheduled job's run waits at its cell's end
        until it is complete, ``%runs`` and ``%compare`` wait for this kernel's ended runs,
        and ``%deploy`` for the run its model came from. Each such wait ends once the server has answered, as soon as
        it fails, or after this; what is left is sent in the background.

        Example: ``c.ShipyardMagics.finish_timeout = 120``

        .. versionadded:: 0.1
        """,
    ).tag(config=True)

    max_retry_interval = Float(
        30.0,
        help="""The longest wait, in seconds, between attempts to reach a failing server.

        Attempts back off from half a second, doubling up to this.

        Example: ``c.ShipyardMagics.max_retry_interval = 60``

        .. versionadded:: 0.1
        """,
    ).tag(config=True)

    poll_interval = Float(
        1.0,
        help="""Seconds between looks at a run's progress while ``%run_now --wait`` waits.

        A log that grows is read again at once; this is the pause while nothing changed.
        ``%pipeline ... --wait`` asks for its run's steps this often too.

        Example: ``c.ShipyardMagics.poll_interval = 5``

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    deploy_timeout = Float(
        900.0,
        help="""Seconds ``%deploy`` waits for a new version to be ready.

        Past this the magic stops waiting (the version goes on starting, and
        ``%deployments`` shows how it ends). The deployer's own start timeout decides
        when a version has failed.

        Example: ``c.ShipyardMagics.deploy_timeout = 1800``

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    reproduce_timeout = Float(
        1800.0,
        help="""Seconds ``%lineage NAME --reproduce`` waits for the new pipeline run to end.

        Past this the magic stops waiting; the pipeline run goes on, and the scheduler's
        panel (or ``GET api/pipeline-runs/{id}``) shows how it ends.

        Example: ``c.ShipyardMagics.reproduce_timeout = 3600``

        .. versionadded:: 0.5
        """,
    ).tag(config=True)

    @default("spool_dir")
    def _default_spool_dir(self):
        return str(default_spool_dir())


def unquote(text: str | None) -> str | None:
    """``text`` without one pair of enclosing quotes.

    IPython splits magic arguments like a non-POSIX shell, which keeps the quotes:
    ``%experiment "my exp"`` arrives as ``'"my exp"'``.
    """
    if text and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def shell_words(items: list[str]) -> list[str]:
    """``NAME=VALUE`` items with the quotes a shell would remove, removed.

    IPython keeps quotes (see :func:`unquote`): ``-p "note=two words"`` arrives quoted whole,
    ``-p x='"3"'`` with its value quoted. Either pair goes, once, so ``x='"3"'`` is the JSON
    string ``"3"``, as in a terminal.
    """
    words = []
    for item in map(unquote, items):
        name, sep, value = item.partition("=")
        words.append(f"{name}={unquote(value)}" if sep else item)
    return words
