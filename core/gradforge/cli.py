"""The ``gradforge`` command line: build, verify, explain, plugins, init (train and predict
live in train_cli.py).

Exit status: 0 success; 1 ``build --check`` found changes or ``verify`` found a mismatch;
2 a user error (bad project file, unknown backend, refused overwrite), printed as one line
without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import BackendError, GradforgeError, ProjectError, ToolchainError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradforge",
        description="Training code with exact gradients for Swift, Metal, C and NumPy.")
    parser.add_argument("--version", action="version", version=f"gradforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", help="generate training code for the project's backends")
    build.add_argument("project", type=Path)
    build.add_argument("--backend", action="append", metavar="NAME",
                       help="build only this backend (repeatable; default: all in [backends])")
    build.add_argument("--out", type=Path, metavar="DIR",
                       help="output folder (one backend) or parent of one folder per backend")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 and list files whose content would change")

    verify = sub.add_parser("verify", help="build, run and compare with a 50-digit reference")
    verify.add_argument("project", type=Path)
    verify.add_argument("--backend", action="append", metavar="NAME")
    verify.add_argument("--cases", type=int, default=3, help="number of random cases (3)")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--show", type=int, default=5, metavar="N",
                        help="mismatches to print per failing backend (5)")

    explain = sub.add_parser("explain", help="print the gradient formulas and op counts")
    explain.add_argument("project", type=Path)
    explain.add_argument("--all", action="store_true", help="every parameter element")

    plugins = sub.add_parser("plugins", help="list installed backends and their status")
    plugins.add_argument("--json", action="store_true")

    init = sub.add_parser("init", help="write a commented starter project")
    init.add_argument("folder", type=Path, nargs="?", default=Path("."))
    init.add_argument("--name", default=None, help="project name (default: folder name)")

    from .train_cli import add_parsers
    COMMANDS.update(add_parsers(sub))      # train, predict
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ProjectError as err:
        project = getattr(args, "project", None)
        if project is not None and err.location.file is None:
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
    from .lower import lower
    from .model import build_model
    from .plugins import load_registry
    from .project import load_project
    from .reference import Reference
    from .verification import make_cases, verify
    spec = load_project(args.project)
    registry = load_registry()
    if args.backend or spec.backends:
        names = [name for name, _, _ in selected_backends(spec, args.backend)]
    else:
        names = sorted(registry.backends)
    backends = [registry.backend(n) for n in names]
    options = {b.name: dict(b.options) for b in spec.backends}
    model = build_model(spec)          # parsed once: the IR and the reference share it
    program = lower(model)
    cases = make_cases(spec, count=max(args.cases, 1), seed=args.seed)
    derivative_error, reports = verify(spec, program, backends, cases, options,
                                       reference=Reference(model))
    print(f"{spec.name}: {len(cases)} random cases, reference at 50 digits "
          f"(tolerance {'1e-9' if spec.precision == 'float64' else '1e-4'} relative)")
    print(f"derivative check, sympy.diff vs finite differences: {derivative_error:.1e}")
    rows = [("backend", "status", "worst rel. error", "detail")]
    for r in reports:
        worst = f"{r.worst:.1e}" if r.status in ("pass", "FAIL") else "-"
        rows.append((r.backend, r.status, worst, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    failed = [r for r in reports if r.status in ("FAIL", "error")]
    for r in failed:
        for problem in r.problems[:args.show]:
            print(f"  {r.backend}: {problem}")
    return EXIT_FAILED if failed or derivative_error > 1e-12 else EXIT_OK


def cmd_explain(args) -> int:
    from .explain import report
    from .lower import compile_project
    from .project import load_project
    sys.stdout.write(report(compile_project(load_project(args.project)),
                            None if args.all else 24))
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
    for row in rows:
        backends = ", ".join(row["backends"]) or "-"
        print(f"{row['entry_point']:<10} {row['distribution']} {row['version']:<8} "
              f"{row['status']}  backends: {backends}")
        for tool in row["toolchains"]:
            print(f"{'':<10} toolchain {tool}")
    return EXIT_OK


def cmd_init(args) -> int:
    from .starter import write_starter
    path = write_starter(args.folder, args.name)
    print(f"wrote {_show(path)}; next: gradforge build {_show(path)}")
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
