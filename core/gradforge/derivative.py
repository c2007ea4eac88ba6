"""Stage 4: exact gradients by reverse-mode accumulation over the expression DAG.

``sympy.diff`` per parameter re-walks the whole loss once per parameter (quadratic in model
size). Instead we

1. linearize the let-bindings and the output into a *tape*: one SSA assignment per distinct
   subexpression (SymPy's structural hashing makes this common-subexpression elimination for
   free),
2. sweep the tape backwards once, accumulating adjoints with local partial derivatives written in
   terms of tape symbols (``d tanh(u) = 1 - v²`` reuses ``v = tanh(u)``), skipping every node
   that does not depend on a parameter, and
3. clean up: temporaries used once are inlined back, dead code dropped.

Non-smooth rules (documented in ``docs/semantics.md``): d|u| = sign(u) with sign(0) = 0,
d sign(u) = 0, and ``Piecewise`` (max, min, relu, clip, where, sigmoid, softplus) is
differentiated branch-wise with the branch's own condition; the adjoint is multiplied *inside*
the branches so that an infinite partial in an unselected branch never meets a zero (no 0·∞).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .errors import BackendError

Assignment = tuple[sp.Symbol, sp.Expr]
_SUPPORTED_FUNCS = (sp.exp, sp.log, log1p, expm1, sp.sin, sp.cos, sp.tan, sp.tanh, sp.Abs,
                    sp.sign)
#: Sums up to this many terms are matched against their negation (longer ones: rarely negated,
#: and negating them costs SymPy time on large models).
_NEGATION_CSE_MAX_TERMS = 8


@dataclass(frozen=True)
class StraightLine:
    """Straight-line code: ``assignments`` in order, then ``outputs`` over their symbols."""

    assignments: tuple[Assignment, ...]
    outputs: tuple[sp.Expr, ...]
    temporaries: frozenset = frozenset()   # generated names (free to rename), not user lets


def _is_atom(expr) -> bool:
    return expr.is_Symbol or expr.is_Number or expr.is_NumberSymbol or \
        isinstance(expr, (sp.logic.boolalg.BooleanAtom,))


class Tape:
    """SSA form of let-bindings and outputs; identical subexpressions share one symbol."""

    def __init__(self, namer, temp_prefix: str = "t"):
        self.namer = namer
        self.prefix = temp_prefix
        self.assignments: list[Assignment] = []
        self.memo: dict[sp.Expr, sp.Expr] = {}
        self.named: set[sp.Symbol] = set()
        self.temps: set[sp.Symbol] = set()

    def temp(self) -> sp.Symbol:
        symbol = self.namer.symbol(f"{self.prefix}{len(self.temps)}")
        self.temps.add(symbol)
        return symbol

    def record(self, expr: sp.Expr) -> sp.Expr:
        """The atom (symbol or number) standing for ``expr`` after recording its nodes."""
        if _is_atom(expr):
            return expr
        hit = self.memo.get(expr)
        if hit is not None:
            return hit
        if isinstance(expr, sp.Add) and len(expr.args) <= _NEGATION_CSE_MAX_TERMS:
            # u and -u are one value: b - a reuses a - b (one negation, not a second sum)
            negated = self.memo.get(sp.Mul(sp.Integer(-1), expr))
            if negated is not None and not negated.is_Number:
                hit = self.record(sp.Mul(sp.Integer(-1), negated))
                self.memo[expr] = hit
                return hit
        node = self.shallow(expr)
        hit = self.memo.get(node)
        if hit is None:
            hit = self.temp()
            self.assignments.append((hit, node))
            self.memo[node] = hit
        self.memo[expr] = hit
        return hit

    def shallow(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with its children replaced by atoms (conditions keep their structure)."""
        if isinstance(expr, sp.Piecewise):
            pairs = [(self.record(e), self.condition(c)) for e, c in expr.args]
            return sp.Piecewise(*pairs, evaluate=False)
        if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)) or \
                (isinstance(expr, sp.Function) and expr.func in _SUPPORTED_FUNCS):
            return expr.func(*[self.record(a) for a in expr.args], evaluate=False)
        raise BackendError(f"gradforge cannot differentiate {type(expr).__name__}: {expr}")

    def condition(self, cond):
        if isinstance(cond, sp.logic.boolalg.BooleanAtom):
            return cond
        if isinstance(cond, sp.core.relational.Relational):
            return cond.func(self.record(cond.lhs), self.record(cond.rhs), evaluate=False)
        if isinstance(cond, (sp.And, sp.Or, sp.Not)):
            return cond.func(*[self.condition(c) for c in cond.args], evaluate=False)
        raise BackendError(f"unsupported condition {cond}")

    def bind(self, symbol: sp.Symbol, expr: sp.Expr) -> None:
        """Record a named let: ``symbol = expr`` (the name survives cleanup)."""
        self.named.add(symbol)
        atom = self.record(expr)
        last = self.assignments[-1] if self.assignments else None
        if last is not None and last[0] == atom and atom not in self.named:
            # the expression was recorded just now: give its node the user's name
            self.assignments[-1] = (symbol, last[1])
            for key in [k for k, v in self.memo.items() if v == atom]:
                self.memo[key] = symbol
            return
        self.assignments.append((symbol, atom))


def _local_partials(node: sp.Expr, value: sp.Symbol) -> Iterable[tuple[sp.Expr, sp.Expr]]:
    """(argument, ∂node/∂argument) pairs; ``value`` is the symbol holding the node's value."""
    if isinstance(node, sp.Add):
        for arg in node.args:
            yield arg, sp.Integer(1)
    elif isinstance(node, sp.Mul):
        args = node.args
        for i, arg in enumerate(args):
            yield arg, _product(*(args[:i] + args[i + 1:]))
    elif isinstance(node, sp.Pow):
        base, exp = node.args
        if exp == sp.Rational(1, 2):
            yield base, 1 / (2 * value)
        elif exp == -1:
            yield base, -value ** 2
        else:
            yield base, exp * base ** (exp - 1)
        if not exp.is_Number:
            yield exp, value * sp.log(base)
    elif isinstance(node, sp.Piecewise):
        for i, (arg, _) in enumerate(node.args):
            yield arg, sp.Piecewise(*[(sp.Integer(int(i == j)), c)
                                      for j, (_, c) in enumerate(node.args)], evaluate=False)
    else:
        (arg,) = node.args
        func = node.func
        if func is sp.exp:
            yield arg, value
        elif func is sp.log:
            yield arg, 1 / arg
        elif func is log1p:
            yield arg, 1 / (1 + arg)
        elif func is expm1:
            yield arg, value + 1
        elif func is sp.sin:
            yield arg, sp.cos(arg, evaluate=False)
        elif func is sp.cos:
            yield arg, -sp.sin(arg, evaluate=False)
        elif func is sp.tan:
            yield arg, 1 + value ** 2
        elif func is sp.tanh:
            yield arg, 1 - value ** 2
        elif func is sp.Abs:
            yield arg, sp.sign(arg, evaluate=False)
        elif func is sp.sign:
            return
        else:  # pragma: no cover - Tape.shallow rejects these first
            raise BackendError(f"no derivative rule for {func}")


def _product(*factors: sp.Expr) -> sp.Expr:
    """Product of factors; a product of plain symbols skips SymPy's (slow) Mul.flatten.

    Most adjoint contributions are ``d·x`` of two symbols: evaluating each of those Muls
    costs more than the rest of the reverse sweep on a 2k-parameter model.
    """
    kept = []
    for f in factors:
        if f == 0:
            return sp.Integer(0)
        if f != 1:
            kept.append(f)
    if not kept:
        return sp.Integer(1)
    if len(kept) == 1:
        return kept[0]
    if all(f.is_Symbol for f in kept):
        return sp.Mul(*sorted(kept, key=lambda f: f.name), evaluate=False)
    return sp.Mul(*kept)


def _times(adjoint: sp.Expr, partial: sp.Expr) -> sp.Expr:
    """adjoint · partial, multiplied into Piecewise branches (a 0-branch stays exactly 0)."""
    if isinstance(adjoint, sp.Piecewise):
        return sp.Piecewise(*[(_times(e, partial), c) for e, c in adjoint.args],
                            evaluate=False)
    if isinstance(partial, sp.Piecewise):
        return sp.Piecewise(*[(_product(adjoint, e), c) for e, c in partial.args],
                            evaluate=False)
    return _product(adjoint, partial)


def merge_piecewise(terms: Sequence[sp.Expr]) -> sp.Expr:
    """Sum of ``terms`` in which Piecewise terms under the same conditions become one Piecewise
    (branch-wise sums): one select per condition instead of one per term."""
    plain: list[sp.Expr] = []
    groups: dict[tuple, list[sp.Expr]] = {}
    for term in terms:
        if isinstance(term, sp.Piecewise):
            key = tuple(c for _, c in term.args)
            branches = [e for e, _ in term.args]
            if key in groups:
                groups[key] = [sp.Add(a, b) for a, b in zip(groups[key], branches)]
            else:
                groups[key] = branches
        else:
            plain.append(term)
    for key, branches in groups.items():
        if all(b == branches[0] for b in branches[1:]):
            plain.append(branches[0])
        else:
            plain.append(sp.Piecewise(*zip(branches, key), evaluate=False))
    if len(plain) == 1:
        return plain[0]
    return sp.Add(*plain)


def _symbols_in(expr) -> list[sp.Symbol]:
    """Symbol occurrences in ``expr`` (with multiplicity), without set-order randomness."""
    out = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if node.is_Symbol:
            out.append(node)
        else:
            stack.extend(node.args)
    return out


def cleanup(assignments: Sequence[Assignment], outputs: Sequence[sp.Expr],
            keep: set[sp.Symbol], temps: set[sp.Symbol]) -> StraightLine:
    """Drop dead assignments, inline temporaries used once (or bound to atoms)."""
    live: set[sp.Symbol] = set()
    for out in outputs:
        live.update(_symbols_in(out))
    needed = []
    for symbol, expr in reversed(assignments):
        if symbol in live:
            needed.append((symbol, expr))
            live.update(_symbols_in(expr))
    needed.reverse()
    uses: dict[sp.Symbol, int] = {}
    for expr in [e for _, e in needed] + list(outputs):
        for s in _symbols_in(expr):
            uses[s] = uses.get(s, 0) + 1
    subst: dict[sp.Symbol, sp.Expr] = {}
    kept: list[Assignment] = []
    for symbol, expr in needed:
        expr = substitute(expr, subst)
        if symbol not in keep and (uses.get(symbol, 0) <= 1 or _is_atom(expr)):
            subst[symbol] = expr
        else:
            kept.append((symbol, expr))
    return StraightLine(tuple(kept), tuple(substitute(o, subst) for o in outputs),
                        frozenset(s for s, _ in kept if s in temps))


def substitute(expr, subst: dict, evaluate: bool = True) -> sp.Expr:
    """``expr.xreplace(subst)`` that re-evaluates Add/Mul/Pow but never calls a function's or
    relation's ``eval`` (which asks the slow assumption system about big arguments).
    With ``evaluate=False`` nothing is re-evaluated (a pure renaming of symbols)."""
    if expr.is_Symbol:
        return subst.get(expr, expr)
    if _is_atom(expr) or not expr.args:
        return expr
    if isinstance(expr, sp.Piecewise):
        pairs = [(substitute(e, subst, evaluate), substitute(c, subst, evaluate))
                 for e, c in expr.args]
        if all(e is old.expr and c is old.cond for (e, c), old in zip(pairs, expr.args)):
            return expr
        return sp.Piecewise(*pairs, evaluate=False)
    args = [substitute(a, subst, evaluate) for a in expr.args]
    if all(new is old for new, old in zip(args, expr.args)):
        return expr                              # untouched subtree: no rebuild, no eval
    if not evaluate or any(a.has(sp.Piecewise) for a in args):
        # SymPy would distribute a product/power into Piecewise branches and re-evaluate
        # their conditions (which can fail with zoo comparisons)
        return expr.func(*args, evaluate=False)
    if isinstance(expr, sp.Add) and len(args) > 4 and not any(
            a.is_Number or isinstance(a, sp.Add) for a in args):
        # a long sum of distinct non-constant terms has nothing to combine: skip the costly
        # flatten/sort (sum over 32 inputs of an MLP layer, once per unit and kernel)
        return sp.Add(*args, evaluate=False)
    if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)):
        return expr.func(*args)
    return expr.func(*args, evaluate=False)


def linearize(lets: Sequence[Assignment], outputs: Sequence[sp.Expr], namer,
              prefix: str = "t") -> tuple[Tape, list[sp.Expr]]:
    """Record ``lets`` and ``outputs`` on a fresh tape; returns the tape and output atoms."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        tape = Tape(namer, prefix)
        for symbol, expr in lets:
            tape.bind(symbol, expr)
        atoms = [tape.record(o) for o in outputs]
    finally:
        sys.setrecursionlimit(limit)
    return tape, atoms


def gradient(lets: Sequence[Assignment], output: sp.Expr, wrt: Sequence[sp.Symbol], namer,
             prefix: str = "t") -> StraightLine:
    """Straight-line code whose outputs are ``output`` then ∂output/∂w for each w in ``wrt``.

    One forward recording and one reverse sweep: the cost stays within a small factor of
    evaluating ``output`` itself, whatever the number of parameters.
    """
    tape, (root,) = linearize(lets, [output], namer, prefix)
    return reverse(tape, root, wrt)


def reverse(tape: Tape, root: sp.Expr, wrt: Sequence[sp.Symbol]) -> StraightLine:
    """The reverse sweep over an existing tape (shared with the forward-only kernels)."""
    namer = tape.namer
    wrt_set = set(wrt)
    active: set[sp.Expr] = set(wrt_set)
    for symbol, node in tape.assignments:
        if any(s in active for s in _symbols_in(node)):
            active.add(symbol)

    terms: dict[sp.Expr, list[sp.Expr]] = {}
    if root in active:
        terms[root] = [sp.Integer(1)]
    reverse: list[Assignment] = []
    for symbol, node in reversed(tape.assignments):
        contributions = terms.pop(symbol, None)
        if not contributions:
            continue
        adjoint = namer.symbol(f"d_{symbol}") if symbol in tape.named else tape.temp()
        value = merge_piecewise(contributions)
        if value == 0:
            continue
        reverse.append((adjoint, value))
        if isinstance(value, sp.Piecewise) and any(e == 0 for e, _ in value.args):
            # push later partials into the branches too: a branch whose adjoint is exactly 0
            # must stay 0 even where the partial is infinite (sqrt at 0 behind a relu)
            adjoint = value
        if symbol in tape.named and _is_atom(node):
            partials: Iterable = [(node, sp.Integer(1))]
        else:
            partials = _local_partials(node, symbol)
        for arg, partial in partials:
            if arg in active and partial != 0:
                terms.setdefault(arg, []).append(_times(adjoint, partial))
    grads = [sp.Add(*terms.get(w, [])) for w in wrt]
    return cleanup(tape.assignments + reverse, [root] + grads, tape.named, tape.temps)
