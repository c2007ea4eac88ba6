"""Random models over the whole expression vocabulary, for conformance and property tests.

Expressions are built as *source text* in gradforge's language (so the parser is exercised
too) and kept inside each function's domain: log and sqrt see 1 + u², division sees 1 + u²,
tan sees a value in (-0.9, 0.9), exp sees tanh(u) or -u².
"""
from __future__ import annotations

import random

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
