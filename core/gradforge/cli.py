"""The ``gradforge`` command line: build, verify, explain, plugins, init (train and predict
live in train_cli.py).

Exit status: 0 success; 1 ``build --check`` found changes, ``verify`` found a mismatch (or,
with ``--strict``, skipped a backend); 2 a user error (bad project file, unknown backend,
refused overwrite), printed as one line without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import BackendError, GradforgeError, ProjectError, ToolchainError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


PROJECT_HELP = "project file, or a folder holding project.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradforge",
        description="Training code with exact gradients for Swift, Metal, C and NumPy.")
    parser.add_argument("--version", action="version", version=f"gradforge {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", help="generate training code for the project's backends")
    build.add_argument("project", type=Path, help=PROJECT_HELP)
    build.add_argument("--backend", action="append", metavar="NAME",
                       help="build only this backend (repeatable; default: all in [backends])")
    build.add_argument("--out", type=Path, metavar="DIR",
                       help="write each backend to DIR/<backend> (default: the `out` of each "
                            "[backends.NAME] table, else build/<backend> next to the project)")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 and list files whose content would change")

    verify = sub.add_parser("verify", help="build, run and compare with a 50-digit reference")
    verify.add_argument("project", type=Path, help=PROJECT_HELP)
    verify.add_argument("--backend", action="append", metavar="NAME",
                        help="verify only this backend (repeatable; default: all in [backends])")
    verify.add_argument("--cases", type=int, default=3, metavar="N",
                        help="number of cases (default 3)")
    verify.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the random parameters and data (default 0)")
    verify.add_argument("--data", metavar="FILE",
                        help="CSV/Parquet file (or folder, or glob) with columns named like "
                             "the fields (x, or x[0] x[1] … for arrays, as for train); the "
                             "cases use its rows instead of random data")
    verify.add_argument("--drop-invalid", action="store_true",
                        help="with --data: skip rows with an empty or non-numeric cell")
    verify.add_argument("--show", type=int, default=5, metavar="N",
                        help="mismatches to print per failing backend (default 5)")
    verify.add_argument("--strict", action="store_true",
                        help="exit 1 when any backend was skipped (missing toolchain); "
                             "use it in CI")

    explain = sub.add_parser("explain", help="print the gradient formulas and op counts")
    explain.add_argument("project", type=Path, help=PROJECT_HELP)
    explain.add_argument("--all", action="store_true",
                         help="every gradient line (default: the first 24; a grouped "
                              "array is one line)")

    plugins = sub.add_parser("plugins", help="list installed backends and their status")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    init = sub.add_parser("init", help="write a commented starter project")
    init.add_argument("folder", type=Path, nargs="?", default=Path("."),
                      help="folder for project.toml (default: the current folder)")
    init.add_argument("--name", default=None,
                      help="project name: letters, digits and '_', starting with a letter "
                           "(default: derived from the folder name)")

    from .train_cli import add_parsers
    COMMANDS.update(add_parsers(sub))      # train, predict
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ProjectError as err:
        project = getattr(args, "project", None)
        if project is not None and err.location.file is None \
                and not (err.location.key or "").startswith("--"):
            from .project import locate
            locate(err, project)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (BackendError, ToolchainError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    except GradforgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def cmd_build(args) -> int:
    from .api import build
    from .project import load_project
    spec = load_project(args.project)
    report = build(spec, backends=args.backend, out=args.out, check=args.check)
    if args.check:
        for path in report.changed:
            print(f"would change: {_show(path)}")
        if report.changed:
            print(f"{len(report.changed)} generated file(s) out of date; "
                  f"run `gradforge build {args.project}`", file=sys.stderr)
            return EXIT_FAILED
        print("generated files are up to date")
        return EXIT_OK
    for output in report.outputs:
        print(f"{output.backend}: {len(output.files)} file(s) in {_show(output.folder)}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from .api import selected_backends
    from .data import read_dataset
    from .lower import lower
    from .model import build_model
    from .plugins import load_registry
    from .project import load_project
    from .reference import Reference
    from .status_line import StatusLine
    from .verification import make_cases, rows, verify
    with StatusLine() as progress:
        progress("reading the project")
        spec = load_project(args.project)
        registry = load_registry()
        if args.backend or spec.backends:
            names = [name for name, _, _ in selected_backends(spec, args.backend)]
        else:
            names = sorted(registry.backends)
        backends = [registry.backend(n) for n in names]
        options = {b.name: dict(b.options) for b in spec.backends}
        progress("differentiating")
        model = build_model(spec)          # parsed once: the IR and the reference share it
        program = lower(model)
        progress("preparing the 50-digit reference (sympy.diff of each definition)")
        reference = Reference(model)
        data = None
        if args.data:
            progress(f"reading {args.data}")
            data = rows(read_dataset(args.data, program.fields, program.precision,
                                     drop_invalid=args.drop_invalid))
        progress("drawing cases inside the model's domain")
        cases = make_cases(spec, count=max(args.cases, 1), seed=args.seed, data=data,
                           in_domain=lambda case: reference.domain_problem(case) is None)
        derivative_error, reports = verify(spec, program, backends, cases, options,
                                           reference=reference, progress=progress,
                                           domain_hint=None if data is None else
                                           f"every row of {_show(args.data)} must be inside "
                                           "the model's domain; remove the rows where it is "
                                           "undefined")
    source = f"cases from {_show(args.data)}" if args.data else "random cases"
    print(f"{spec.name}: {len(cases)} {source}, reference at 50 digits "
          f"(tolerance {'1e-9' if spec.precision == 'float64' else '1e-4'} relative)")
    print(f"derivative check, sympy.diff vs finite differences: {derivative_error:.1e}")
    rows = [("backend", "status", "worst rel. error", "detail")]
    for r in reports:
        worst = f"{r.worst:.1e}" if r.status in ("pass", "FAIL") else "-"
        rows.append((r.backend, r.status, worst, r.detail))
    for line in _columns(rows):
        print(line)
    failed = [r for r in reports if r.status in ("FAIL", "error")]
    for r in failed:
        for problem in r.problems[:args.show]:
            print(f"  {r.backend}: {problem}")
    if failed or derivative_error > 1e-12:
        return EXIT_FAILED
    skipped = [r.backend for r in reports if r.status == "skipped"]
    if args.strict and skipped:
        print(f"error: --strict: {len(skipped)} backend(s) skipped ({', '.join(skipped)}); "
              "install the missing toolchains (`gradforge plugins` lists them)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_explain(args) -> int:
    from .explain import report
    from .lower import compile_project
    from .project import load_project
    from .status_line import StatusLine
    with StatusLine() as progress:
        progress("reading the project")
        spec = load_project(args.project)
        progress("differentiating")
        program = compile_project(spec)
        entries = len(program.loss_and_gradient.gradient)
        progress(f"writing {entries} gradient entries as formulas")
        text = report(program, None if args.all else 24, spec=spec)
    sys.stdout.write(text)
    return EXIT_OK


def cmd_plugins(args) -> int:
    from .plugins import load_registry
    registry = load_registry()
    rows = []
    for info in registry.plugins:
        tools = []
        for name in info.backends:
            tools += [f"{t.name}: {'ok' if t.available else 'missing'} ({t.detail})"
                      for t in registry.backends[name].toolchains()]
        rows.append({"entry_point": info.name, "module": info.module,
                     "distribution": info.distribution, "version": info.version,
                     "status": info.status, "backends": info.backends, "toolchains": tools})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = [("plugin", "distribution", "version", "backends", "status")]
    table += [(row["entry_point"], row["distribution"], row["version"],
               ", ".join(row["backends"]) or "-", row["status"]) for row in rows]
    lines = _columns(table)
    print(lines[0])
    for line, row in zip(lines[1:], rows):
        print(line)
        for tool in row["toolchains"]:
            print(f"  toolchain {tool}")
    return EXIT_OK


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as lines of left-aligned columns, each as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in rows]


def cmd_init(args) -> int:
    from .starter import write_starter
    path, name = write_starter(args.folder, args.name)
    origin = "" if args.name else " (from the folder name; change it with --name)"
    print(f"wrote {_show(path)} for project '{name}'{origin}; "
          f"next: gradforge build {_show(path)}")
    return EXIT_OK


def _show(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


COMMANDS = {"build": cmd_build, "verify": cmd_verify, "explain": cmd_explain,
            "plugins": cmd_plugins, "init": cmd_init}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
