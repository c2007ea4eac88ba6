"""Shared helpers of the differential tests: run backends on cases, compare with the
50-digit reference under gradforge's documented rules for NaN and infinities.

``compare`` in :mod:`gradforge.verification` is the verify command's check (finite values);
here a NaN matches a NaN and an infinity an infinity of the same sign, because the edge-data
rules in docs/semantics.md say exactly when a backend must return them.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

from gradforge.backend import Case
from gradforge.reference import Reference
from gradforge.verification import TOLERANCE


def close(got: float, want: float, tol: float, scale: float) -> bool:
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    return abs(got - want) <= tol * max(abs(want), scale)


def mismatches(result, want, precision: str, tol: float | None = None,
               elementwise: bool = False) -> list[str]:
    """Differences between a backend :class:`Result` and an :class:`Expected`.

    Normwise (like ``gradforge verify``) unless ``elementwise``: then every entry is judged
    on its own scale (at least 1), so a wrong small entry cannot hide behind a large one.
    """
    tol = TOLERANCE[precision] if tol is None else tol
    problems = []
    pairs = [("objective", [result.objective], [want.objective]),
             ("gradient", result.gradient, want.gradient),
             ("prediction", result.predictions, want.predictions)]
    if result.stepped is not None and want.stepped is not None:
        pairs.append(("step", result.stepped, want.stepped))
    for label, got, expected in pairs:
        if len(got) != len(expected):
            problems.append(f"{label}: {len(got)} values, expected {len(expected)}")
            continue
        finite = [abs(w) for w in expected if math.isfinite(w)]
        scale = 1.0 if elementwise else max(finite + [1e-300])
        for i, (g, w) in enumerate(zip(got, expected)):
            if not close(g, w, tol, scale):
                problems.append(f"{label}[{i}]: got {g!r}, expected {w!r}")
    return problems


def run_backend(backend, program, cases: Sequence[Case], options=None):
    with tempfile.TemporaryDirectory(prefix=f"gradforge-{backend.name}-") as tmp:
        return backend.run(program, backend.resolve_options(options or {}), list(cases),
                           Path(tmp))


def expected(spec_or_model, cases: Sequence[Case]):
    reference = Reference(spec_or_model)
    return [reference.expected(c) for c in cases]


def rows(*values: float) -> tuple[tuple[float, ...], ...]:
    """Scalar-field samples as the rows a :class:`Case` holds."""
    return tuple((float(v),) for v in values)
