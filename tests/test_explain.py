"""``gradforge explain`` prints the gradient as a user writes it — and the printed math is right.

Golden key lines per example; no SymPy spelling (``Piecewise``, ``Abs``, ``re``/``im``, ``w_0``)
anywhere; and every printed formula, parsed back with gradforge's own expression parser and
instantiated at every index, agrees with the IR's gradient at random points.
"""
from __future__ import annotations

import itertools
import re

import pytest
import sympy as sp

from gradforge import cli
from gradforge.derivative import substitute
from gradforge.explain import _Folder, agree, report
from gradforge.expressions import (Array, ExpressionParser, maximum, minimum, relu, sigmoid,
                                   softplus)
from gradforge.lower import compile_project
from gradforge.project import load_project

from conftest import EXAMPLES, example_path

#: Key lines of each example's explain output, exactly as printed.
GOLDEN = {
    "trend": [
        "  prediction = a*x**2 + b*x + c",
        "  ∂ℓ/∂a = x**2*sign(prediction - y)",
        "  ∂ℓ/∂b = x*sign(prediction - y)",
        "  ∂ℓ/∂c = sign(prediction - y)",
    ],
    "logistic": [
        "  z = dot(w, x) + b",
        "  prediction = sigmoid(z)",
        "  ℓ = softplus(z) - label*z",
        "  ∂ℓ/∂w[j] = (sigmoid(z) - label)*x[j]   for j in range(3)",
        "  ∂ℓ/∂b    = sigmoid(z) - label",
        "  ∂R/∂w[j] = 0.0002*w[j]   for j in range(3)",
    ],
    "huber": [
        "  r = prediction - y",
        "  ∂ℓ/∂w[j] = where(abs(r) <= delta, r, delta*sign(r))*x[j]   for j in range(4)",
        "  ∂ℓ/∂b    = where(abs(r) <= delta, r, delta*sign(r))",
        "  ∂R/∂w[j] = 2*l2*w[j]   for j in range(4)",
    ],
    "decay": [
        "  ∂ℓ/∂amplitude = 2*(prediction - y)*exp(-rate*t)",
        "  ∂ℓ/∂baseline  = 2*(prediction - y)",
    ],
    "mlp": [
        "  ∂ℓ/∂W[i, j] = 2*(1 - h[i]**2)*(prediction - y)*v[i]*x[j]   "
        "for i in range(8) for j in range(3)",
        "  ∂ℓ/∂b1[j]   = 2*(1 - h[j]**2)*(prediction - y)*v[j]   for j in range(8)",
        "  ∂ℓ/∂v[j]    = 2*(prediction - y)*h[j]   for j in range(8)",
        "  ∂ℓ/∂b2      = 2*(prediction - y)",
        "  ∂R/∂W[i, j] = 0.0002*W[i, j]   for i in range(8) for j in range(3)",
    ],
}

#: SymPy spellings a user never writes (w_0 is how the IR names w[0]).
FORBIDDEN = re.compile(r"Piecewise|Abs\(|\bre\(|\bim\(|ITE\(|Heaviside|\b[A-Za-z]\w*?_\d+\b")

LOGISTIC_NO_DEFINITION = """
[project]
name = "lr"
[parameters]
w = { shape = [3] }
b = 0.0
[inputs]
x = { shape = [3] }
[targets]
y = {}
[model]
prediction = "sigmoid(dot(w, x) + b)"
loss = "softplus(dot(w, x) + b) - y*(dot(w, x) + b)"
"""

CROSS_ENTROPY = """
[project]
name = "xent"
[parameters]
w = { shape = [3] }
b = 0.0
[inputs]
x = { shape = [3] }
[targets]
y = {}
[model.definitions]
z = "dot(w, x) + b"
[model]
prediction = "sigmoid(z)"
loss = "-(y*log(prediction) + (1 - y)*log(1 - prediction))"
"""

HINGE = """
[project]
name = "hinge"
[parameters]
w = { shape = [2] }
b = 0.0
[inputs]
x = { shape = [2] }
[targets]
y = {}
[model]
prediction = "relu(dot(w, x) + b)"
loss = "max(0, 1 - y*prediction) + min(prediction, y)**2 + clip(b, -1, 1)"
"""

POLYNOMIAL = """
[project]
name = "poly"
[parameters]
w = { shape = [30] }
[inputs]
x = {}
[targets]
y = {}
[model]
prediction = "sum(w[j]*x**j for j in range(30))"
loss = "(prediction - y)**2"
"""


def _explain(path, *extra) -> str:
    import io
    from contextlib import redirect_stdout
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["explain", str(path), *extra]) == 0
    return out.getvalue()


def _project(tmp_path, text: str):
    path = tmp_path / "project.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_examples_explain_like_a_user_writes(name):
    out = _explain(example_path(name))
    lines = out.splitlines()
    for line in GOLDEN[name]:
        assert line in lines, f"{name}: missing {line!r} in\n{out}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_sympy_spelling_and_nothing_hidden(name):
    out = _explain(example_path(name))
    assert not FORBIDDEN.search(out), FORBIDDEN.search(out).group(0)
    assert "more entr" not in out           # grouping keeps every example on one screen
    assert "operations per sample: loss" in out
    # sigmoid is a way to read exp(u)/(1 + exp(u)), never forced on a plain exp
    source = example_path(name).read_text()
    if "sigmoid" not in source and "softplus" not in source:
        assert "sigmoid" not in out.split("gradient (")[1], out


def test_logistic_regression_without_a_definition_names_z(tmp_path):
    """The issue's report: six lines of raw Piecewise became the two lines a user writes."""
    out = _explain(_project(tmp_path, LOGISTIC_NO_DEFINITION))
    lines = out.splitlines()
    assert "  z = dot(w, x) + b" in lines
    assert "  ∂ℓ/∂w[j] = (sigmoid(z) - y)*x[j]   for j in range(3)" in lines
    assert "  ∂ℓ/∂b    = sigmoid(z) - y" in lines
    assert not FORBIDDEN.search(out) and "exp(" not in out


def test_cross_entropy_through_the_prediction(tmp_path):
    lines = _explain(_project(tmp_path, CROSS_ENTROPY)).splitlines()
    assert "  ∂ℓ/∂w[j] = (prediction - y)*x[j]   for j in range(3)" in lines
    assert "  ∂ℓ/∂b    = prediction - y" in lines


def test_relu_max_min_clip_print_as_where_with_the_tie_rules(tmp_path):
    out = _explain(_project(tmp_path, HINGE))
    assert not FORBIDDEN.search(out), out
    gradient = out.split("gradient (")[1]
    assert "∂ℓ/∂w[j] = where(z > 0, " in gradient          # relu'(0) = 0: strict
    assert "where(prediction*y >= 1, 0, -y)" in gradient   # max(0, u): tie to the first
    assert "where(prediction <= y, 2*prediction, 0)" in gradient   # min: tie to the first
    assert "where(b >= -1, where(b <= 1, 1, 0), 0)" in gradient or \
        "where(b < -1, 0, where(b > 1, 0, 1))" in gradient     # clip: closed interval


def test_the_cut_says_how_many_and_how_to_see_them(tmp_path):
    path = _project(tmp_path, POLYNOMIAL)
    out = _explain(path)
    shown = [line for line in out.splitlines() if line.startswith("  ∂ℓ/∂")]
    assert len(shown) == 24
    assert f"  … 6 more entries not shown (all of them: gradforge explain --all {path})" in out
    everything = _explain(path, "--all")
    assert "  ∂ℓ/∂w[29] = 2*x**29*(prediction - y)" in everything
    assert "more entr" not in everything


def test_library_report_without_the_project_file():
    """``report(program)`` (no ProjectSpec at hand) prints the IR's definitions readably."""
    text = report(compile_project(load_project(example_path("mlp"))))
    assert "  h[j] = tanh(W[j, 0]*x[0] + W[j, 1]*x[1] + W[j, 2]*x[2] + b1[j])   " \
        "for j in range(8)" in text
    assert "  prediction = dot(v, h) + b2" in text
    assert not FORBIDDEN.search(text)


@pytest.mark.parametrize("builder, args, expected", [
    (sigmoid, 1, "sigmoid(u)"), (softplus, 1, "softplus(u)"), (relu, 1, "relu(u)"),
    (maximum, 2, "max(u, v)"), (minimum, 2, "min(u, v)"),
])
def test_lowered_functions_fold_back_by_value(builder, args, expected):
    """Recognised by value, not shape: whatever stable form expressions.py lowers to."""
    u, v = sp.symbols("u v", real=True)
    lowered = builder(*(u, v)[:args])
    assert lowered.has(sp.Piecewise)
    assert str(_Folder().fold(lowered)) == expected


def test_agree_is_a_real_check():
    u = sp.Symbol("u", real=True)
    assert agree(sigmoid(u), 1 / (1 + sp.exp(-u)))
    assert not agree(sigmoid(u), sp.exp(u) / (2 + sp.exp(u)))
    assert not agree(relu(u), sp.Abs(u))


# --------------------------------------------------------- printed math == the IR's gradient

def _printed_formulas_agree_with_the_ir(path):
    spec = load_project(path)
    program = compile_project(spec)
    out = _explain(path, "--all")
    kernel = program.loss_and_gradient
    definitions = {name for name, _ in spec.model.definitions} | {"prediction"}
    element = re.compile(r"^(?P<name>.+?)(?P<index>(?:_\d+)+)_*$")

    # names the printed text may use: arrays, constants, the user's definitions as IR lets
    names: dict = {}
    for owner in program.parameters + program.fields:
        names[owner.name] = Array(owner.shape, owner.symbols) if owner.shape else owner.symbols[0]
    for c in program.constants:
        names[c.name] = c.symbol
    kept, arrays = set(), {}
    for kern in [kernel] + ([program.regularizer] if program.regularizer else []):
        for a in kern.body:
            m = element.match(a.target.name)
            if a.target.name in definitions:
                names[a.target.name] = a.target
                kept.add(a.target)
            elif m and m.group("name") in definitions:
                arrays.setdefault(m.group("name"), []).append(a.target)
                kept.add(a.target)
    for name, symbols in arrays.items():
        names[name] = Array((len(symbols),), tuple(symbols))

    section = out.split("\nwhere\n", 1)[1].split("\n\n", 1)[0] if "\nwhere\n" in out else ""
    for line in section.splitlines():       # names explain introduced (z = dot(w, x) + b)
        name, text = line.strip().split(" = ", 1)
        if name not in definitions and name not in ("ℓ", "R"):
            names[name] = ExpressionParser(names, name).parse(text)

    # both sides are compared over the leaves: a formula may use a definition's name where
    # the IR has its value (xent: (prediction - y)*x holds because prediction = sigmoid(z))
    leaves = {}
    for kern in [kernel] + ([program.regularizer] if program.regularizer else []):
        for a in kern.body:
            leaves.setdefault(a.target, substitute(a.expr, leaves))

    def ir_entries(kern):
        return {i: substitute(e, leaves) for i, e in kern.gradient}

    expected = {"ℓ": ir_entries(kernel)}
    if program.regularizer is not None:
        expected["R"] = ir_entries(program.regularizer)
    checked = 0
    for line in out.split("gradient (", 1)[1].splitlines()[1:]:
        m = re.match(r"  ∂(?P<of>[ℓR])/∂(?P<param>\w+)(?:\[(?P<idx>[^\]]*)\])? *= (?P<text>.*?)"
                     r"(?P<ranges>   for \w+ in range\(\d+\)( for \w+ in range\(\d+\))*)?$", line)
        if not m:
            continue
        param = next(p for p in program.parameters if p.name == m.group("param"))
        letters = re.findall(r"for (\w+) in range", m.group("ranges") or "")
        combos = list(itertools.product(*(range(n) for n in param.shape))) if letters \
            else [tuple(int(i) for i in m.group("idx").split(","))] if m.group("idx") else [()]
        for combo in combos:
            text = m.group("text")
            if letters:
                table = dict(zip(letters, map(str, combo)))
                text = re.sub(r"\[([^\]]*)\]", lambda b: "[" + ", ".join(
                    table.get(part.strip(), part.strip()) for part in b.group(1).split(","))
                    + "]", text)
            value = ExpressionParser(names, "explain").parse(text)
            flat = param.offset + (sum(i * s for i, s in zip(combo, _strides(param.shape)))
                                   if combo else 0)
            want = expected[m.group("of")].get(flat, sp.Integer(0))
            value = substitute(value, leaves)
            assert agree(value, want), f"{line} at {combo}: {value} != {want}"
            checked += 1
    return checked


def _strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return list(reversed(strides))


@pytest.mark.parametrize("name", EXAMPLES)
def test_printed_formulas_are_the_gradient_examples(name):
    program = compile_project(load_project(example_path(name)))
    total = len(program.loss_and_gradient.gradient) + (
        len(program.regularizer.gradient) if program.regularizer else 0)
    assert _printed_formulas_agree_with_the_ir(example_path(name)) >= total


@pytest.mark.parametrize("text", [LOGISTIC_NO_DEFINITION, CROSS_ENTROPY, HINGE, POLYNOMIAL])
def test_printed_formulas_are_the_gradient_models(tmp_path, text):
    assert _printed_formulas_agree_with_the_ir(_project(tmp_path, text)) > 0
