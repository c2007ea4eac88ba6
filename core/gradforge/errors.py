"""User-facing errors: one line naming the file, the key, the position and what to do.

Every mistake a user can make in a project file ends in a :class:`ProjectError`; the CLI prints
``str(err)`` and exits with status 2. Anything else escaping is a gradforge bug.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass
class Location:
    """Where in a project file an error was found (all parts optional)."""

    file: str | None = None
    key: str | None = None
    line: int | None = None
    column: int | None = None

    def render(self) -> str:
        parts = []
        if self.file:
            pos = self.file
            if self.line is not None:
                pos += f":{self.line}"
                if self.column is not None:
                    pos += f":{self.column}"
            parts.append(pos)
        if self.key:
            parts.append(self.key)
        return ": ".join(parts)


class GradforgeError(Exception):
    """Base class of errors gradforge reports to users without a traceback."""


class ProjectError(GradforgeError):
    """A mistake in a project (file or library-built): message plus location."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None,
                 line: int | None = None, column: int | None = None, hint: str | None = None):
        self.message = message
        self.location = Location(file=file, key=key, line=line, column=column)
        self.hint = hint
        super().__init__(self.__str__())

    def with_location(self, **kw) -> "ProjectError":
        """Fill in location parts that are still unknown (outer layers know the file/key)."""
        for name, value in kw.items():
            if getattr(self.location, name) is None and value is not None:
                setattr(self.location, name, value)
        self.args = (self.__str__(),)
        return self

    def __str__(self) -> str:
        where = self.location.render()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class BackendError(GradforgeError):
    """A backend cannot handle the program (unsupported construct, missing option, ...)."""


class ToolchainError(GradforgeError):
    """A compiler or runtime needed to verify generated code is missing or failed."""


def did_you_mean(word: str, choices) -> str | None:
    """A 'did you mean' hint for a misspelt key, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
