"""Progress on stderr for the long commands (``verify``, ``explain``), only on a terminal.

One status line, rewritten in place, with the elapsed time: ``[12.4s] reference: case 2/3``.
When stderr is not a terminal (a pipe, a CI log, a test) nothing is written, so captured
output stays exactly the command's result.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class StatusLine:
    """Callable that shows ``message`` as the current stage; :meth:`done` clears the line."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        self.stream.write(f"\r\033[K[{elapsed:5.1f}s] {message}")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        """Erase the status line so the result prints on a clean line."""
        if self.enabled and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False

    def __enter__(self) -> "StatusLine":
        return self

    def __exit__(self, *exc) -> None:
        self.done()
