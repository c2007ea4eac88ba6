"""What a backend plugin provides: the :class:`Backend` base class and its data types.

A backend turns an IR :class:`~gradforge.ir.Program` into files (``emit``: pure, returns
``{relative path: text}``, never writes) and, where it can, builds and runs what it emitted
(``run``) so that ``gradforge verify`` and the conformance suite can compare its numbers with
the independent reference. Register one through the ``gradforge_backends`` hook (see
:mod:`gradforge.hookspecs`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ProjectError, ToolchainError, did_you_mean
from .ir import Program


@dataclass(frozen=True)
class Option:
    """A key a backend accepts under ``[backends.NAME]``."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Toolchain:
    """An external tool a backend needs to build/run its output, and whether it is here."""

    name: str
    available: bool
    detail: str          # version line, or what to install


@dataclass(frozen=True)
class Case:
    """One verification input: flat θ, per-field samples (n × field size), constants."""

    params: tuple[float, ...]
    data: Mapping[str, tuple[tuple[float, ...], ...]]
    constants: Mapping[str, float]

    @property
    def n(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0


@dataclass(frozen=True)
class Result:
    """What a backend computed for a :class:`Case`."""

    objective: float
    gradient: tuple[float, ...]
    predictions: tuple[float, ...]
    stepped: tuple[float, ...] | None = None   # θ after one optimizer step from a fresh state


class Backend:
    """Base class for backends. Subclasses set ``name``/``description``/``options`` and
    implement :meth:`emit`; :meth:`run` and :meth:`toolchains` are optional."""

    name: str = ""
    description: str = ""
    options: tuple[Option, ...] = ()
    #: Comment syntax of the backend's files. Informational only: the core does not use it
    #: (the header check finds the marker sentence in any syntax, docs/plugins.md); kept so
    #: that plugins which set it keep working.
    comment_prefix: str = "//"
    #: Names the output must never take, each mapped to what it would hide: a generated module
    #: or header called ``numpy`` or ``math`` shadows the library for every file built beside
    #: it. :func:`check_output_names` compares :meth:`output_names` against these
    #: case-insensitively (macOS and Windows file systems are) and refuses the build.
    shadowed_names: Mapping[str, str] = {}
    #: Optimizers the generated trainer implements, and whether it honours parameter bounds;
    #: a project asking for more is refused at build time (:func:`~gradforge.optimizers.check_training`).
    training_methods: tuple[str, ...] = ("sgd", "momentum", "adam")
    supports_bounds: bool = False

    def trains(self, program: Program) -> bool:
        """Whether this backend's trainer implements the program's optimizer and bounds."""
        return program.training.method in self.training_methods and \
            (self.supports_bounds or not program.bounded)

    def emit(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        """Return ``{relative path: file text}`` for ``program``. Must be deterministic."""
        raise NotImplementedError

    def output_names(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        """The module and file names (without extension) the output takes from the project,
        each mapped to the project-file key it comes from. Default: the project name."""
        return {program.name: "project.name"}

    def default_out(self, program: Program, options: Mapping[str, Any]) -> str:
        """The output folder when ``out`` is not given, relative to the project file."""
        return f"build/{self.name}"

    def toolchains(self) -> list[Toolchain]:
        """External tools :meth:`run` needs (empty when none)."""
        return []

    def run(self, program: Program, options: Mapping[str, Any], cases: Sequence[Case],
            workdir: Path) -> list[Result]:
        """Emit into ``workdir``, build, execute every case; raise ToolchainError on failure."""
        raise NotImplementedError(f"backend {self.name!r} cannot run its output")

    @property
    def can_run(self) -> bool:
        return type(self).run is not Backend.run

    def resolve_options(self, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Defaults filled in; unknown keys and wrong types are :class:`ProjectError`."""
        known = {o.name: o for o in self.options}
        resolved = {o.name: o.default for o in self.options}
        for key, value in given.items():
            dotted = f"backends.{self.name}.{key}"
            if key not in known:
                raise ProjectError(f"unknown option '{key}' for backend '{self.name}'",
                                   key=dotted, hint=did_you_mean(key, known)
                                   or (f"options: out, {', '.join(known)}" if known
                                       else "this backend only takes `out`"))
            option = known[key]
            if option.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, option.type) or (option.type is int
                                                      and isinstance(value, bool)):
                raise ProjectError(f"expected {option.type.__name__}, got {value!r}",
                                   key=dotted)
            if option.choices and value not in option.choices:
                raise ProjectError(f"{value!r} is not one of "
                                   f"{', '.join(map(repr, option.choices))}", key=dotted)
            resolved[key] = value
        return resolved


def check_output_names(backend: Backend, program: Program, options: Mapping[str, Any]) -> None:
    """Refuse output that would shadow a library (see :attr:`Backend.shadowed_names`).

    Called by the core before every ``emit`` and ``run``, so no backend can write a
    ``numpy.py`` that imports itself or a ``math.h`` that hides ``<math.h>``."""
    reserved = {name.lower(): what for name, what in backend.shadowed_names.items()}
    for name, key in backend.output_names(program, options).items():
        what = reserved.get(name.lower())
        if what is None:
            continue
        if key == "project.name":
            hint = f"rename the project in [project] name, e.g. name = \"{program.name}_model\""
        else:
            hint = f"choose another value for `{key.rsplit('.', 1)[-1]}`"
        raise ProjectError(f"the {backend.name} backend would name its output '{name}', which "
                           f"hides {what}", key=key, hint=hint)


# ----------------------------------------------------------------------- helpers for runners

def _run(args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with TMPDIR pointing at a private folder, removed afterwards:
    SwiftPM and Foundation leave ``TemporaryDirectory.*`` folders and lock files in the
    system temporary folder on every call (even ``swift --version``)."""
    with tempfile.TemporaryDirectory(prefix="gradforge-tool-") as scratch:
        env = dict(kwargs.pop("env", None) or os.environ, TMPDIR=scratch)
        return subprocess.run(list(args), env=env, **kwargs)


def find_tool(command: str, version_args: Sequence[str] = ("--version",),
              hint: str = "") -> Toolchain:
    """Whether ``command`` is on PATH, with its first version line."""
    path = shutil.which(command)
    if path is None:
        return Toolchain(command, False, hint or f"install {command}")
    try:
        out = _run([path, *version_args], capture_output=True, text=True, timeout=60)
        first = (out.stdout or out.stderr).strip().splitlines()
        return Toolchain(command, True, first[0] if first else path)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Toolchain(command, False, f"{command} failed to start: {exc}")


def run_tool(args: Sequence[str], cwd: Path | None = None, timeout: int = 600,
             stdin: str | None = None) -> str:
    """Run a build/run command (private TMPDIR, see :func:`_run`); its output becomes a
    ToolchainError on failure."""
    try:
        proc = _run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                    input=stdin)
    except FileNotFoundError:
        raise ToolchainError(f"{args[0]} not found")
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{' '.join(map(str, args))} timed out after {timeout}s")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-4000:]
        raise ToolchainError(f"{' '.join(map(str, args))} failed "
                             f"(exit {proc.returncode}):\n{tail}")
    return proc.stdout


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Plain write of emitted files into a scratch folder (for ``run``; not for users)."""
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
