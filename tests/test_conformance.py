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
    + ["numerics:stable"] + ["bounded:sgd", "bounded:adam"]


def _numerics_spec():
    """log1p, expm1 and the one-exp softplus/sigmoid far out on both tails (|u| ~ 100)."""
    return gradforge.ProjectSpec.create(
        name="numerics", parameters={"a": 0.7, "b": -0.3, "c": 0.2},
        inputs={"x": {}}, targets={"y": {}},
        prediction="softplus(60*(a*x + b)) / 60 - 3*sigmoid(-50*(a*x - c)) "
                   "+ log1p(c*c*x*x) + expm1(0.5*tanh(b*x))",
        loss="(prediction - y)**2", reduction="mean")


def boxed_decay_spec(optimizer: str = "sgd"):
    """decay's model with a box that one first-order step crosses: the targets (1 to 2.5) lie
    above the prediction, so the step raises amplitude (free below its upper bound 1.1),
    w[0] and w[1] (across their upper bounds 0.05 and 0.02) and lowers rate (across its lower
    bound 0 from cases that start on it). Per-element bounds on an array, lower and upper
    sides: the one-step functions must project, or their step misses the reference's."""
    return gradforge.ProjectSpec.create(
        name="boxed_decay",
        parameters={"amplitude": {"init": 1.0, "upper": 1.1},
                    "rate": {"init": 0.1, "lower": 0.0},
                    "w": {"shape": [2], "init": [0.0, 0.0], "lower": [-0.05, -4.0],
                          "upper": [0.05, 0.02]}},
        inputs={"t": {"range": [0.0, 2.0]}}, targets={"y": {"range": [1.0, 2.5]}},
        prediction="amplitude*exp(-rate*t) + w[0] + w[1]*t", loss="(prediction - y)**2",
        reduction="mean", training={"optimizer": optimizer, "learning_rate": 0.1})


def _base_spec(subject: str):
    kind, name = subject.split(":")
    if kind == "numerics":
        return _numerics_spec()
    if kind == "bounded":
        return boxed_decay_spec(name)
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


@pytest.mark.parametrize("subject", ["bounded:sgd", "bounded:adam"])
def test_bounded_subjects_step_across_their_bounds(subject):
    """The bounded subjects test the projection: in every case the raw 50-digit step leaves
    the box (so a backend whose one step does not project misses the reference by ≥ 0.005,
    far beyond the tolerances), and the reference's step is that step clipped into the box."""
    spec, program, cases, expected, reference = _prepared(subject, None)
    lower, upper = program.lower, program.upper
    for case, want in zip(cases, expected):
        raw = [float(v) for v in reference.step_mp(case.params, reference.gradient_mp(case),
                                                   project=False)]
        assert want.stepped == tuple(min(max(v, lo), hi) for v, lo, hi in zip(raw, lower, upper))
        outside = [k for k, (v, lo, hi) in enumerate(zip(raw, lower, upper))
                   if v < lo - 5e-3 or v > hi + 5e-3]
        assert outside, (raw, lower, upper)
        assert want.stepped[0] == raw[0] < upper[0]      # a free element is left alone


def test_reference_projection_keeps_nan():
    """The clip compares, as every backend's does: a NaN step stays NaN (so a trainer still
    stops with non_finite), and infinities are clipped onto finite bounds."""
    reference = Reference(boxed_decay_spec("sgd"))
    nan, inf = float("nan"), float("inf")
    step = reference.step_mp([1.0, 0.0, 0.0, 0.0], [nan, -inf, -inf, inf])
    assert str(step[0]) == "nan"
    assert [float(v) for v in step[1:]] == [inf, 0.05, -4.0]
