"""Property tests: hypothesis-generated random models over the whole vocabulary, through
the full pipeline (parse → reverse mode → IR → NumPy backend) against the reference."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import gradforge
from gradforge.reference import Reference
from gradforge.verification import compare, make_cases

from random_models import projects


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(projects())
def test_random_models_match_reference(spec):
    program = gradforge.compile_project(spec)
    cases = make_cases(spec, count=1, samples=(9,))
    reference = Reference(spec)
    assert reference.derivative_error(cases[0]) < 1e-15
    from gradforge.plugins import load_registry
    backend = load_registry().backend("numpy")
    with tempfile.TemporaryDirectory() as tmp:
        (result,) = backend.run(program, {}, cases, Path(tmp))
    assert not compare(result, reference.expected(cases[0]), "float64")


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(projects())
def test_generation_is_deterministic(spec):
    first = gradforge.emit(gradforge.compile_project(spec), "numpy")
    second = gradforge.emit(gradforge.compile_project(spec), "numpy")
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("block", range(10))
def test_sweep_of_random_models(block):
    """200 seeded random models (GRADFORGE_SLOW=1): reference self-check and NumPy backend."""
    from gradforge.plugins import load_registry
    from random_models import random_project
    backend = load_registry().backend("numpy")
    for seed in range(block * 20, block * 20 + 20):
        spec = random_project(1000 + seed, depth=5)
        program = gradforge.compile_project(spec)
        cases = make_cases(spec, count=1, samples=(7,), seed=seed)
        reference = Reference(spec)
        assert reference.derivative_error(cases[0]) < 1e-15, seed
        with tempfile.TemporaryDirectory() as tmp:
            (result,) = backend.run(program, {}, cases, Path(tmp))
        assert not compare(result, reference.expected(cases[0]), "float64"), seed
