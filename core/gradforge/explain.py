"""``gradforge explain``: the derivative for a human, in the shortest form we can find.

``simplify`` can return a *longer* expression (SymPy #19610), and may hang on big ones, so we
never trust one form: for each gradient entry we collect candidates (the reverse-mode result
with temporaries inlined, ``factor``, and — for small expressions only — ``simplify`` with
``ratio=1``) and keep the one with the fewest operations.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .derivative import substitute
from .ir import Program

SIMPLIFY_LIMIT = 40     # count_ops above which simplify() is not attempted


@dataclass(frozen=True)
class Formula:
    label: str          # e.g. "∂ℓ/∂w[2]"
    text: str
    ops: int


def shortest(expr: sp.Expr) -> sp.Expr:
    """The candidate form of ``expr`` with the fewest operations (ties: the original)."""
    candidates = [expr]
    if expr.has(sp.Piecewise):
        try:      # one Piecewise with a formula per branch reads better than a sum of them
            folded = sp.piecewise_fold(expr)
            candidates.append(folded)
            if isinstance(folded, sp.Piecewise):
                candidates.append(sp.Piecewise(*[(sp.factor(e), c) for e, c in folded.args]))
        except (ValueError, TypeError, NotImplementedError, sp.PolynomialError):
            pass
    try:
        candidates.append(sp.factor(expr))
    except (sp.PolynomialError, ValueError, TypeError, NotImplementedError):
        pass
    if sp.count_ops(expr) <= SIMPLIFY_LIMIT:
        try:
            candidates.append(sp.simplify(expr, ratio=1))
        except (ValueError, TypeError, NotImplementedError, RecursionError):
            pass
    # simplify() may trade sign(r) for r/Abs(r) plus an Eq(r, 0) branch: same value, harder to
    # read, so a candidate that introduces Eq conditions the expression did not have loses
    original_eqs = len(expr.atoms(sp.Eq))
    return min(candidates, key=lambda e: (len(e.atoms(sp.Eq)) > original_eqs,
                                          sp.count_ops(e), len(str(e))))


def _label(program: Program, index: int, of: str) -> str:
    param, i = program.parameter_of(index)
    if not param.shape:
        return f"∂{of}/∂{param.name}"
    idx = []
    for n in reversed(param.shape):
        idx.append(i % n)
        i //= n
    return f"∂{of}/∂{param.name}[{', '.join(map(str, reversed(idx)))}]"


def formulas(program: Program, limit: int | None = 24) -> tuple[list[str], list[Formula]]:
    """(definitions used, per-parameter gradient formulas) of the per-sample loss and R."""
    kernel = program.loss_and_gradient
    named = {a.target for a in kernel.body if a.target not in kernel.temporaries}
    inline: dict[sp.Symbol, sp.Expr] = {}
    definitions = []
    for a in kernel.body:
        expr = substitute(a.expr, inline)
        if a.target in named and not a.target.name.startswith("d_"):
            definitions.append(f"{a.target.name} = {sp.sstr(shortest(expr))}")
        else:
            inline[a.target] = expr
    out = []
    entries = list(kernel.gradient)
    for index, expr in entries[:limit] if limit else entries:
        best = shortest(substitute(expr, inline))
        out.append(Formula(_label(program, index, "ℓ"), sp.sstr(best), int(sp.count_ops(best))))
    if program.regularizer is not None:
        for index, expr in list(program.regularizer.gradient)[:limit] if limit \
                else program.regularizer.gradient:
            best = shortest(expr)
            out.append(Formula(_label(program, index, "R"), sp.sstr(best),
                               int(sp.count_ops(best))))
    return definitions, out


def report(program: Program, limit: int | None = 24) -> str:
    """The text ``gradforge explain`` prints."""
    definitions, entries = formulas(program, limit)
    lines = [f"{program.name}: J = {program.reduction} over samples of ℓ"
             + (" + R" if program.regularizer is not None else ""), ""]
    if definitions:
        lines.append("where")
        lines += [f"  {d}" for d in definitions]
        lines.append("")
    lines.append("gradient (subgradients at kinks: sign(0) = 0; see docs/semantics.md)")
    width = max((len(e.label) for e in entries), default=0)
    lines += [f"  {e.label.ljust(width)} = {e.text}" for e in entries]
    total = len(program.loss_and_gradient.gradient) + (
        len(program.regularizer.gradient) if program.regularizer else 0)
    if limit and total > len(entries):
        lines.append(f"  … {total - len(entries)} more (use --all)")
    loss_ops = program.loss.op_count()
    grad_ops = program.loss_and_gradient.op_count()
    lines += ["", f"operations per sample: loss {loss_ops}, loss+gradient {grad_ops} "
              f"(ratio {grad_ops / max(loss_ops, 1):.2f})"]
    return "\n".join(lines) + "\n"
