"""Stage 8: verification — seeded cases, the reference, tolerances and the verify report.

Tolerances (relative, normwise): 1e-9 for float64 and 1e-4 for float32. A gradient entry
passes when ``|got − want| ≤ tol · max(|want|, ‖want‖∞)``: small entries of a large gradient
are judged against the gradient's scale, the way accumulated rounding actually behaves.
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .backend import Backend, Case, Result, check_output_names
from .errors import GradforgeError
from .ir import Program
from .printing import float32_round
from .project import ProjectSpec
from .reference import Expected, Reference

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def make_cases(spec: ProjectSpec, count: int = 3, samples: Sequence[int] = (13, 50),
               seed: int = 0) -> list[Case]:
    """Seeded random cases: θ near its initial value, fields ~ N(0, 1), constants perturbed."""
    rng = random.Random(seed)
    cases = []
    rnd = float32_round if spec.precision == "float32" else float
    for k in range(count):
        n = samples[k % len(samples)]
        params = tuple(rnd(v + rng.uniform(-0.5, 0.5))
                       for p in spec.parameters for v in p.init)
        data = {f.name: tuple(tuple(rnd(rng.gauss(0.0, 1.0)) for _ in range(f.size))
                              for _ in range(n)) for f in spec.fields}
        constants = {c.name: rnd(c.default * (1 + 0.1 * rng.uniform(-1, 1)))
                     for c in spec.constants}
        cases.append(Case(params, data, constants))
    return cases


def _close(got: Sequence[float], want: Sequence[float], tol: float, label: str) -> list[str]:
    if len(got) != len(want):
        return [f"{label}: got {len(got)} values, expected {len(want)}"]
    scale = max([abs(w) for w in want] + [1e-300])
    problems = []
    for i, (g, w) in enumerate(zip(got, want)):
        if not abs(g - w) <= tol * max(abs(w), scale):
            problems.append(f"{label}[{i}]: got {g!r}, expected {w!r}")
    return problems


def compare(result: Result, want: Expected, precision: str) -> list[str]:
    """Human-readable mismatches between a backend result and the reference (empty = pass)."""
    tol = TOLERANCE[precision]
    problems = _close([result.objective], [want.objective], tol, "objective")
    problems += _close(result.gradient, want.gradient, tol, "gradient")
    problems += _close(result.predictions, want.predictions, tol, "prediction")
    if result.stepped is not None and want.stepped is not None:
        problems += _close(result.stepped, want.stepped, tol, "step")
    return problems


@dataclass
class BackendReport:
    """One backend's verification outcome."""

    backend: str
    status: str                       # "pass" | "FAIL" | "skipped" | "error"
    detail: str = ""
    worst: float = 0.0                # largest relative gradient error seen
    problems: list[str] = field(default_factory=list)


def relative_error(got: Sequence[float], want: Sequence[float]) -> float:
    scale = max([abs(w) for w in want] + [1e-300])
    return max((abs(g - w) / max(abs(w), scale) for g, w in zip(got, want)), default=0.0)


def verify(spec: ProjectSpec, program: Program, backends: Sequence[Backend],
           cases: Sequence[Case] | None = None, options: dict | None = None,
           reference: Reference | None = None) -> tuple[float, list[BackendReport]]:
    """Run each backend on seeded cases; returns (derivative check error, reports)."""
    cases = list(cases or make_cases(spec))
    reference = reference or Reference(spec)
    derivative_error = reference.derivative_error(cases[0])   # FD check: slow, one case
    expected = [reference.expected(c) for c in cases]
    reports = []
    for backend in backends:
        missing = [t for t in backend.toolchains() if not t.available]
        if not backend.can_run:
            reports.append(BackendReport(backend.name, "skipped", "backend cannot run its output"))
            continue
        if missing:
            reports.append(BackendReport(backend.name, "skipped",
                                         "; ".join(f"{t.name}: {t.detail}" for t in missing)))
            continue
        with tempfile.TemporaryDirectory(prefix=f"gradforge-{backend.name}-") as tmp:
            try:
                resolved = backend.resolve_options((options or {}).get(backend.name, {}))
                check_output_names(backend, program, resolved)
                results = backend.run(program, resolved, cases, Path(tmp))
            except GradforgeError as exc:
                reports.append(BackendReport(backend.name, "error", str(exc).splitlines()[0]))
                continue
        problems = []
        worst = 0.0
        for result, want in zip(results, expected):
            problems += compare(result, want, program.precision)
            worst = max(worst, relative_error(result.gradient, want.gradient),
                        relative_error([result.objective], [want.objective]))
        status = "FAIL" if problems else "pass"
        reports.append(BackendReport(backend.name, status, f"{len(cases)} cases", worst, problems))
    return derivative_error, reports
