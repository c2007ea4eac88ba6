"""Expression printing shared by backends: typed literals and a C-family printer base.

SymPy's ``C99CodePrinter`` is the base (as the field notes recommend) but three of its defaults
break typed code: ``x**2`` becomes ``pow(x, 2)``, ``1/2`` becomes ``1.0/2.0`` (a double even in
float code), and ``Piecewise`` needs a final ``True`` branch printed as an expression. The
:class:`CFamilyPrinter` here fixes those once for C, Metal and Swift: literals carry the
precision's type, small integer powers become products, ``Piecewise`` is a nested conditional,
and every symbol is printed through a name table so that backends escape reserved words
consistently.
"""
from __future__ import annotations

import math
import struct
from typing import Mapping

import sympy as sp
from sympy.core.mul import _keep_coeff
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from .errors import BackendError

from .ir import MAX_EXPANDED_POWER  # x**n with |n| up to this prints as products
from .ir import count_operations, walk


#: The largest finite IEEE single.
FLT_MAX = 3.4028234663852886e38


def float32_round(value: float) -> float:
    """``value`` rounded to the nearest IEEE single."""
    return struct.unpack("f", struct.pack("f", value))[0]


def shortest_repr(value: float, precision: str) -> str:
    """Shortest decimal that rounds back to the same float64 (or float32) value."""
    if not math.isfinite(value):
        raise BackendError(f"non-finite constant {value} in generated code")
    if precision == "float64":
        text = repr(float(value))
    else:
        target = float32_round(value)
        if math.isinf(target):
            raise BackendError(f"constant {value!r} is outside the float32 range "
                               f"(largest {FLT_MAX!r})")
        text = repr(target)
        for digits in range(1, 10):
            candidate = f"{target:.{digits}g}"
            if float32_round(float(candidate)) == target:
                text = repr(float(candidate))     # 200.0, not 2e+02
                break
    if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


#: A select computes both sides; it pays when each side costs at most this many operations
#: and calls no function (an exp or a division on the side not taken costs more than a jump).
CHEAP_SELECT_OPS = 4


def cheap(expr) -> bool:
    """Whether ``expr`` is cheap enough to compute even when it is not selected."""
    for node in walk(expr):
        if isinstance(node, sp.Function) and not isinstance(node, (sp.Abs, sp.sign)):
            return False
        if isinstance(node, sp.Pow) and not (node.exp.is_Integer and node.exp > 0):
            return False
    return count_operations([expr]) <= CHEAP_SELECT_OPS


class CFamilyPrinter(C99CodePrinter):
    """C-syntax printer for one precision; subclasses adjust names and literal spelling.

    Settings: ``precision`` ("float32"/"float64"), ``names`` (symbol name → printed text),
    ``literal_suffix`` (e.g. "f" for C float), ``function_names`` (SymPy function → name),
    ``sign_function`` (helper implementing sign with sign(0) = 0).
    """

    # order="none": print terms in SymPy's canonical argument order (deterministic) instead
    # of sorting every sum again, which dominated emit time on large models
    _default_settings = dict(C99CodePrinter._default_settings, order="none", precision="float64",
                             names={}, literal_suffix="", function_names={},
                             sign_function="gf_sign", pow_function="pow", select_function="",
                             infinity="INFINITY")

    def __init__(self, settings=None):
        super().__init__(settings or {})
        self.precision = self._settings["precision"]
        self.names: Mapping[str, str] = self._settings["names"]
        #: whether a select helper call was printed (the file must then define the helper)
        self.printed_select = False
        # SymPy would print 2/pi as M_2_PI, a double macro not defined under -std=c99 (and an
        # empty table given as a setting falls back to its defaults): numbers print as numbers
        self.math_macros = {}

    # -- leaves ------------------------------------------------------------------------
    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    def literal(self, value: float) -> str:
        """A typed literal; a constant beyond the precision's range (folded, or made by the
        derivative: ``(1e30*x)**2``) is the typed infinity it rounds to."""
        if math.isinf(float32_round(value) if self.precision == "float32" else value):
            return ("-" if value < 0 else "") + self._settings["infinity"]
        return shortest_repr(value, self.precision) + self._settings["literal_suffix"]

    def _print_Integer(self, expr):
        return self.literal(float(expr))

    def _print_Rational(self, expr):
        return self.literal(float(expr))

    def _print_Float(self, expr):
        return self.literal(float(expr))

    def _print_NumberSymbol(self, expr):
        return self.literal(float(expr))

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol

    def _print_Half(self, expr):
        return self.literal(0.5)

    _print_One = _print_Integer
    _print_Zero = _print_Integer
    _print_NegativeOne = _print_Integer

    def _print_BooleanTrue(self, expr):
        return "true"

    def _print_BooleanFalse(self, expr):
        return "false"

    # -- operators ---------------------------------------------------------------------
    def call(self, name: str, *args: str) -> str:
        mapped = self._settings["function_names"].get(name, name)
        return f"{mapped}({', '.join(args)})"

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and 0 < abs(int(exp)) <= MAX_EXPANDED_POWER:
            n = abs(int(exp))
            factor = self.parenthesize(base, PRECEDENCE["Mul"], strict=True)
            product = "*".join([factor] * n)
            if int(exp) > 0:
                return product
            return f"{self.literal(1.0)}/({product})" if n > 1 else f"{self.literal(1.0)}/{factor}"
        if exp == sp.Rational(1, 2):
            return self.call("sqrt", self._print(base))
        if exp == -sp.Rational(1, 2):
            return f"{self.literal(1.0)}/{self.call('sqrt', self._print(base))}"
        return self.call(self._settings["pow_function"], self._print(base), self._print(exp))

    def printed_precedence(self, item) -> int:
        """The precedence of ``item`` *as this printer writes it*.

        SymPy gives every power the precedence of ``**``, but a C-family language has no
        ``**``: ``x**2`` prints as the product ``x*x``, ``x**-1`` and ``x**-0.5`` as the
        quotients ``1.0/x`` and ``1.0/sqrt(x)``, other powers as calls. A quotient used as a
        divisor without parentheses silently changes the value (``a/1.0/sqrt(u)``).
        """
        if isinstance(item, sp.Pow):
            exp = item.exp
            if exp == 1:
                return self.printed_precedence(item.base)
            if (exp.is_Integer and abs(int(exp)) <= MAX_EXPANDED_POWER) \
                    or exp == -sp.Rational(1, 2):
                return PRECEDENCE["Mul"]
            return PRECEDENCE["Atom"]               # sqrt(…), pow(…, …)
        if isinstance(item, sp.Piecewise):
            return PRECEDENCE["Atom"]               # select(…) or a parenthesized ?:
        return precedence(item)

    def parenthesize(self, item, level, strict=False):
        if getattr(item, "is_Number", False) and item >= 0:
            return self._print(item)          # a literal never needs parentheses
        prec = self.printed_precedence(item)
        text = self._print(item)
        if prec < level or (strict and prec <= level):
            return f"({text})"
        return text

    def _print_Mul(self, expr):
        if all(a.is_Symbol for a in expr.args):
            # the commonest product (adjoint × input); SymPy's precedence/sign analysis of
            # each factor was most of the emit time on large models
            return "*".join(self._print(a) for a in expr.args)
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and abs(coeff.p) == 1 and rest != 1 \
                and coeff.q < 2 ** 24:
            # x/3 rather than 0.333…*x: exact and readable
            sign = "-" if coeff.p < 0 else ""
            body = self.parenthesize(rest, PRECEDENCE["Mul"])
            return f"{sign}{body}/{self.literal(float(coeff.q))}"
        return print_quotient(self, expr, self.literal(1.0))

    def _print_sign(self, expr):
        return f"{self._settings['sign_function']}({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return self.call("fabs", self._print(expr.args[0]))

    def _print_Function(self, expr):
        name = expr.func.__name__
        if name in ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh"):
            return self.call(name, *[self._print(a) for a in expr.args])
        raise BackendError(f"cannot print function {name}")

    _print_exp = _print_log = _print_sin = _print_cos = _print_tan = _print_tanh = \
        _print_log1p = _print_expm1 = _print_Function

    def _print_Piecewise(self, expr):
        """Nested ``(c ? a : b)``, or ``select(c, a, b)`` when the ``select_function`` setting
        names a branch-free helper the generated file defines."""
        pairs = list(expr.args)
        if pairs[-1][1] != sp.true:
            raise BackendError(f"Piecewise without a default branch: {expr}")
        select = self._settings["select_function"]
        if select and not all(cheap(value) for value, _ in pairs):
            select = ""      # a call or a long formula on the side not taken: a real branch
        self.printed_select = self.printed_select or bool(select)
        text = self._print(pairs[-1][0])
        for value, cond in reversed(pairs[:-1]):
            if select:
                text = f"{select}({self._print(cond)}, {self._print(value)}, {text})"
            else:
                text = f"({self._print(cond)} ? {self._print(value)} : {text})"
        return text

    def _print_Relational(self, expr):
        ops = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
        return f"{self._print(expr.lhs)} {ops[expr.rel_op]} {self._print(expr.rhs)}"

    def _print_And(self, expr):
        return "(" + " && ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " || ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"!({self._print(expr.args[0])})"

    def emptyPrinter(self, expr):  # noqa: N802 - SymPy's name
        raise BackendError(f"cannot print {type(expr).__name__}: {expr}")


def print_quotient(printer, expr: sp.Mul, one: str) -> str:
    """``numerator/denominator`` for a product, as a C-family or Python printer writes it.

    Factors with a negative exponent form the denominator; a lone divisor that is not an
    operand (a name, a literal, a call) is parenthesized, because ``/`` is left-associative:
    ``a/(1.0/sqrt(u))`` must never lose its parentheses. ``printer`` provides
    ``parenthesize`` and ``printed_precedence`` that know how it prints powers.
    """
    coeff, rest = expr.as_coeff_Mul()
    sign = ""
    if coeff < 0:
        expr, sign = _keep_coeff(-coeff, rest), "-"
    numerator, denominator = [], []
    for factor in sp.Mul.make_args(expr):
        if factor.is_Pow and factor.exp.is_Rational and factor.exp.is_negative:
            denominator.append(factor.base if factor.exp == -1
                               else sp.Pow(factor.base, -factor.exp, evaluate=False))
        else:
            numerator.append(factor)
    mul = PRECEDENCE["Mul"]
    if not numerator:
        top = one
    elif len(numerator) == 1 and sign:
        # unary minus binds tighter than * and /: -(a*b) keeps its parentheses
        top = printer.parenthesize(numerator[0], (PRECEDENCE["Pow"] + mul) / 2)
    else:
        top = "*".join(printer.parenthesize(f, mul) for f in numerator)
    if not denominator:
        return sign + top
    if len(denominator) == 1:
        bottom = printer.parenthesize(denominator[0], mul, strict=True)
    else:
        bottom = "(" + "*".join(printer.parenthesize(f, mul) for f in denominator) + ")"
    return f"{sign}{top}/{bottom}"


def safe_names(names, reserved) -> dict[str, str]:
    """Map each IR name to an identifier that is not ``reserved`` and stays unique.

    Clashing names get ``_`` appended until free — the same rule everywhere in a file, so a
    parameter called ``in`` is ``in_`` in its declaration, its uses and its documentation.
    """
    names = sorted(set(names))
    taken = set(names) | set(reserved)
    mapping: dict[str, str] = {}
    for name in names:
        if name in reserved:
            candidate = name + "_"
            while candidate in taken:
                candidate += "_"
            taken.add(candidate)
            mapping[name] = candidate
        else:
            mapping[name] = name
    return mapping
