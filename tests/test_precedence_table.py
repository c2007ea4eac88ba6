"""Precedence table: every binary and unary operator against every function and every
Piecewise-valued operand, through every backend's printer, against the 50-digit reference.

One project holds the whole table: entry i is the definition ``e<i>`` over its own parameter
``a[i]``, and the prediction is Σ w[i]·e<i>, with J = mean(prediction). Then ∂J/∂w[i] is the
mean value of entry i and ∂J/∂a[i] the mean of its derivative, so each gradient entry checks
one table cell on its own (elementwise, not normwise); the objective and the predictions check
the loss and predict kernels, which print the cells again. Each backend builds the table once
(Swift and Metal: one build each).
"""
from __future__ import annotations

import math

import pytest

import gradforge
from gradforge.backend import Case
from gradforge.project import ProjectSpec

from conftest import IN_CI
from differential import expected, rows, run_backend

#: Operands whose value may have any sign: functions, Piecewise forms, sums and products.
SIGNED = [
    "exp(A*t)", "log(1 + (A*t)**2)", "sqrt(1 + (A*t)**2)", "abs(A*t)", "sign(t)*A", "sin(A*t)",
    "cos(A*t)", "tan(0.5*A*t)", "tanh(A*t)", "relu(A*t)", "max(A*t, -0.3)", "max(t, A, -1)",
    "min(A*t, 0.2)", "clip(A*t, -0.5, 0.5)", "where(t > 0, A*t, -A)", "sigmoid(A*t)",
    "softplus(A*t)", "A*t", "A*t + 0.5", "-A*t", "A*t*t", "A/(1 + t**2)", "(A*t)**2",
    "(1 + relu(A*t))**-1", "(1 + (A*t)**2)**-0.5",
]
#: Positive operands (bases of fractional powers, divisors).
POSITIVE = [
    "exp(A*t)", "(1 + log(1 + (A*t)**2))", "sqrt(1 + (A*t)**2)", "(1 + abs(A*t))",
    "(2 + sign(t)*A)", "(1.5 + tanh(A*t))", "(1 + relu(A*t))", "max(A*t, 0.5)",
    "max(t, A, 1)", "clip(A*t, 0.5, 2)", "where(t > 0, 1 + A*t*t, 2)", "sigmoid(A*t)",
    "softplus(A*t)", "(1 + relu(A*t))**-1", "(1 + (A*t)**2)**-0.5", "(1 + relu(A*t))**2",
]
OTHER = "(t + 1.5)"           # the second operand of binary operators
EXPONENTS = ["2", "-1", "-2", "0.5", "-0.5", "-1.5", "A"]


def table() -> list[str]:
    cells = []
    for f in SIGNED:
        cells += [f"{f} + {OTHER}", f"{OTHER} - {f}", f"{OTHER} - -{f}", f"{f}*{OTHER}",
                  f"-{f}", f"-{f}*{OTHER}", f"{f}/(2 + sin(t))", f"{f}**2", f"-{f}**2"]
    for f in POSITIVE:
        cells += [f"{OTHER}/{f}", f"-{OTHER}/{f}"]
        for e in EXPONENTS:
            cells += [f"{f}**{e}", f"{OTHER}/{f}**{e}", f"-{f}**{e}"]
    cells.append(f"({POSITIVE[6]}**-0.5)**-0.5/{OTHER}")
    return cells


def table_project(precision: str) -> ProjectSpec:
    cells = table()
    count = len(cells)
    definitions = {f"e{i}": cell.replace("A", f"a[{i}]") for i, cell in enumerate(cells)}
    # partial sums of 16 cells: the reference differentiates each let by the symbols it
    # reads, so one flat sum over every cell would cost (cells)² there
    chunks = [range(k, min(k + 16, count)) for k in range(0, count, 16)]
    for k, chunk in enumerate(chunks):
        definitions[f"s{k}"] = " + ".join(f"w[{i}]*e{i}" for i in chunk)
    prediction = " + ".join(f"s{k}" for k in range(len(chunks)))
    return ProjectSpec.create(
        name="prec", precision=precision,
        parameters={"a": {"shape": [count], "init": [0.7 + 0.01 * (i % 13) for i in range(count)]},
                    "w": {"shape": [count], "init": 1.0}},
        inputs={"t": {}}, definitions=definitions, prediction=prediction, loss="prediction")


def cases(count: int) -> list[Case]:
    params = tuple([0.7 + 0.01 * (i % 13) for i in range(count)] + [1.0] * count)
    return [Case(params, {"t": rows(0.35, -0.8, 1.3, -1.7, 0.05)}, {})]


@pytest.fixture(scope="module")
def reference_table():
    """Programs per precision and one reference (float64 inputs; the float32 backends see
    them rounded, 3e-8 relative, far inside the float32 tolerance)."""
    cs = cases(len(table()))
    want = expected(table_project("float64"), cs)[0]
    return {precision: (gradforge.compile_project(table_project(precision)), cs, want)
            for precision in ("float64", "float32")}


def bad_cells(result, want, precision: str) -> list[str]:
    cells = table()
    count = len(cells)
    tol = {"float64": 1e-9, "float32": 1e-4}[precision]
    problems = []
    for i, cell in enumerate(cells):
        for label, index in (("value", count + i), ("derivative", i)):
            got, exp = result.gradient[index], want.gradient[index]
            if not abs(got - exp) <= tol * max(abs(exp), 1.0):
                problems.append(f"{label} of `{cell}`: got {got!r}, expected {exp!r}")
    return problems


@pytest.mark.parametrize("backend_name,precision", [
    ("numpy", "float64"), ("c", "float64"), ("c", "float32"), ("swift", "float64"),
    ("metal", "float32"),
])
def test_precedence_table(backend_name, precision, registry, reference_table, tmp_path):
    backend = registry.backend(backend_name)
    missing = [t for t in backend.toolchains() if not t.available]
    if missing:
        (pytest.fail if IN_CI else pytest.skip)(f"toolchain missing: {missing}")
    program, cs, want = reference_table[precision]
    assert len(table()) > 400
    (result,) = backend.run(program, backend.resolve_options({}), cs, tmp_path)
    assert math.isfinite(result.objective)
    problems = bad_cells(result, want, precision)
    assert not problems, f"{len(problems)} cells wrong:\n" + "\n".join(problems[:20])
    # the loss and predict kernels print the cells again (the gradient kernel shares its
    # values with the derivative): their sums over all cells must match too
    tol = {"float64": 1e-9, "float32": 1e-4}[precision]
    for label, got, exp in [("objective", [result.objective], [want.objective]),
                            ("prediction", result.predictions, want.predictions)]:
        for g, w in zip(got, exp):
            assert abs(g - w) <= tol * max(abs(w), 1.0), \
                f"{label}: got {g!r}, expected {w!r} (a cell printed wrong in that kernel)"
