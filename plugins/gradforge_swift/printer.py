"""Swift expression printer and the statement writer that keeps Swift's type checker fast.

:class:`SwiftPrinter` is gradforge's :class:`~gradforge.printing.CFamilyPrinter` with Swift's
spelling: literals carry no suffix (every statement declares its type, so a literal is typed
by its context at compile time and nothing is converted at run time), ``fabs`` is ``abs``,
``sign`` is the module's ``_sign`` helper, and no two operator characters ever touch (Swift
would read ``a*-b`` as the operator ``*-``).

Swift's type checker slows down sharply on long expressions of overloaded operators. The
printer therefore works as a *statement writer*: while printing a statement it hoists large
sub-expressions and long sums into short typed temporaries (``let _s3: Double = …``) that are
emitted just before the statement. Hoisted values are computed unconditionally, which is safe
for floating-point arithmetic (an unselected branch of a conditional may be inf/NaN; it is
never used).
"""
from __future__ import annotations

import re

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from gradforge.plugin_api import BackendError, CFamilyPrinter

#: A sum with more terms than this is split into partial sums.
MAX_TERMS = 8
#: A sub-expression whose printed text has more operators than this becomes a temporary.
MAX_OPERATORS = 12

_OPERATOR = re.compile(r"[-+*/?]|&&|\|\||[<>]=?|==|!=")
#: Two operator characters in a row (``a*-b``) are one operator token in Swift.
_GLUED = re.compile(r"[*/%+\-<>=!&|^~?:][-+]")


def operator_count(text: str) -> int:
    """Binary/ternary operators and calls in printed code (a cheap size measure)."""
    return len(_OPERATOR.findall(text)) + text.count("(")


def _is_operand(text: str) -> bool:
    """Whether ``text`` is a name, a literal or one call/parenthesized group (safe after ``/``)."""
    match = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[0-9.]+(?:e[-+]?[0-9]+)?", text)
    rest = text[match.end():] if match else text
    if not rest:
        return True
    if not rest.startswith("("):
        return False
    depth = 0
    for i, char in enumerate(rest):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return i == len(rest) - 1
    return False


def _balanced(items: list) -> list[list]:
    """``items`` in consecutive chunks of at most MAX_TERMS, sizes as equal as possible."""
    count = -(-len(items) // MAX_TERMS)
    size, extra = divmod(len(items), count)
    chunks, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


class SwiftPrinter(CFamilyPrinter):
    """Prints IR expressions as Swift for one precision.

    Settings (besides :class:`CFamilyPrinter`'s): ``scalar`` (``"Double"``/``"Float"``), the
    type of hoisted temporaries, and ``temp_prefix`` for their names.
    """

    _default_settings = dict(
        CFamilyPrinter._default_settings, scalar="Double", temp_prefix="_s",
        function_names={"fabs": "abs"}, sign_function="_sign", pow_function="pow")

    def __init__(self, settings=None):
        settings = dict(settings or {})
        settings.setdefault("infinity",
                            f"{settings.get('scalar', self._default_settings['scalar'])}.infinity")
        super().__init__(settings)
        self._sink: list[str] | None = None
        self._depth = 0
        self._counter = 0

    # -- statement writer ------------------------------------------------------------
    def statement(self, head: str, expr) -> list[str]:
        """Lines computing ``expr`` and finishing with ``head + text`` (e.g. ``let t0: Double = ``)."""
        self._sink = []
        try:
            text = self._print(expr)
            lines = self._sink + [f"{head}{text}"]
        finally:
            self._sink = None
        for line in lines:
            self.check(line)
        return lines

    def expression(self, expr) -> str:
        """``expr`` printed on one line (no hoisting; for short expressions)."""
        text = self._print(expr)
        self.check(text)
        return text

    def reset_temporaries(self) -> None:
        """Start numbering hoisted temporaries from 0 (once per Swift function)."""
        self._counter = 0

    @staticmethod
    def check(text: str) -> None:
        glued = _GLUED.search(re.sub(r"\d[eE][-+]", "0e0", text))
        if glued:
            raise BackendError(f"swift printer produced glued operators {glued.group()!r} in "
                               f"`{text}` (a gradforge bug; please report it)")

    def _hoist(self, text: str) -> str:
        name = f"{self._settings['temp_prefix']}{self._counter}"
        self._counter += 1
        self._sink.append(f"let {name}: {self._settings['scalar']} = {text}")
        return name

    def _print(self, expr, **kwargs):
        self._depth += 1
        try:
            text = super()._print(expr, **kwargs)
        finally:
            self._depth -= 1
        if (self._sink is not None and self._depth > 0 and isinstance(expr, sp.Expr)
                and not expr.is_Atom and operator_count(text) > MAX_OPERATORS):
            return self._hoist(text)
        return text

    # -- Swift spelling ----------------------------------------------------------------
    def parenthesize(self, item, level, strict=False):
        text = super().parenthesize(item, level, strict)
        if text.startswith("-") and level >= PRECEDENCE["Mul"]:
            return f"({text})"
        return text

    def _print_Add(self, expr, order=None):
        terms = self._as_ordered_terms(expr, order=order)
        if self._sink is None or len(terms) <= MAX_TERMS:
            return super()._print_Add(expr, order=order)
        parts = [self._hoist(super(SwiftPrinter, self)._print_Add(
                     sp.Add(*chunk, evaluate=False))) for chunk in _balanced(terms)]
        while len(parts) > MAX_TERMS:
            parts = [self._hoist(" + ".join(chunk)) for chunk in _balanced(parts)]
        return " + ".join(parts)

    def _print_Mul(self, expr):
        # CFamilyPrinter prints b**2 as the product b*b, but SymPy's _print_Mul still treats a
        # single denominator as a power and writes it without parentheses: a/(c + 1)**2 would
        # become a/(c + 1.0)*(c + 1.0). Print every quotient here: numerator/(denominator).
        factors = sp.Mul.make_args(expr)
        below = [f for f in factors if f.is_Pow and f.exp.is_Rational and f.exp.is_negative]
        if not below:
            return super()._print_Mul(expr)
        numerator = sp.Mul(*[f for f in factors if f not in below])
        denominator = sp.Mul(*[sp.Pow(f.base, -f.exp) for f in below])
        bottom = self._print(denominator)
        if not _is_operand(bottom):
            bottom = f"({bottom})"
        sign = ""
        if numerator.could_extract_minus_sign():
            sign, numerator = "-", -numerator
        if numerator == 1:
            return f"{sign}{self.literal(1.0)}/{bottom}"
        return f"{sign}{self.parenthesize(numerator, PRECEDENCE['Mul'])}/{bottom}"

    def _print_Relational(self, expr):
        ops = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
        lhs = self.parenthesize(expr.lhs, PRECEDENCE["Add"])
        rhs = self.parenthesize(expr.rhs, PRECEDENCE["Add"])
        return f"{lhs} {ops[expr.rel_op]} {rhs}"

    def _print_Not(self, expr):
        return f"!({self._print(expr.args[0])})"

    def emptyPrinter(self, expr):  # noqa: N802 - SymPy's name
        raise BackendError(f"the swift backend cannot print {type(expr).__name__}: {expr}")
