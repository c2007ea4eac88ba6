"""The differential fuzzer's machinery: prepare random project files, run every backend on
them in batches, compare with the 50-digit reference, and shrink a failure to a small file.

Batches keep the toolchains' fixed costs down: all C models of one precision are compiled
by one ``gcc`` call into one binary (each model's verification harness and trainer become
functions selected by ``argv``), and several Swift models share one package and one
``swift build``. NumPy runs in-process; Metal runs its kernels through the C++ shim.
"""
from __future__ import annotations

import ast
import json
import math
import re
import shutil
import subprocess
import tomllib
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from gradforge.backend import Case, Result
from gradforge.errors import GradforgeError
from gradforge.lower import lower
from gradforge.model import build_model
from gradforge.project import ProjectSpec, parse_project
from gradforge.protocol import decode_results, encode_cases
from gradforge.printing import float32_round
from gradforge.reference import Expected, Reference
from gradforge.verification import make_cases

from differential import mismatches

#: Normwise tolerance per precision. float32 gets 5e-4 (the verify command's 1e-4 times five):
#: random compositions five levels deep accumulate more rounding than the examples do.
TOLERANCE = {"float64": 1e-9, "float32": 5e-4}


@dataclass
class Subject:
    """One random project, prepared once for every backend."""

    text: str
    spec: ProjectSpec
    program: object
    cases: list[Case]
    expected: list
    name: str = ""
    failures: dict[str, str] = field(default_factory=dict)   # backend → first problem

    @property
    def precision(self) -> str:
        return self.spec.precision


def prepare(text: str, seed: int = 0, samples: Sequence[int] = (7, 1)) -> Subject:
    """Parse, differentiate and evaluate the reference for ``text`` (errors propagate)."""
    spec = parse_project(tomllib.loads(text))
    model = build_model(spec)
    program = lower(model)
    cases = make_cases(spec, count=len(samples), samples=samples, seed=seed)
    reference = Reference(model)
    return Subject(text, spec, program, cases, [reference.expected(c) for c in cases],
                   name=spec.name)


def judge(subject: Subject, backend: str, results: Sequence[Result]) -> str | None:
    """The first few disagreements of ``results`` with the reference, or None."""
    problems = [f"case {i}: {p}" for i, (r, w) in enumerate(zip(results, subject.expected))
                for p in mismatches(r, w, subject.precision, TOLERANCE[subject.precision])]
    if len(results) != len(subject.expected):
        problems.append(f"{len(results)} results for {len(subject.expected)} cases")
    return "\n".join(problems[:6]) or None


# ----------------------------------------------------------------------------------- NumPy
def run_numpy(registry, subjects: Sequence[Subject], workdir: Path) -> None:
    backend = registry.backend("numpy")
    for s in subjects:
        try:
            results = backend.run(s.program, {}, s.cases, workdir / f"numpy_{s.name}")
        except Exception as exc:            # a crash is a finding, whatever its type
            s.failures["numpy"] = f"{type(exc).__name__}: {str(exc)[:600]}"
            continue
        problem = judge(s, "numpy", results)
        if problem:
            s.failures["numpy"] = problem


# --------------------------------------------------------------------------------------- C
def _c_sources(subjects: Sequence[Subject], folder: Path) -> list[str]:
    from gradforge_c.plugin import emit_files, harness_text, trainer_text
    folder.mkdir(parents=True, exist_ok=True)
    sources, dispatch = [], []
    for s in subjects:
        files = emit_files(s.program)
        files[f"harness_{s.name}.c"] = harness_text(s.program)
        files[f"trainer_{s.name}.c"] = trainer_text(s.program)
        files[f"verify_main_{s.name}.c"] = (f"#define main gf_verify_{s.name}\n"
                                            f'#include "harness_{s.name}.c"\n')
        files[f"train_main_{s.name}.c"] = (f"#define main gf_train_{s.name}\n"
                                           f'#include "trainer_{s.name}.c"\n')
        for rel, text in files.items():
            (folder / rel).write_text(text, encoding="utf-8")
        sources += [f"{s.name}.c", f"verify_main_{s.name}.c", f"train_main_{s.name}.c"]
        dispatch.append(s.name)
    lines = ["#include <stdio.h>", "#include <string.h>"]
    lines += [f"int gf_verify_{n}(void);\nint gf_train_{n}(void);" for n in dispatch]
    lines += ["int main(int argc, char **argv)", "{",
              "    if (argc != 3) {", '        fputs("usage: fuzz verify|train MODEL\\n", stderr);',
              "        return 64;", "    }"]
    for n in dispatch:
        lines.append(f'    if (strcmp(argv[2], "{n}") == 0) {{')
        lines.append(f'        return argv[1][0] == \'t\' ? gf_train_{n}() : gf_verify_{n}();')
        lines.append("    }")
    lines += ['    fputs("unknown model\\n", stderr);', "    return 65;", "}", ""]
    (folder / "dispatch.c").write_text("\n".join(lines), encoding="utf-8")
    return sources + ["dispatch.c"]


def _gcc(folder: Path, sources: Sequence[str], precision: str, extra: Sequence[str]) -> str:
    from gradforge_c.plugin import compile_flags
    # -O1: a fraction of -O2's compile time on hundreds of models, the same strict warnings
    proc = subprocess.run(["gcc", "-O1", *compile_flags(precision), *extra, "-o", "fuzz",
                           *sources, "-lm"], cwd=folder, capture_output=True, text=True,
                          timeout=1800)
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-3000:]


def build_c(subjects: Sequence[Subject], folder: Path, extra_flags: Sequence[str] = ()
            ) -> tuple[Path | None, list[Subject]]:
    """One binary for ``subjects`` (same precision); models that do not compile are marked
    failed and left out. Returns (binary, subjects in it)."""
    if not subjects:
        return None, []
    error = _gcc(folder, _c_sources(subjects, folder), subjects[0].precision, extra_flags)
    if not error:
        return folder / "fuzz", list(subjects)
    built = []
    for s in subjects:                     # find the culprits one by one
        own = folder / f"alone_{s.name}"
        message = _gcc(own, _c_sources([s], own), s.precision, extra_flags)
        if message:
            s.failures["c"] = f"does not compile under the strict flags:\n{message}"
        else:
            built.append(s)
    if not built:
        return None, []
    error = _gcc(folder, _c_sources(built, folder), built[0].precision, extra_flags)
    assert not error, error
    return folder / "fuzz", built


def run_c(subjects: Sequence[Subject], workdir: Path, train: bool | int = True,
          extra_flags: Sequence[str] = (), label: str = "c") -> None:
    """Build per precision, run the verification protocol and (``train``: all, or every
    ``train``-th subject) a short training run compared with NumPy's ``train``."""
    every = 1 if train is True else int(train)
    trained = {id(s) for s in subjects[::every]} if every else set()
    for precision in ("float64", "float32"):
        group = [s for s in subjects if s.precision == precision]
        binary, built = build_c(group, workdir / f"{label}_{precision}", extra_flags)
        for s in built:
            proc = subprocess.run([str(binary), "verify", s.name], capture_output=True,
                                  text=True, input=encode_cases(s.program, s.cases), timeout=600)
            if proc.returncode != 0:
                s.failures[label] = f"harness exit {proc.returncode}: {proc.stderr[-2000:]}"
                continue
            problem = judge(s, label, decode_results(s.program, s.cases, proc.stdout))
            if problem:
                s.failures[label] = problem
            elif id(s) in trained:
                problem = compare_training(s, binary, workdir)
                if problem:
                    s.failures[f"{label}-train"] = problem


def training_data(subject: Subject, n: int = 10) -> dict[str, list[tuple[float, ...]]]:
    case = make_cases(subject.spec, count=1, samples=(n,), seed=17)[0]
    return {f.name: [tuple(row) for row in case.data[f.name]] for f in subject.program.fields}


def compare_training(subject: Subject, binary: Path, workdir: Path) -> str | None:
    """C ``<name>_train`` vs NumPy ``train()``: same epochs, batch size and seed."""
    import numpy as np
    from gradforge_c.plugin import CBackend
    from gradforge_numpy.plugin import load_module
    import gradforge
    program = subject.program
    data = training_data(subject)
    wrapper = workdir / f"train_{subject.name}.sh"      # the batch binary, as one trainer
    wrapper.write_text(f'#!/bin/sh\nexec "{binary}" train {subject.name}\n', encoding="utf-8")
    wrapper.chmod(0o755)

    class Prebuilt(CBackend):
        def build(self, *args, **kwargs):
            return wrapper

    try:
        run = Prebuilt().train(program, data, workdir)
    except GradforgeError as exc:
        return f"C training failed: {str(exc)[:1000]}"
    c_params = list(run.params)
    path = workdir / f"train_{subject.name}.py"
    path.write_text(gradforge.emit(program, "numpy")[f"{program.name}.py"], encoding="utf-8")
    module = load_module(path, f"_fuzz_train_{subject.name}")
    arrays = {f.name: np.array(data[f.name]).reshape((-1,) + f.shape) for f in program.fields}
    report = module.train(module.init_params(), arrays)
    np_params = [float(v) for v in module.flatten(report.params)]
    tol = 1e-9 if subject.precision == "float64" else 1e-3
    finite = [abs(v) for v in np_params if math.isfinite(v)]
    scale = max(finite + [1e-300])
    bad = [(i, c, w) for i, (c, w) in enumerate(zip(c_params, np_params))
           if not (abs(c - w) <= tol * max(abs(w), scale) or (math.isnan(c) and math.isnan(w)))]
    return f"trained parameters (index, C, NumPy): {bad[:4]}" if bad else None


# ----------------------------------------------------------------------------------- Swift
def run_swift(registry, subjects: Sequence[Subject], workdir: Path) -> None:
    """All ``subjects`` in one package, one ``swift build``; each Verify product is run."""
    if not subjects:
        return
    from gradforge_swift.plugin import module_name, swift_build_command
    backend = registry.backend("swift")
    options = backend.resolve_options({})
    package = workdir / "swift_package"
    targets = []
    for s in subjects:
        files = backend._files(s.program, options, verify=True)
        module = module_name(s.program, options)
        for rel, text in files.items():
            if rel.startswith(("Sources/", "Tests/")) and "Tests/" not in rel \
                    and not rel.startswith(f"Sources/{module}Train/"):
                target = package / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        targets.append(module)
    manifest = ["// swift-tools-version:5.9", "import PackageDescription", "",
                "let package = Package(", '    name: "GradforgeFuzz",', "    targets: ["]
    for m in targets:
        manifest.append(f'        .target(name: "{m}", path: "Sources/{m}"),')
        manifest.append(f'        .executableTarget(name: "{m}Verify", dependencies: ["{m}"], '
                        f'path: "Sources/{m}Verify"),')
    manifest += ["    ]", ")", ""]
    (package / "Package.swift").write_text("\n".join(manifest), encoding="utf-8")
    scratch = workdir / "swift-build"
    proc = subprocess.run(swift_build_command(package, scratch, workdir / "swift-cache"),
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        log = proc.stdout + proc.stderr
        for s, m in zip(subjects, targets):
            if f"/{m}/" in log or f"{m}Verify" in log and "error" in log:
                s.failures["swift"] = "swift build failed:\n" + _swift_errors(log, m)
        if not any("swift" in s.failures for s in subjects):
            for s in subjects:
                s.failures["swift"] = "swift build failed:\n" + log[-2000:]
        return
    for s, m in zip(subjects, targets):
        proc = subprocess.run([str(scratch / "release" / f"{m}Verify")], capture_output=True,
                              text=True, input=encode_cases(s.program, s.cases), timeout=600)
        if proc.returncode != 0:
            s.failures["swift"] = f"exit {proc.returncode}: {proc.stderr[-1000:]}"
            continue
        problem = judge(s, "swift", decode_results(s.program, s.cases, proc.stdout))
        if problem:
            s.failures["swift"] = problem


def _swift_errors(log: str, module: str) -> str:
    lines = [l for l in log.splitlines() if f"/{module}/" in l and "error" in l]
    return "\n".join(lines[:10]) or log[-2000:]


# ----------------------------------------------------------------------------------- Metal
def run_metal(registry, subjects: Sequence[Subject], workdir: Path) -> None:
    backend = registry.backend("metal")
    for s in subjects:
        if s.precision != "float32":
            continue
        try:
            results = backend.run(s.program, backend.resolve_options({}), s.cases,
                                  workdir / f"metal_{s.name}")
        except Exception as exc:
            s.failures["metal"] = f"{type(exc).__name__}: {str(exc)[:1500]}"
            continue
        problem = judge(s, "metal", results)
        if problem:
            s.failures["metal"] = problem


# --------------------------------------------------------------------------------- shrinking
EXPRESSION_KEYS = ("prediction", "loss", "regularization")


def to_toml(data: dict) -> str:
    """TOML text for a project dict (the subset project files use)."""
    out: list[str] = []

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"

    def table(name: str, body: dict):
        scalars = {k: v for k, v in body.items() if not (isinstance(v, dict) and k in SUBTABLES)}
        out.append(f"[{name}]")
        out.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        out.append("")
        for k, v in body.items():
            if isinstance(v, dict) and k in SUBTABLES:
                table(f"{name}.{k}", v)

    for name, body in data.items():
        table(name, body)
    return "\n".join(out)


SUBTABLES = {"definitions"}


def _candidates(source: str):
    """Simpler versions of an expression: each node replaced by one of its sub-expressions
    or by a leaf, outermost nodes first."""
    tree = ast.parse(source, mode="eval")
    nodes = [n for n in ast.walk(tree.body) if isinstance(n, ast.expr)]
    for index, node in enumerate(nodes):
        callee = node.func if isinstance(node, ast.Call) else None
        replacements = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)
                        and c is not callee and not isinstance(c, ast.GeneratorExp)
                        and not (isinstance(c, ast.Name) and c.id in ("i", "j"))]
        if not isinstance(node, (ast.Name, ast.Constant)):
            replacements += [ast.Constant(0.5), ast.Name("p")]
        for replacement in replacements:
            copy = ast.parse(source, mode="eval")
            target = [n for n in ast.walk(copy.body) if isinstance(n, ast.expr)][index]
            if target is copy.body:
                copy.body = replacement
            else:
                for parent in ast.walk(copy.body):
                    for name, child in ast.iter_fields(parent):
                        if child is target:
                            setattr(parent, name, replacement)
                        elif isinstance(child, list) and target in child:
                            child[child.index(target)] = replacement
            text = ast.unparse(copy)
            if text != source:
                yield text


def shrink(text: str, fails: Callable[[str], bool], budget: int = 80) -> str:
    """A smaller project file on which ``fails`` still holds (greedy, ``budget`` tries)."""
    data = tomllib.loads(text)
    tries = 0

    def attempt(candidate: dict) -> bool:
        nonlocal tries
        tries += 1
        try:
            return fails(to_toml(candidate))
        except Exception:
            return False

    improved = True
    while improved and tries < budget:
        improved = False
        model = data["model"]
        if "regularization" in model:
            trial = json.loads(json.dumps(data))
            del trial["model"]["regularization"]
            if attempt(trial):
                data, improved = trial, True
                continue
        keys = [("model", k) for k in EXPRESSION_KEYS if k in model]
        keys += [("definitions", k) for k in model.get("definitions", {})]
        for where, key in keys:
            table = model if where == "model" else model["definitions"]
            for candidate in _candidates(table[key]):
                if tries >= budget:
                    break
                trial = json.loads(json.dumps(data))
                (trial["model"] if where == "model" else trial["model"]["definitions"])[key] = \
                    candidate
                if attempt(trial):
                    data, improved = trial, True
                    break
            if improved:
                break
    return to_toml(data)


def still_fails(registry, backend: str, workdir: Path) -> Callable[[str], bool]:
    """A predicate for :func:`shrink`: ``backend`` still disagrees with the reference."""
    counter = [0]

    def fails(text: str) -> bool:
        counter[0] += 1
        try:
            subject = prepare(text)
        except (GradforgeError, ValueError, TypeError, ZeroDivisionError):
            return False
        folder = workdir / f"shrink{counter[0]}"
        folder.mkdir(parents=True, exist_ok=True)
        base = backend.split("-")[0]
        if base == "numpy":
            run_numpy(registry, [subject], folder)
        elif base in ("c", "sanitize"):
            run_c([subject], folder, train=backend.endswith("train"))
        elif base == "metal":
            run_metal(registry, [subject], folder)
        elif base == "swift":
            run_swift(registry, [subject], folder)
        shutil.rmtree(folder, ignore_errors=True)
        return backend in subject.failures or (base == "c" and "c" in subject.failures)
    return fails


def report(subject: Subject, shrunk: str | None = None) -> str:
    lines = [f"{subject.name}: " + "; ".join(subject.failures)]
    for backend, problem in subject.failures.items():
        lines.append(f"--- {backend}:\n{problem}")
    if shrunk:
        lines.append("--- shrunk project file:\n" + shrunk)
    else:
        lines.append("--- project file:\n" + subject.text)
    return "\n".join(lines)


_NAME = re.compile(r'^name = "([^"]+)"', re.M)


def subject_for(spec: ProjectSpec, cases: Sequence[Case], name: str | None = None) -> Subject:
    """A :class:`Subject` for a given project and hand-made cases (edge data, sanitizers)."""
    model = build_model(spec)
    reference = Reference(model, ieee=True)
    want = [reference.expected(c) for c in cases]
    if spec.precision == "float32":     # a value beyond FLT_MAX is inf in float32 arithmetic
        want = [Expected(*(float32_round(v) if isinstance(v, float)
                           else tuple(map(float32_round, v)) for v in astuple(e)))
                for e in want]
    return Subject("", spec, lower(model), list(cases), want, name=name or spec.name)
