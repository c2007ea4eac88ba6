"""C99 expression printer: gradforge's :class:`CFamilyPrinter` with C's spelling per precision.

* float64: ``double`` literals (``0.5``) and the double functions of ``<math.h>``.
* float32: ``f``-suffixed literals (``0.5f``) and the float variants (``expf``, ``tanhf``,
  ``sqrtf``, ``fabsf``, ``powf`` …), so the output compiles under ``-Wdouble-promotion
  -Wconversion -Werror`` with no double anywhere.

SymPy's C printer also replaces some constants by ``<math.h>`` macros (``2/pi`` → ``M_2_PI``);
those macros are not defined under ``-std=c99`` and are doubles, so they are switched off here.
"""
from __future__ import annotations

import sympy as sp

from gradforge.plugin_api import CFamilyPrinter, MAX_EXPANDED_POWER

#: SymPy/C function name → its float variant in C99 <math.h>.
FLOAT_FUNCTIONS = {name: name + "f" for name in
                   ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sqrt", "fabs",
                    "pow")}

#: The <math.h> functions the generated code calls (both precisions), for name escaping.
MATH_FUNCTIONS = frozenset(FLOAT_FUNCTIONS) | frozenset(FLOAT_FUNCTIONS.values())


class GradforgeCPrinter(CFamilyPrinter):

    _default_settings = dict(CFamilyPrinter._default_settings, select_function="gf_select")

    """Prints IR expressions as C99 for one precision (``"float32"`` or ``"float64"``).

    Settings: ``precision``, ``names`` (IR name → C identifier), ``sign_function`` and
    ``select_function`` (helpers the generated file defines: sign with sign(0) = 0, and a
    branch-free ``cond ? a : b``).
    """

    def __init__(self, settings=None):
        settings = dict(settings or {})
        if settings.get("precision", "float64") == "float32":
            settings.setdefault("literal_suffix", "f")
            settings.setdefault("function_names", FLOAT_FUNCTIONS)
        super().__init__(settings)
        # C89CodePrinter falls back to its macro table when given an empty one; clear it after.
        self.math_macros = {}

    def _print_Mul(self, expr):
        # CFamilyPrinter prints x**2 as the product x*x, yet SymPy's _print_Mul still gives a
        # power the precedence of `**` and writes a single denominator without parentheses:
        # a/(b + 1)**2 would become a/(b + 1)*(b + 1). Write that case here.
        factors = sp.Mul.make_args(expr)
        expanded = [f for f in factors if f.is_Pow and f.exp.is_Integer
                    and -MAX_EXPANDED_POWER <= int(f.exp) < -1]
        other_denominators = [f for f in factors if f.is_Pow and f.exp.is_Rational
                              and f.exp.is_negative and f not in expanded]
        if len(expanded) == 1 and not other_denominators:
            power = expanded[0]
            denominator = self._print(sp.Pow(power.base, -power.exp, evaluate=False))
            numerator = sp.Mul(*[f for f in factors if f is not power])
            if numerator in (sp.S.One, sp.S.NegativeOne):
                sign = "-" if numerator == -1 else ""
                return f"{sign}{self.literal(1.0)}/({denominator})"
            text = self.parenthesize(numerator, sp.printing.precedence.PRECEDENCE["Mul"],
                                     strict=True)
            return f"{text}/({denominator})"
        return super()._print_Mul(expr)

    def _print_BooleanTrue(self, expr):
        return "1"          # C99 without <stdbool.h>: no `true`

    def _print_BooleanFalse(self, expr):
        return "0"
