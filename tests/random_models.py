"""Random models over the whole expression vocabulary, for conformance and property tests.

Expressions are built as *source text* in gradforge's language (so the parser is exercised
too) and kept inside each function's domain: log and sqrt see 1 + u², division sees 1 + u²,
tan sees a value in (-0.9, 0.9), exp sees tanh(u) or -u².
"""
from __future__ import annotations

import random
import re

from hypothesis import strategies as st

from gradforge.project import ProjectSpec

PARAMS = {"p": 0.3, "q": -0.7, "w": {"shape": [3], "init": [0.5, -0.25, 0.8]}}
LEAVES = ["p", "q", "w[0]", "w[1]", "w[2]", "x[0]", "x[1]", "x[2]", "z", "y", "k"]
#: The prediction reads inputs only (predict() takes no targets), so no `y` there.
PREDICTION_LEAVES = [leaf for leaf in LEAVES if leaf != "y"]

UNARY = [
    "abs({})", "sign({})*{}", "exp(tanh({}))", "exp(-({})**2)", "log(1 + ({})**2)",
    "sqrt(1 + ({})**2)", "sin({})", "cos({})", "tan(0.9*tanh({}))", "tanh({})",
    "sigmoid({})", "softplus({})", "relu({})", "clip({}, -0.5, 0.75)", "-({})", "({})**3",
    "log1p(({})**2)", "expm1(tanh({}))",
]
BINARY = [
    "({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / (1 + ({})**2)", "max({}, {})",
    "min({}, {})", "where({} > 0.1, {}, {})", "dot(w, [{}, {}, 1.5])",
]


def _fill(template: str, args: list[str]) -> str:
    count = template.count("{}")
    if template.startswith("where"):
        return template.format(args[0], args[1], args[0] if len(args) < 3 else args[2])
    if template.startswith("sign"):
        return template.format(args[0], args[0])
    return template.format(*(args * count)[:count])


def expression_text(rng: random.Random, depth: int, leaves: list[str] = LEAVES) -> str:
    """A random expression of at most ``depth`` nested operations over ``leaves``."""
    if depth == 0 or rng.random() < 0.2:
        leaf = rng.choice(leaves + ["1.25", "0.5"])
        return leaf
    if rng.random() < 0.45:
        return _fill(rng.choice(UNARY), [expression_text(rng, depth - 1, leaves)])
    return _fill(rng.choice(BINARY), [expression_text(rng, depth - 1, leaves),
                                      expression_text(rng, depth - 1, leaves),
                                      expression_text(rng, depth - 1, leaves)])


def project_from_text(prediction: str, loss_term: str, name: str = "rnd",
                      precision: str = "float64", optimizer: str = "adam") -> ProjectSpec:
    """A project around random expressions; every parameter always influences the loss."""
    return ProjectSpec.create(
        name=name, precision=precision, parameters=PARAMS,
        inputs={"x": {"shape": [3]}, "z": {}}, targets={"y": {}}, constants={"k": 0.8},
        definitions={"u": f"{loss_term}"},
        prediction=f"({prediction}) + p*z + q + dot(w, x)",
        loss="(prediction - y)**2 / 2 + 0.25*u",
        regularization="0.01*k*(p**2 + dot(w, w))",
        training={"optimizer": optimizer, "learning_rate": 0.05},
    )


def random_project(seed: int, precision: str = "float64", depth: int = 4) -> ProjectSpec:
    rng = random.Random(seed)
    optimizer = ["sgd", "momentum", "adam"][seed % 3]
    return project_from_text(expression_text(rng, depth, PREDICTION_LEAVES),
                             expression_text(rng, depth), name=f"rnd{seed}", precision=precision, optimizer=optimizer)


def _extend(children):
    unary = st.tuples(st.sampled_from(UNARY), children).map(lambda t: _fill(t[0], [t[1]]))
    binary = st.tuples(st.sampled_from(BINARY), children, children, children).map(
        lambda t: _fill(t[0], list(t[1:])))
    return unary | binary


#: Hypothesis strategy for expression text over the whole vocabulary (shrinks structurally).
expressions = st.recursive(st.sampled_from(LEAVES + ["1.25", "0.5"]), _extend, max_leaves=10)
#: The same over the leaves a prediction may read (no targets).
prediction_expressions = st.recursive(st.sampled_from(PREDICTION_LEAVES + ["1.25", "0.5"]),
                                      _extend, max_leaves=10)


def projects(precision: str = "float64"):
    """Hypothesis strategy: a project around two random expression trees."""
    return st.builds(lambda pred, term, opt: project_from_text(pred, term, precision=precision,
                                                               optimizer=opt),
                     prediction_expressions, expressions,
                     st.sampled_from(["sgd", "momentum", "adam"]))


# ------------------------------------------------------------------ whole project files (fuzzer)
#
# The differential fuzzer (tests/test_fuzz.py) writes whole project files: several parameter
# shapes, scalar and array definitions that use each other, every function of the vocabulary,
# n-ary max/min, comparisons joined with and/or/not, negative and fractional powers of
# Piecewise-valued bases, % and // in indices, nested sums with filters, float32 and float64,
# mean and sum, and constants the cases override at run time. Every expression stays inside
# its domain (log and sqrt of 1 + u², divisions by 1 + u² or by positive Piecewise forms).

FUZZ_PARAMETERS = """\
[parameters]
p = 0.3
q = -0.7
w = { shape = [3], init = [0.5, -0.25, 0.8] }
M = { shape = [2, 3], init = [[0.2, -0.4, 0.1], [0.3, 0.15, -0.6]] }
"""

FUZZ_FIELDS = """\
[inputs]
x = { shape = [4] }
z = {}

[targets]
y = {}

[constants]
k = 0.8
g = 1.5
"""

_FUZZ_LEAVES = ["p", "q", "w[0]", "w[1]", "w[2]", "M[0, 1]", "M[1, 2]", "x[0]", "x[1]", "x[3]",
                "z", "k", "g", "1.25", "0.5", "-0.75"]

_FUZZ_UNARY = [
    "abs({0})", "sign({0})*{0}", "exp(tanh({0}))", "exp(-({0})**2)", "log(1 + ({0})**2)",
    "sqrt(1 + ({0})**2)", "sin({0})", "cos({0})", "tan(0.9*tanh({0}))", "tanh({0})",
    "sigmoid({0})", "softplus({0})", "relu({0})", "clip({0}, -0.5, 0.75)", "-({0})",
    "({0})**3", "({0})**2",
    # powers of Piecewise-valued bases, negative and fractional (printing/precedence traps)
    "(1 + relu({0}))**-0.5", "(1.5 + sigmoid({0}))**-2", "(1 + softplus({0}))**1.5",
    "(2 + clip({0}, -1, 1))**-1.5", "(1 + abs({0}))**-1", "(1 + max({0}, 0.2, -({0})))**0.5",
    "1.5/(1 + relu({0}))**-0.5", "2/(3 + where({0} > 0, {0}, -({0}))/(1 + ({0})**2))**-2",
    "(0.5 + sigmoid({0}))**-0.5*(1 + softplus(-({0})))**-1",
]
_FUZZ_BINARY = [
    "({0}) + ({1})", "({0}) - ({1})", "({0})*({1})", "({0})/(1 + ({1})**2)",
    "max({0}, {1})", "min({0}, {1})", "max({0}, {1}, {2})", "min({0}, {1}, {2})",
    "max([{0}, {1}, {2}, 0.1])", "min([{0}, -({1}), {2}])",
    "where({0} > 0.1, {1}, {2})", "where({0} < {1} and {2} > -0.3, {1}, {2})",
    "where({0} > 0 or not ({1} > 0.2), {0}, {2})", "where(not ({0} < {1}), {2}, {1})",
    "dot(w, [{0}, {1}, 1.5])", "({0})/(2 + sigmoid({1}))**-1",
]
#: Loops with % and // indices and filters (j, i are loop variables).
_FUZZ_LOOPS = [
    "sum(w[j]*x[(j + 1) % 4] for j in range(3))",
    "sum(M[j // 3, j % 3]*x[j % 4] for j in range(6))",
    "sum(sum(M[i, j]*x[j] for j in range(3) if j != i) for i in range(2))",
    "sum(w[j]*({0}) for j in range(3) if j % 2 == 0)",
    "sum(tanh(M[i, j] + ({0})) for i in range(2) for j in range(i, 3))",
    "max(w)", "min([M[1, j] - x[j] for j in range(3)])", "dot(w, h)", "sum(h)",
    "max(h) - min(h)", "sum(h[j]*x[3 - j] for j in range(3) if j // 2 == 0)",
]
_FUZZ_ARRAYS = [
    "[tanh(w[j]*x[j] + {0}) for j in range(3)]",
    "[relu(M[0, j] - x[j]) + ({0}) for j in range(3)]",
    "tanh(w*[x[0], x[1], x[2]] + {0})",
    "max(w, [{0}, x[1], x[2]], [M[1, 0], M[1, 1], M[1, 2]])",
    "w*w + sigmoid([x[1], {0}, x[3]])",
    "[sum(M[i, j] for i in range(2))*x[j] for j in range(3)]",
]
_FUZZ_LOSSES = [
    "(prediction - y)**2/2 + 0.25*u",
    "where(abs(prediction - y) <= k, 0.5*(prediction - y)**2, k*(abs(prediction - y) - 0.5*k)) + 0.1*u",
    "softplus(-y*prediction) + 0.2*u**2",
    "abs(prediction - y) + 0.1*relu(u)",
    "log(1 + (prediction - y)**2) + 0.05*u",
]
_FUZZ_REGULARIZERS = [
    None, "0.01*k*(p**2 + dot(w, w))",
    "1e-3*sum(M[i, j]**2 for i in range(2) for j in range(3)) + 0.01*relu(q)",
]


def fuzz_expression(rng: random.Random, depth: int, names: list[str], arrays: bool = True) -> str:
    """A random scalar expression over ``_FUZZ_LEAVES`` plus ``names`` (earlier definitions);
    ``arrays``: whether the array definition ``h`` may be used."""
    if depth == 0 or rng.random() < 0.15:
        return rng.choice(_FUZZ_LEAVES + names)
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(_FUZZ_UNARY).format(fuzz_expression(rng, depth - 1, names, arrays))
    if roll < 0.9:
        args = [fuzz_expression(rng, depth - 1, names, arrays) for _ in range(3)]
        return rng.choice(_FUZZ_BINARY).format(*args)
    loops = [t for t in _FUZZ_LOOPS if arrays or not re.search(r"\bh\b", t)]
    return rng.choice(loops).format(fuzz_expression(rng, depth - 1, names, arrays))


def fuzz_project_text(seed: int, depth: int = 3) -> str:
    """A whole project file (TOML text) drawn from ``seed``; the same seed, the same text."""
    rng = random.Random(seed)
    precision = rng.choice(["float32", "float64"])
    scalars: list[str] = []
    lines = []
    for name in ("d0", "d1"):
        lines.append(f'{name} = "{fuzz_expression(rng, depth - 1, scalars, arrays=False)}"')
        scalars.append(name)
    lines.append(f'h = "{rng.choice(_FUZZ_ARRAYS).format(fuzz_expression(rng, 1, scalars, False))}"')
    lines.append(f'u = "{fuzz_expression(rng, depth, scalars)}"')
    loops = list(_FUZZ_LOOPS)
    prediction = (f"({fuzz_expression(rng, depth, scalars)}) + p*z + q + "
                  f"{rng.choice(loops).format(rng.choice(scalars))}")
    regularization = rng.choice(_FUZZ_REGULARIZERS)
    optimizer = rng.choice(["sgd", "momentum", "adam"])
    text = [f'[project]\nname = "fz{seed}"\nprecision = "{precision}"\n', FUZZ_PARAMETERS,
            FUZZ_FIELDS, "[model.definitions]\n" + "\n".join(lines) + "\n",
            "[model]", f'prediction = "{prediction}"', f'loss = "{rng.choice(_FUZZ_LOSSES)}"',
            f'reduction = "{rng.choice(["mean", "sum"])}"']
    if regularization:
        text.append(f'regularization = "{regularization}"')
    text += ["", "[training]", f'optimizer = "{optimizer}"', "learning_rate = 0.02",
             "epochs = 3", f"batch_size = {rng.choice([0, 3, 4])}", f"seed = {seed % 1000}", ""]
    return "\n".join(text)
