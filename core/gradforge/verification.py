"""Stage 8: verification — seeded cases, the reference, tolerances and the verify report.

Tolerances (relative, normwise): 1e-9 for float64 and 1e-4 for float32. A gradient entry
passes when ``|got − want| ≤ tol · max(|want|, ‖want‖∞)``: small entries of a large gradient
are judged against the gradient's scale, the way accumulated rounding actually behaves.
"""
from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .backend import Backend, Case, Result, check_output_names
from .errors import GradforgeError
from .ir import Program
from .printing import float32_round
from .project import FieldSpec, ProjectSpec
from .reference import Expected, OutsideDomain, Reference

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


#: Parameter perturbations tried, largest first, until a case is inside the model's domain.
SHRINK = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)


def make_cases(spec: ProjectSpec, count: int = 3, samples: Sequence[int] = (13, 50),
               seed: int = 0, data: Mapping[str, Sequence[tuple[float, ...]]] | None = None,
               in_domain: Callable[[Case], bool] | None = None) -> list[Case]:
    """Seeded cases: θ near its initial value (±0.5, inside its lower/upper bounds),
    constants perturbed by up to 10%, and per-sample fields uniform in their declared
    ``range``, else ~ N(0, 1) — or, with ``data``, consecutive real rows. With ``in_domain``, a case outside the model's domain
    draws again with θ closer to its initial value (down to the initial value itself)."""
    rng = random.Random(seed)
    cases = []
    rnd = float32_round if spec.precision == "float32" else float
    total = len(next(iter(data.values()))) if data else 0
    init = [v for p in spec.parameters for v in p.init]
    lows = [v for p in spec.parameters for v in (p.lower or (-math.inf,) * p.size)]
    highs = [v for p in spec.parameters for v in (p.upper or (math.inf,) * p.size)]
    start = 0
    for k in range(count):
        n = samples[k % len(samples)]
        offsets = [rng.uniform(-0.5, 0.5) for p in spec.parameters for _ in p.init]
        if data:
            n = min(n, total)
            rows = [(start + i) % total for i in range(n)]
            start = (start + n) % total
            fields = {f.name: tuple(tuple(rnd(v) for v in data[f.name][i]) for i in rows)
                      for f in spec.fields}
        else:
            fields = {f.name: tuple(tuple(rnd(_draw(rng, f)) for _ in range(f.size))
                                    for _ in range(n)) for f in spec.fields}
        constants = {c.name: rnd(c.default * (1 + 0.1 * rng.uniform(-1, 1)))
                     for c in spec.constants}
        for scale in SHRINK if in_domain else SHRINK[:1]:
            case = Case(tuple(rnd(min(max(v + scale * u, low), high))
                              for v, u, low, high in zip(init, offsets, lows, highs)),
                        fields, constants)
            if in_domain is None or in_domain(case):
                break
        cases.append(case)
    return cases


def rows(dataset) -> dict[str, list[tuple[float, ...]]]:
    """A :class:`gradforge.data.Dataset` as ``{field: [row values …]}`` for :func:`make_cases`."""
    return {name: [tuple(map(float, row)) for row in column]
            for name, column in dataset.columns.items()}


def _draw(rng: random.Random, field: FieldSpec) -> float:
    if field.range is None:
        return rng.gauss(0.0, 1.0)
    low, high = field.range
    return rng.uniform(low, high)


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


DOMAIN_HINT = ("declare where the fields live, e.g. `x = { range = [0.1, 10] }` under "
               "[inputs]/[targets], or pass --data FILE with real rows")


def verify(spec: ProjectSpec, program: Program, backends: Sequence[Backend],
           cases: Sequence[Case] | None = None, options: dict | None = None,
           reference: Reference | None = None,
           progress: Callable[[str], None] | None = None,
           domain_hint: str | None = None) -> tuple[float, list[BackendReport]]:
    """Run each backend on seeded cases; returns (derivative check error, reports).

    A case outside the model's domain (no finite real reference value) is an
    :class:`OutsideDomain` error naming the case and sample, never a backend failure.
    ``domain_hint`` replaces the advice given then (where the cases came from real data).
    ``progress`` receives a short line per stage (for a terminal's status line)."""
    say = progress or (lambda message: None)
    reference = reference or Reference(spec)
    cases = list(cases or make_cases(spec, in_domain=lambda c: not reference.domain_problem(c)))
    def fd_progress(i: int, n: int) -> None:
        say(f"reference: derivative check, finite differences for parameter {i + 1}/{n}")

    derivative_error = _in_domain(
        lambda: reference.derivative_error(cases[0], progress=fd_progress if progress else None),
        spec, 0, len(cases), domain_hint)
    expected = []
    for k, case in enumerate(cases):
        say(f"reference: case {k + 1}/{len(cases)} ({case.n} samples, 50 digits)")
        expected.append(_in_domain(lambda: reference.expected(case), spec, k, len(cases),
                                   domain_hint))
    reports = []
    for number, backend in enumerate(backends, start=1):
        missing = [t for t in backend.toolchains() if not t.available]
        if not backend.can_run:
            reports.append(BackendReport(backend.name, "skipped", "backend cannot run its output"))
            continue
        if missing:
            reports.append(BackendReport(backend.name, "skipped",
                                         "; ".join(f"{t.name}: {t.detail}" for t in missing)))
            continue
        say(f"{backend.name} ({number}/{len(backends)}): building and running "
            f"{len(cases)} cases")
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


def _in_domain(compute, spec: ProjectSpec, k: int, count: int, hint: str | None):
    """``compute()``, with an :class:`OutsideDomain` error told as one line with the fix."""
    try:
        return compute()
    except OutsideDomain as exc:
        unranged = [f.name for f in spec.fields if f.range is None]
        if hint is None:
            hint = DOMAIN_HINT + (f" (fields without a range: {', '.join(unranged)})"
                                  if unranged else "")
        raise OutsideDomain(f"case {k + 1} of {count} is outside the model's domain: {exc}; "
                            f"{hint}") from None
