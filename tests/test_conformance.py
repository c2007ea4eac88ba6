"""Conformance: every registered backend × every example and random models, against the
independent 50-digit reference (objective, gradient, predictions, one optimizer step).

A backend that only supports float32 (Metal) is checked on the float32 variant of each
project. Toolchains are required in CI (a missing one fails) and optional elsewhere.
"""
from __future__ import annotations

import dataclasses
import functools

import pytest

import gradforge
from gradforge.errors import BackendError
from gradforge.lower import lower
from gradforge.model import build_model
from gradforge.reference import Reference
from gradforge.verification import compare, make_cases

from conftest import EXAMPLES, IN_CI, example_path
from random_models import random_project

RANDOM_SEEDS = (11, 12)
SUBJECTS = [f"example:{name}" for name in EXAMPLES] + [f"random:{s}" for s in RANDOM_SEEDS] \
    + ["numerics:stable"]


def _numerics_spec():
    """log1p, expm1 and the one-exp softplus/sigmoid far out on both tails (|u| ~ 100)."""
    return gradforge.ProjectSpec.create(
        name="numerics", parameters={"a": 0.7, "b": -0.3, "c": 0.2},
        inputs={"x": {}}, targets={"y": {}},
        prediction="softplus(60*(a*x + b)) / 60 - 3*sigmoid(-50*(a*x - c)) "
                   "+ log1p(c*c*x*x) + expm1(0.5*tanh(b*x))",
        loss="(prediction - y)**2", reduction="mean")


def _base_spec(subject: str):
    kind, name = subject.split(":")
    if kind == "numerics":
        return _numerics_spec()
    if kind == "example":
        return gradforge.load_project(example_path(name))
    return random_project(int(name), precision="float32" if int(name) % 2 == 0 else "float64")


@functools.lru_cache(maxsize=None)
def _prepared(subject: str, precision: str | None):
    spec = _base_spec(subject)
    if precision and spec.precision != precision:
        spec = dataclasses.replace(spec, precision=precision)
    cases = make_cases(spec, count=3, samples=(13, 50, 65), seed=1)
    model = build_model(spec)      # one parse for the IR and the reference
    reference = Reference(model)
    expected = [reference.expected(c) for c in cases]
    return spec, lower(model), cases, expected, reference


def _backend_names():
    from gradforge.plugins import load_registry
    return sorted(load_registry().backends)


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("backend_name", _backend_names())
def test_backend_matches_reference(backend_name, subject, registry, tmp_path):
    backend = registry.backend(backend_name)
    missing = [t for t in backend.toolchains() if not t.available]
    if missing:
        message = "; ".join(f"{t.name}: {t.detail}" for t in missing)
        (pytest.fail if IN_CI else pytest.skip)(f"toolchain missing: {message}")
    spec, program, cases, expected, _ = _prepared(subject, None)
    try:
        backend.emit(program, backend.resolve_options({}))
    except BackendError:
        if spec.precision == "float32" and backend.trains(program):
            raise
        if spec.precision != "float32":
            spec, program, cases, expected, _ = _prepared(subject, "float32")
        if not backend.trains(program):     # refused at build time, as documented
            with pytest.raises(BackendError, match="cannot train|bounds"):
                backend.emit(program, backend.resolve_options({}))
            return
    results = backend.run(program, backend.resolve_options({}), cases, tmp_path)
    assert len(results) == len(cases)
    problems = []
    for i, (result, want) in enumerate(zip(results, expected)):
        problems += [f"case {i}: {p}" for p in compare(result, want, program.precision)]
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("subject", SUBJECTS)
def test_reference_derivative_agrees_with_finite_differences(subject):
    """The reference itself: sympy.diff chain vs 50-digit central differences."""
    _, _, cases, _, reference = _prepared(subject, None)
    assert reference.derivative_error(cases[0]) < 1e-15
