"""The library API: the same pipeline the CLI runs, callable from Python.

    spec = gradforge.ProjectSpec.create(name="trend", parameters={"a": 0.5}, ...)
    program = gradforge.compile_project(spec)
    files = gradforge.emit(program, "c")            # {relative path: text}, nothing written
    report = gradforge.build(spec, backends=["numpy"], out="gen")   # gen/numpy/<name>.py
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .backend import check_output_names
from .errors import ProjectError
from .ir import Program
from .lower import compile_project
from .plugins import Registry, load_registry
from .project import ProjectSpec, load_project
from . import writer

__all__ = ["compile_project", "load_program", "emit", "build", "BuildReport"]


def load_program(path: str | Path) -> Program:
    """Project file → IR program (validated, differentiated)."""
    return compile_project(load_project(path))


def emit(program: Program, backend: str, options: Mapping[str, Any] | None = None,
         registry: Registry | None = None) -> dict[str, str]:
    """Files the backend named ``backend`` generates for ``program`` (nothing is written)."""
    registry = registry or load_registry()
    plugin = registry.backend(backend)
    resolved = plugin.resolve_options(dict(options or {}))
    check_output_names(plugin, program, resolved)
    registry.manager.hook.gradforge_check_program(program=program, backend_name=backend)
    files = dict(plugin.emit(program, resolved))
    registry.manager.hook.gradforge_postprocess_files(program=program, backend_name=backend,
                                                      files=files)
    return files


@dataclass
class BuildReport:
    """What a build produced (or, with ``check``, what would change)."""

    outputs: list[writer.Output]
    written: list[Path] = field(default_factory=list)
    changed: list[Path] = field(default_factory=list)


def selected_backends(spec: ProjectSpec, names: Iterable[str] | None) -> list[tuple[str, dict, str | None]]:
    """(backend, options, out) triples for the requested backends (all listed by default)."""
    tables = {b.name: (dict(b.options), b.out) for b in spec.backends}
    wanted = list(names) if names else list(tables)
    if not wanted:
        raise ProjectError("no backends to build", key="backends",
                           hint="add a table such as [backends.numpy] or pass --backend NAME")
    return [(name, *tables.get(name, ({}, None))) for name in wanted]


def output_folder(spec: ProjectSpec, backend: str, out: str | None, cli_out: Path | None,
                  several: bool | None = None, default: str | None = None) -> Path:
    """Where a backend's files go: ``cli_out/<backend>`` whenever an output folder is given
    (however many backends are built: one layout), else the table's ``out``, else
    ``default`` (the backend's :meth:`~gradforge.backend.Backend.default_out`) or
    ``build/<backend>`` next to the project file; a project file may not point outside its
    own folder. (``several`` is ignored; it selected the old layout.)"""
    if cli_out is not None:
        return cli_out / backend
    root = spec.root.resolve()
    folder = (root / (out or default or f"build/{backend}")).resolve()
    if not folder.is_relative_to(root):
        raise ProjectError(f"out folder {out!r} is outside the project folder",
                           key=f"backends.{backend}.out",
                           hint="use a path inside the project, or pass --out on the command line")
    return folder


def build(spec: ProjectSpec | str | Path, backends: Iterable[str] | None = None,
          out: str | Path | None = None, check: bool = False,
          registry: Registry | None = None, program: Program | None = None) -> BuildReport:
    """Generate every requested backend; all files are rendered before any is written.

    With ``out``, each backend goes to ``out/<backend>`` (one layout for any number of
    backends); without, to its table's ``out`` or ``build/<backend>`` beside the project."""
    if not isinstance(spec, ProjectSpec):
        spec = load_project(spec)
    registry = registry or load_registry()
    program = program or compile_project(spec)
    chosen = selected_backends(spec, backends)
    outputs = []
    for name, options, table_out in chosen:
        plugin = registry.backend(name)
        resolved = plugin.resolve_options(options)
        files = emit(program, name, resolved, registry)
        folder = output_folder(spec, name, table_out, Path(out) if out else None,
                               default=plugin.default_out(program, resolved))
        # Where earlier versions put this backend's files, cleaned up via their manifest:
        # a single backend went straight into `--out DIR`; a default folder was build/<name>
        # (the Swift package now has a folder per model, build/swift/<Module>).
        if out:
            previous = (Path(out),)
        elif table_out is None:
            previous = (spec.root / "build" / name,)
        else:
            previous = ()
        outputs.append(writer.Output(name, folder, files, previous))
    report = BuildReport(outputs)
    if check:
        report.changed = writer.changes(outputs)
    else:
        report.written = writer.write(outputs)
    return report
