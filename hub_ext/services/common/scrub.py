"""Removing secret values from what a run or a replica wrote, before anyone reads it.

A notebook that prints ``os.environ["DB_PASSWORD"]`` puts the value in its
output cell, in papermill's log and in the HTML export; a model server that
logs its environment puts it in the replica's log. The scheduler and the
deployer know the values they injected, so they replace each with
``[secret NAME]`` in:

- notebooks (:meth:`Scrubber.notebook_file`): every string of the JSON
  document, decoded first, so a value with quotes or non-ASCII characters is
  found whatever JSON escaping it got, and the document stays valid JSON;
- text files (:meth:`Scrubber.text_file`: logs, HTML), with the value's
  JSON- and HTML-escaped forms too;
- live streams (:class:`StreamScrubber`): a log is scrubbed as it is
  written, so a log read while the run is running never shows a value, even
  when a value arrives split across two writes.

Files are rewritten in place as root may be doing it in a folder the run's
user can write: never through a symlink, never a file with a second hard link
(SECURITY rule 1), through the file descriptor that was checked.

This is a safety net, not a guarantee: a notebook can always encode a value
(base64, reversed, one character per line) before printing it. Values shorter
than :data:`MIN_SCRUB_LENGTH` are scrubbed too, which may blank unrelated
text; the service refuses nothing for it.
"""

from __future__ import annotations

import html
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Values are scrubbed whatever their length; this only documents the trade-off above.
MIN_SCRUB_LENGTH = 1


def _variants(value: str) -> list[str]:
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value, quote=True),
        html.escape(value, quote=False),
    }
    return [f for f in forms if f]


class Scrubber:
    """Replaces each of ``values`` (by name) with ``[secret NAME]``.

    Parameters
    ----------
    values : Mapping[str, str]
        The injected secrets, by name.
    """

    def __init__(self, values: Mapping[str, str]):
        pairs = []
        for name, value in values.items():
            if value:
                for form in _variants(value):
                    pairs.append((form, f"[secret {name}]"))
        # longest first: a value that contains another is replaced whole
        self._pairs = sorted(set(pairs), key=lambda p: -len(p[0]))
        self._plain = sorted(
            {(v, f"[secret {n}]") for n, v in values.items() if v}, key=lambda p: -len(p[0])
        )
        #: Longest form, in bytes: what a stream must hold back.
        self.longest = max((len(f.encode()) for f, _ in self._pairs), default=0)

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def text(self, text: str) -> str:
        """``text`` with every value (and its escaped forms) replaced."""
        for form, mark in self._pairs:
            if form in text:
                text = text.replace(form, mark)
        return text

    def plain(self, text: str) -> str:
        """``text`` with every value replaced (decoded strings: no escaped forms)."""
        for value, mark in self._plain:
            if value in text:
                text = text.replace(value, mark)
        return text

    def data(self, value: Any) -> Any:
        """A JSON value with every string (keys too) scrubbed."""
        if isinstance(value, str):
            return self.plain(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {self.plain(k): self.data(v) for k, v in value.items()}
        return value

    # ------------------------------------------------------------ files

    def text_file(self, path: Path) -> bool:
        """Scrub a text file in place; True if it changed. A missing file is left alone."""
        return self._rewrite(path, lambda data: self.text(data.decode("utf-8", "surrogateescape")))

    def notebook_file(self, path: Path) -> bool:
        """Scrub every string of a JSON document (an ``.ipynb``) in place; True if it changed.

        A file that is not JSON (a notebook cut short) is scrubbed as text.
        """

        def scrub(data: bytes) -> str:
            try:
                document = json.loads(data)
            except ValueError:
                return self.text(data.decode("utf-8", "surrogateescape"))
            return json.dumps(self.data(document), indent=1, ensure_ascii=False) + "\n"

        return self._rewrite(path, scrub)

    def _rewrite(self, path: Path, scrub) -> bool:
        if not self:
            return False
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "r+b") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise OSError(f"{path} is not a plain file of its own; not rewriting it")
            data = f.read()
            text = scrub(data)
            new = text.encode("utf-8", "surrogateescape")
            if new == data:
                return False
            f.seek(0)
            f.write(new)
            f.truncate()
        return True


class StreamScrubber:
    """Scrubs a byte stream as it is written, holding back what could start a value.

    Complete lines go out at once; a partial line waits for its end, or goes
    out once it is longer than the longest value (minus what could still be
    the start of one). :meth:`flush` writes what is held at the end.

    Parameters
    ----------
    scrubber : Scrubber
        The values.
    write : callable
        ``write(bytes)``: where scrubbed data goes.
    """

    def __init__(self, scrubber: Scrubber, write):
        self.scrubber = scrubber
        self._write = write
        self._held = b""

    def write(self, data: bytes) -> None:
        if not self.scrubber:
            self._write(data)
            return
        data = self._held + data
        cut = data.rfind(b"\n") + 1
        keep = max(self.scrubber.longest - 1, 0)
        if len(data) - cut > max(keep, 4096):
            cut = len(data) - keep  # a long partial line: emit all but a possible value start
        self._held = data[cut:]
        if cut:
            self._emit(data[:cut])

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._emit(held)

    def _emit(self, data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        self._write(self.scrubber.text(text).encode("utf-8", "surrogateescape"))
