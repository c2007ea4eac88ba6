"""NumPy expression printer: SymPy's ``NumPyPrinter`` with gradforge's names and rules.

Changes from SymPy's defaults: symbols go through the backend's name table, numbers print as
shortest round-trip Python floats (weakly typed, so float32 arrays stay float32), and
``Piecewise`` is a nested ``numpy.where`` (``numpy.select``'s NaN default is never wanted).
"""
from __future__ import annotations

import math

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from gradforge.plugin_api import BackendError, print_quotient, shortest_repr

#: A sum with more terms than this prints as parenthesized chunks.
MAX_CHAIN = 64


class GradforgeNumPyPrinter(NumPyPrinter):
    """Prints IR expressions as NumPy code over per-sample arrays."""

    _default_settings = dict(NumPyPrinter._default_settings, names={}, order="none",
                             fully_qualified_modules=True)

    def _print_Symbol(self, expr):
        return self._settings["names"].get(expr.name, expr.name)

    def _num(self, value: float) -> str:
        if math.isinf(value):       # a folded constant beyond the float64 range
            return "numpy.inf" if value > 0 else "(-numpy.inf)"
        text = shortest_repr(value, "float64")
        return f"({text})" if text.startswith("-") else text

    def _print_Integer(self, expr):
        return self._num(float(expr))

    def _print_Rational(self, expr):
        return self._num(float(expr))

    def _print_Float(self, expr):
        return self._num(float(expr))

    _print_One = _print_Zero = _print_NegativeOne = _print_Integer
    _print_Half = _print_Rational

    def _print_Pi(self, expr):
        return self._num(float(expr))

    def _print_Mul(self, expr):
        if all(a.is_Symbol for a in expr.args):     # fast path: adjoint × input
            return "*".join(self._print(a) for a in expr.args)
        return print_quotient(self, expr, "1.0")

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp == sp.Rational(1, 2):
            return f"numpy.sqrt({self._print(base)})"
        if exp == -sp.Rational(1, 2):
            return f"1.0/numpy.sqrt({self._print(base)})"
        # `**` is right-associative and binds tighter than unary minus: a base that is
        # itself a power, a quotient, a product or negative keeps its parentheses
        b = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
        if exp.is_Integer and exp < 0:
            return f"1.0/{b}" if exp == -1 else f"1.0/{b}**{-int(exp)}"
        e = self._print(exp)
        return f"{b}**{e}" if exp.is_Atom and not e.startswith(("-", "(")) else f"{b}**({e})"

    def printed_precedence(self, item) -> int:
        """Precedence of ``item`` as printed here (a negative power prints as a quotient,
        ``sqrt`` and ``where`` as calls)."""
        if isinstance(item, sp.Pow):
            if item.exp == sp.Rational(1, 2):
                return PRECEDENCE["Atom"]
            if item.exp.is_negative:
                return PRECEDENCE["Mul"]
            return PRECEDENCE["Pow"]
        if isinstance(item, sp.Piecewise):
            return PRECEDENCE["Atom"]
        return precedence(item)

    def parenthesize(self, item, level, strict=False):
        prec = self.printed_precedence(item)
        text = self._print(item)
        if prec < level or (strict and prec <= level) or (
                level >= PRECEDENCE["Mul"] and text.startswith("-")):
            return f"({text})"
        return text

    def _print_Add(self, expr, order=None):
        """Long sums as a balanced tree of parenthesized chunks: Python's compiler recurses
        once per ``+`` of a flat chain, and a few thousand terms exceed its limit."""
        terms = list(expr.args)
        if len(terms) <= MAX_CHAIN:
            return super()._print_Add(expr, order=order)
        size = -(-len(terms) // MAX_CHAIN)        # at most MAX_CHAIN chunks, each recursed
        chunks = [terms[i:i + size] for i in range(0, len(terms), size)]
        return " + ".join(f"({self._print(sp.Add(*c, evaluate=False))})" for c in chunks)

    def _print_And(self, expr):
        # numpy.logical_and.reduce((a, b)) builds an array from its operands and fails when a
        # per-sample condition meets a parameter-only one; nested calls broadcast instead
        return self._logical("numpy.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._logical("numpy.logical_or", expr.args)

    def _print_Not(self, expr):
        return f"numpy.logical_not({self._print(expr.args[0])})"

    def _logical(self, function: str, args) -> str:
        text = self._print(args[0])
        for arg in args[1:]:
            text = f"{function}({text}, {self._print(arg)})"
        return text

    def _print_Abs(self, expr):
        return f"numpy.abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"numpy.sign({self._print(expr.args[0])})"

    def _print_Piecewise(self, expr):
        pairs = list(expr.args)
        if pairs[-1][1] != sp.true:
            raise BackendError(f"Piecewise without a default branch: {expr}")
        text = self._print(pairs[-1][0])
        for value, cond in reversed(pairs[:-1]):
            text = f"numpy.where({self._print(cond)}, {self._print(value)}, {text})"
        return text

    def emptyPrinter(self, expr):  # noqa: N802 - SymPy's name
        raise BackendError(f"the numpy backend cannot print {type(expr).__name__}: {expr}")
