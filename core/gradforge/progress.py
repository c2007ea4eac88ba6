"""Progress of a training run: a live rich display on a terminal, plain lines otherwise.

Why rich: it draws a bar with an ETA and arbitrary columns (objective, gradient norm) in a few
lines, redraws at a bounded rate (so a fast loop is not slowed by printing), and degrades to
nothing when stderr is not a terminal — then we print plain lines, at most one a second.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


class Progress:
    """``update`` once per iteration; ``close`` at the end. mode: 'auto', 'rich', 'plain', 'quiet'."""

    def __init__(self, total: int, label: str, mode: str = "auto", stream: TextIO | None = None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        if mode == "rich":
            try:
                import rich.progress  # noqa: F401
            except ImportError:
                mode = "plain"
        self.mode = mode
        self.started = time.perf_counter()
        self._last_line = 0.0
        self._bar = None
        if mode == "rich":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("J {task.fields[objective]}"),
                            TextColumn("|g| {task.fields[gnorm]}"),
                            TextColumn("{task.fields[validation]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, objective="-", gnorm="-",
                                            validation="")

    def update(self, iteration: int, objective: float, gradient_norm: float | None,
               validation: float | None = None) -> None:
        if self.mode == "quiet":
            return
        if self.mode == "rich":
            self._bar.update(self._task, completed=iteration, objective=_fmt(objective),
                             gnorm=_fmt(gradient_norm),
                             validation="" if validation is None else f"val {_fmt(validation)}")
            return
        now = time.perf_counter()
        if now - self._last_line < 1.0 and iteration not in (1, self.total):
            return
        self._last_line = now
        elapsed = now - self.started
        eta = elapsed / iteration * (self.total - iteration) if iteration else 0.0
        val = "" if validation is None else f"  validation {_fmt(validation)}"
        print(f"{self.label}: iteration {iteration}/{self.total}  objective {_fmt(objective)}  "
              f"gradient norm {_fmt(gradient_norm)}{val}  ETA {eta:.0f} s",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
