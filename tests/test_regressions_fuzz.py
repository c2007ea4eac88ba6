"""Regression tests for the nine defect classes differential fuzzing found (issue 8).

Each class is checked on cases of our own (not the ones the fuzzer first hit), through the
whole pipeline, against the 50-digit reference, in NumPy and in C compiled with the strict
flags. Swift and Metal are covered for these shapes by tests/test_precedence_table.py and
tests/test_edge_data.py.
"""
from __future__ import annotations

import math

import pytest

import gradforge
from gradforge.backend import Case
from gradforge.errors import ProjectError
from gradforge.project import ProjectSpec
from gradforge.verification import make_cases

from conftest import require_tool
from differential import expected, mismatches, rows, run_backend

SCALAR = dict(parameters={"a": 0.6, "b": -0.3}, inputs={"t": {}}, targets={"y": {}})


def project(prediction: str, precision: str = "float64", **extra) -> ProjectSpec:
    fields = {k: extra.pop(k) for k in ("parameters", "inputs", "targets") if k in extra}
    return ProjectSpec.create(name="reg", precision=precision,
                              **{**SCALAR, **fields}, prediction=prediction,
                              loss=extra.pop("loss", "(prediction - y)**2/2"), **extra)


def check(spec: ProjectSpec, registry, cases=None, backends=("numpy", "c"), tol=None):
    if "c" in backends:
        require_tool("gcc")
    program = gradforge.compile_project(spec)
    cases = cases or make_cases(spec, count=2, samples=(9, 4), seed=3)
    want = expected(spec, cases)
    for name in backends:
        results = run_backend(registry.backend(name), program, cases)
        problems = [f"case {i}: {p}" for i, (r, w) in enumerate(zip(results, want))
                    for p in mismatches(r, w, spec.precision, tol, elementwise=True)]
        assert not problems, f"{name}: " + "\n".join(problems[:8])


def scalar_case(params, t, y=None):
    y = y if y is not None else [0.25] * len(t)
    return Case(tuple(params), {"t": rows(*t), "y": rows(*y)}, {})


# 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", [
    "max(a*t, b, t)",
    "min(a, b*t, t, 0.3)",
    "max([a*t, b, t - 1, a*b])",
    "min([t, a]) + max(sin(t), b, cos(a*t), -t)",
    "sum(max(w[j], v[j], a*t) for j in range(3))",
    "dot(max(w, v, [a, b, t]), w)",
])
def test_nary_max_min_builds_and_matches(prediction, registry):
    spec = project(prediction, parameters={"a": 0.6, "b": -0.3,
                                           "w": {"shape": [3], "init": [0.1, -0.4, 0.7]},
                                           "v": {"shape": [3], "init": [0.5, 0.2, -0.9]}})
    check(spec, registry)


def test_nary_max_tie_goes_to_first_argument(registry):
    # a = b exactly: max(a, b, t) with t below gives the whole gradient to a
    spec = project("max(a, b, t)", parameters={"a": 0.5, "b": 0.5})
    program = gradforge.compile_project(spec)
    case = scalar_case([0.5, 0.5], [0.1, -2.0], [0.0, 0.0])
    (result,) = run_backend(registry.backend("numpy"), program, [case])
    assert result.gradient == (0.5, 0.0)


# 2 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("prediction", [
    "a/(1 + relu(t))**-0.5",
    "a/(2 + softplus(t))**-1.5",
    "b/(max(t, a) + 2)**-2",
    "a/(1.5 + sigmoid(t))**-1",
    "a/clip(t, 0.5, 2)**-0.5 - b",
    "a*t/(3 + where(t > 0, t, -t))**-3",
    "(relu(t) + 1)**-0.5/(2 - min(t, b))**-0.5",
    "a/((relu(t) + 1)**-2)**-0.5",
])
def test_divisor_printed_as_quotient_keeps_parentheses(prediction, precision, registry):
    check(project(prediction, precision), registry)


# 3 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", [
    "where(t > 0 and a > 0, a*t, b)",
    "where(a > 0 or t < -0.5, a*t, b*t)",
    "where(not (b > 0) and (t > 0 or a < 0), t*a, b)",
    "where(t > 0, k2, t*a) + b",
    "k2*a + b*t + kk",
])
def test_numpy_broadcasts_mixed_conditions_and_constant_definitions(prediction, registry):
    spec = project(prediction, definitions={"k2": "2.0", "kk": "k2*k2 + 1"})
    check(spec, registry)


# 4 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_strict_c_when_the_per_sample_gradient_is_zero(precision, registry):
    spec = project("t", precision, regularization="a**2 + 0.5*b**2")
    program = gradforge.compile_project(spec)
    assert not program.loss_and_gradient.gradient
    check(spec, registry)


# 5 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision,big", [("float64", 800.0), ("float32", 100.0)])
def test_sigmoid_gradient_is_finite_for_large_arguments(precision, big, registry):
    spec = project("sigmoid(a*t) + softplus(b*t)", precision)
    cases = [scalar_case([2.0, 1.0], [big, -big, 0.3, 4 * big])]
    check(spec, registry, cases)
    (result,) = run_backend(registry.backend("c"), gradforge.compile_project(spec), cases)
    assert all(math.isfinite(g) for g in result.gradient)


@pytest.mark.parametrize("prediction,inf", [
    ("sigmoid(t + a) + softplus(b - t) + 3*a", math.inf),
    ("sigmoid(t + a) + softplus(t + b) + relu(t - a) + clip(t, a, 1) + 3*a", -math.inf),
    ("max(t, a, b) + exp(t*0.5 - a)", -math.inf),
])
def test_zero_branch_stays_zero_with_infinite_input(prediction, inf, registry):
    # t = ±inf only reaches saturated branches: the objective is finite, so the gradient is
    # the finite limit (the unselected branch's inf/NaN never leaks in as 0·inf)
    spec = project(prediction)
    case = scalar_case([0.5, -0.2], [inf, 1.0], [0.0, 0.0])
    (want,) = expected(spec, [case])
    assert math.isfinite(want.objective)
    for name in ("numpy", "c"):
        (result,) = run_backend(registry.backend(name), gradforge.compile_project(spec), [case])
        assert all(math.isfinite(g) for g in result.gradient), (name, result.gradient)
        assert not mismatches(result, want, "float64", elementwise=True), name


# 6 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_no_samples_gives_the_regularizer(reduction, registry):
    spec = project("a*t + b", regularization="0.5*a**2 + b**4", reduction=reduction)
    case = Case((0.6, -0.3), {"t": (), "y": ()}, {})
    check(spec, registry, [case])
    (result,) = run_backend(registry.backend("numpy"), gradforge.compile_project(spec), [case])
    assert result.objective == pytest.approx(0.5 * 0.36 + 0.3 ** 4)
    assert result.predictions == ()


# 7 -------------------------------------------------------------------------------------------
def test_sign_of_nan_is_nan(registry):
    spec = project("a*sign(t) + abs(b*t)")
    case = scalar_case([0.6, -0.3], [math.nan, 1.0, 0.0, -2.0], [0.0] * 4)
    want = expected(spec, [case])[0]
    assert math.isnan(want.predictions[0]) and math.isnan(want.objective)
    for name in ("numpy", "c"):
        (result,) = run_backend(registry.backend(name), gradforge.compile_project(spec), [case])
        assert not mismatches(result, want, "float64", elementwise=True), name
        assert result.predictions[1:] == pytest.approx(want.predictions[1:])


# 8 -------------------------------------------------------------------------------------------
def test_numpy_module_imports_a_3000_term_sum(registry):
    n = 3000
    spec = project(f"sum(a*x[j]*x[j] + b*x[j] for j in range({n}))",
                   inputs={"x": {"shape": [n]}})
    rng = [((j % 7) - 3) / 10 for j in range(n)]
    case = Case((0.6, -0.3), {"x": (tuple(rng), tuple(reversed(rng))), "y": rows(1.0, 2.0)},
                {})
    check(spec, registry, [case], backends=("numpy",))


# 9 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("literal,word,column", [("1e39", "overflows", 7),
                                                 ("-4e38", "overflows", 8),
                                                 ("1e-46", "underflows", 7)])
def test_float32_literal_out_of_range_is_a_project_error(literal, word, column):
    spec = project(f"a*t + {literal}*b", "float32")
    with pytest.raises(ProjectError) as info:
        gradforge.compile_project(spec)
    message = str(info.value)
    assert "model.prediction" in message and word in message and f"at column {column} " in message


def test_float32_default_out_of_range_is_a_project_error():
    spec = project("a*t + k*b", "float32", constants={"k": 1e39})
    with pytest.raises(ProjectError, match="constants.k"):
        gradforge.compile_project(spec)


def test_float32_folded_constant_beyond_range_prints_as_infinity(registry):
    spec = project("a*t*(1e30*1e30) + b", "float32")
    program = gradforge.compile_project(spec)
    source = gradforge.emit(program, "c")["reg.c"]
    assert "HUGE_VALF" in source and "inff" not in source
    assert "Float.infinity" in "".join(gradforge.emit(program, "swift").values())
    metal = gradforge.emit(program, "metal")["reg.metal"]
    assert "INFINITY" in metal and "inff" not in metal
    case = scalar_case([0.5, 0.25], [1.0, -1.0, 0.0], [0.0] * 3)
    for name in ("numpy", "c"):
        (result,) = run_backend(registry.backend(name), program, [case])
        assert result.predictions[0] == math.inf and result.predictions[1] == -math.inf
        assert math.isnan(result.predictions[2])          # inf·0 in float32, as IEEE says
