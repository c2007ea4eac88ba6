"""C99 expression printer: gradforge's :class:`CFamilyPrinter` with C's spelling per precision.

* float64: ``double`` literals (``0.5``) and the double functions of ``<math.h>``.
* float32: ``f``-suffixed literals (``0.5f``) and the float variants (``expf``, ``tanhf``,
  ``sqrtf``, ``fabsf``, ``powf`` …), so the output compiles under ``-Wdouble-promotion
  -Wconversion -Werror`` with no double anywhere.

SymPy's C printer also replaces some constants by ``<math.h>`` macros (``2/pi`` → ``M_2_PI``);
those macros are not defined under ``-std=c99`` and are doubles, so they are switched off here.
"""
from __future__ import annotations

from gradforge.plugin_api import CFamilyPrinter

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
            settings.setdefault("infinity", "HUGE_VALF")
        settings.setdefault("infinity", "HUGE_VAL")      # <math.h>, typed like the code
        super().__init__(settings)
        # C89CodePrinter falls back to its macro table when given an empty one; clear it after.
        self.math_macros = {}

    def _print_BooleanTrue(self, expr):
        return "1"          # C99 without <stdbool.h>: no `true`

    def _print_BooleanFalse(self, expr):
        return "0"
