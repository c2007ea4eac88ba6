"""NumPy expression printer: SymPy's ``NumPyPrinter`` with gradforge's names and rules.

Changes from SymPy's defaults: symbols go through the backend's name table, numbers print as
shortest round-trip Python floats (weakly typed, so float32 arrays stay float32), and
``Piecewise`` is a nested ``numpy.where`` (``numpy.select``'s NaN default is never wanted).
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from gradforge.plugin_api import BackendError, shortest_repr


class GradforgeNumPyPrinter(NumPyPrinter):
    """Prints IR expressions as NumPy code over per-sample arrays."""

    _default_settings = dict(NumPyPrinter._default_settings, names={}, order="none",
                             fully_qualified_modules=True)

    def _print_Symbol(self, expr):
        return self._settings["names"].get(expr.name, expr.name)

    def _num(self, value: float) -> str:
        text = shortest_repr(value, "float64")
        return f"({text})" if text.startswith("-") else text

    def _print_Integer(self, expr):
        return self._num(float(int(expr)))

    def _print_Rational(self, expr):
        return self._num(float(expr.p) / float(expr.q))

    def _print_Float(self, expr):
        return self._num(float(expr))

    _print_One = _print_Zero = _print_NegativeOne = _print_Integer
    _print_Half = _print_Rational

    def _print_Pi(self, expr):
        return self._num(float(expr))

    def _print_Mul(self, expr):
        if all(a.is_Symbol for a in expr.args):     # fast path: adjoint × input
            return "*".join(self._print(a) for a in expr.args)
        return super()._print_Mul(expr)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp.is_Integer:
            b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"])
            if exp == -1:
                return f"1.0/{b}"
            return f"{b}**{int(exp)}" if exp > 0 else f"1.0/{b}**{-int(exp)}"
        if exp == sp.Rational(1, 2):
            return f"numpy.sqrt({self._print(base)})"
        return super()._print_Pow(expr, rational)

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
