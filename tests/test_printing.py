"""The shared C-family printer: typed literals, powers as products, precedence that survives
SymPy's quotient printing (a/x**2 must never become a/x*x)."""
from __future__ import annotations

import math
import random

import pytest
import sympy as sp

from gradforge.printing import CFamilyPrinter, shortest_repr

x, y, z = sp.symbols("x y z", real=True)
VALUES = {"x": 1.7, "y": -0.6, "z": 2.3}


def random_arithmetic(rng: random.Random, depth: int):
    if depth == 0:
        return rng.choice([x, y, z, sp.Integer(rng.randint(1, 4)), sp.Rational(1, 3)])
    a, b = random_arithmetic(rng, depth - 1), random_arithmetic(rng, depth - 1)
    op = rng.choice(["add", "sub", "mul", "div", "pow", "neg"])
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / (b ** 2 + 1)
    if op == "pow":
        return a ** rng.choice([-3, -2, -1, 2, 3, 5])
    return -a


@pytest.mark.parametrize("seed", range(300))
def test_printed_arithmetic_evaluates_like_sympy(seed):
    """C arithmetic shares Python's precedence for + - * / and unary minus, so the printed
    text can be evaluated directly and compared with SymPy's value."""
    rng = random.Random(seed)
    expr = random_arithmetic(rng, 4)
    while expr.has(sp.zoo, sp.nan):               # e.g. (x - x)**-1: not a printable model
        expr = random_arithmetic(rng, 4)
    text = CFamilyPrinter({"precision": "float64"}).doprint(expr)
    want = float(expr.subs({sp.Symbol(k, real=True): v for k, v in VALUES.items()}))
    got = eval(text, {"__builtins__": {}, "pow": math.pow}, dict(VALUES))  # noqa: S307
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (expr, text)


def test_float32_literals_round_trip():
    assert shortest_repr(0.1, "float32") == "0.1"
    assert shortest_repr(1e-8, "float32") == "1e-08" or shortest_repr(1e-8, "float32") == "1.0e-08"
    printer = CFamilyPrinter({"precision": "float32", "literal_suffix": "f"})
    assert printer.doprint(x / 3) == "x/3.0f"
    assert printer.doprint(x ** 2) == "x*x"
