"""Stage 4b: recognise a least-squares objective for Levenberg–Marquardt.

LM needs residuals rₖ with ℓᵢ = Σₖ rₖ² per sample (and R(θ) = Σ qⱼ² for the regularizer). They
come from ``[model] residuals = "[…]"`` (checked against the loss) or from the loss itself when it
is written as a sum of ``c * r**2`` terms with a positive constant ``c`` — including
``(prediction - y)**2`` and ``0.5 * sum(r**2)``. The residual is then ``sqrt(c) * r``. The
structure the user wrote is kept (no expansion), so the Jacobian rows stay as cheap as the
gradient.
"""
from __future__ import annotations

import sympy as sp

from .errors import ProjectError


def _positive_constant(factor: sp.Expr, constants: set[sp.Symbol],
                       defaults: dict[sp.Symbol, float]) -> bool:
    """A number > 0, or a product of such numbers and runtime constants with positive defaults."""
    if factor.is_Number:
        return bool(factor > 0)
    if factor in constants:
        return defaults[factor] > 0
    if isinstance(factor, sp.Mul):
        return all(_positive_constant(a, constants, defaults) for a in factor.args)
    return False


def square_terms(expr: sp.Expr, constants: set[sp.Symbol],
                 defaults: dict[sp.Symbol, float]) -> list[sp.Expr] | None:
    """Residuals r with ``expr == Σ r²``, or None when ``expr`` is not such a sum."""
    terms = expr.args if isinstance(expr, sp.Add) else (expr,)
    out = []
    for term in terms:
        coefficient, rest = sp.Integer(1), term
        if isinstance(term, sp.Mul):
            squares = [a for a in term.args if isinstance(a, sp.Pow) and a.args[1] == 2]
            others = [a for a in term.args if not (isinstance(a, sp.Pow) and a.args[1] == 2)]
            if len(squares) != 1:
                return None
            coefficient, rest = sp.Mul(*others), squares[0]
        if not (isinstance(rest, sp.Pow) and rest.args[1] == 2):
            return None
        if not _positive_constant(coefficient, constants, defaults):
            return None
        base = rest.args[0]
        out.append(base if coefficient == 1 else sp.sqrt(coefficient) * base)
    return out


def residuals(model) -> tuple[list[sp.Expr], list[sp.Expr]]:
    """(per-sample residuals, regularizer residuals) of ``model``, or a ProjectError saying why
    Levenberg–Marquardt cannot train it (and suggesting lbfgs)."""
    constants = {s for _, s in model.constants}
    defaults = {s: c.default for c, s in model.constants}
    hint = "use optimizer = \"lbfgs\", which trains any smooth objective"
    if model.residuals is not None:
        sample = list(model.residuals)
        lets = dict(model.lets)

        def inline(e):
            for _ in range(len(lets) + 1):
                new = e.xreplace(lets)
                if new == e:
                    return e
                e = new
            return e
        difference = sp.expand(inline(model.loss) - sum(inline(r) ** 2 for r in sample))
        if sp.simplify(difference) != 0:
            raise ProjectError("the loss is not the sum of the squared residuals",
                               key="model.residuals",
                               hint="write loss = \"sum(r**2)\" for your residuals r, or drop "
                                    "`residuals` and write the loss as a sum of c*r**2 terms")
    else:
        found = square_terms(model.loss, constants, defaults)
        if found is None:
            raise ProjectError("levenberg_marquardt needs a least-squares loss (a sum of "
                               "c*r**2 terms, c > 0 constant)", key="training.optimizer",
                               hint=hint + ", or declare [model] residuals")
        sample = found
    regular: list[sp.Expr] = []
    if model.regularization is not None:
        found = square_terms(model.regularization, constants, defaults)
        if found is None:
            raise ProjectError("levenberg_marquardt needs the regularization to be a sum of "
                               "c*q**2 terms (c > 0 constant)", key="training.optimizer",
                               hint=hint)
        regular = found
    return sample, regular
