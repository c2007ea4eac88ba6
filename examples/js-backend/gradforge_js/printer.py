"""IR expressions as JavaScript: gradforge's CFamilyPrinter with JavaScript's spelling.

JavaScript shares C's operators (``?:``, ``&&``, ``||``, ``!``, ``==``), so only the names
change: every math function lives on ``Math`` and ``Math.sign`` already has sign(0) = 0 (and
sign(NaN) = NaN), so no helper needs to be generated for ``sign``.
"""
from __future__ import annotations

from gradforge.plugin_api import CFamilyPrinter

#: C name the printer calls → JavaScript function (keys are CFamilyPrinter's C names).
FUNCTIONS = {name: f"Math.{name}" for name in
             ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sqrt", "pow")}
FUNCTIONS["fabs"] = "Math.abs"


class JavaScriptPrinter(CFamilyPrinter):
    """Always double precision: JavaScript numbers are IEEE doubles (see plugin.py for float32)."""

    _default_settings = dict(CFamilyPrinter._default_settings, function_names=FUNCTIONS,
                             pow_function="pow", sign_function="Math.sign",
                             select_function="", literal_suffix="")

    def __init__(self, names):
        super().__init__({"names": names, "precision": "float64"})
