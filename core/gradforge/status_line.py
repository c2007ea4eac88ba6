"""Progress on stderr for the long commands (``verify``, ``explain``), only on a terminal.

One status line, rewritten in place, with a live elapsed time: ``[12.4s] reference: case 2/3``.
A stage that takes long (simplifying 600 gradient formulas) keeps ticking, so the terminal
never looks hung. When stderr is not a terminal (a pipe, a CI log, a test) nothing is
written, so captured output stays exactly the command's result.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

TICK = 0.5          # seconds between redraws of the elapsed time


class StatusLine:
    """Callable that shows ``message`` as the current stage; :meth:`done` clears the line."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.start = time.monotonic()
        self.message: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.message = message
            self._draw()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.start
        self.stream.write(f"\r\033[K[{elapsed:5.1f}s] {self.message}")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                if self.message is not None:
                    self._draw()

    def done(self) -> None:
        """Stop the ticking and erase the line, so the result prints on a clean line."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self.enabled and self.message is not None:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self.message = None

    def __enter__(self) -> "StatusLine":
        return self

    def __exit__(self, *exc) -> None:
        self.done()
