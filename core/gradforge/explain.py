"""``gradforge explain``: the gradient printed the way a user would write it by hand.

The IR holds what the generated code computes: stable lowered forms (sigmoid as a select over
``exp(-|u|)``, max as a ``Piecewise``), one symbol per array element (``w_0``) and generated
temporaries. For a human we undo that, per gradient entry:

1. inline the generated temporaries; the user's definitions and ``prediction`` stay names;
2. fold the lowered forms back into the functions the user wrote (``sigmoid``, ``softplus``,
   ``relu``, ``max``, ``min``, ``abs``). They are recognised by *value* at seeded random
   points, never by shape, so explain keeps working when the core changes how it lowers them;
3. resolve each ``Piecewise`` branch under its condition and write ``exp(±u)`` through
   ``sigmoid(u)``; a ``Piecewise`` whose branches then agree is one formula (its split only
   kept the code from overflowing);
4. keep the shortest of several equivalent forms by ``count_ops`` (``simplify`` can return a
   longer expression, SymPy #19610, and may hang on big ones, so it is one candidate among
   others and only for small expressions);
5. name a sum that repeats (``z = dot(w, x) + b``) and print arrays as ``w[0]``, ``dot``;
6. group array entries: one line ``∂ℓ/∂w[j] = … for j in range(3)`` when that template,
   instantiated at every index, agrees with every entry.

A ``Piecewise`` that remains prints as ``where(condition, a, b)``, as in a project file.
Subgradient conventions are those of docs/semantics.md (the IR's, unchanged).
"""
from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import mpmath
import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.str import StrPrinter

from .derivative import substitute
from .ir import Kernel, Program

SIMPLIFY_LIMIT = 20     # count_ops above which simplify() is not attempted (seconds each)
DEFAULT_LIMIT = 24      # gradient lines printed without --all

# display-only functions (never reach a backend)
sigmoid, softplus, relu = sp.Function("sigmoid"), sp.Function("softplus"), sp.Function("relu")
fmax, fmin, dot = sp.Function("max"), sp.Function("min"), sp.Function("dot")


@dataclass(frozen=True)
class Formula:
    label: str          # e.g. "∂ℓ/∂w[j]" or "∂ℓ/∂b"
    text: str           # e.g. "(sigmoid(z) - y)*x[j]"
    ops: int
    indices: str = ""   # e.g. "for j in range(3)" for a grouped array


# ------------------------------------------------------------------------ value checks

POINTS = 12      # seeded random points at which two forms must agree

_UNARY = {
    "exp": mpmath.exp, "log": lambda u: mpmath.log(u) if u > 0 else None,
    "log1p": lambda u: mpmath.log1p(u) if u > -1 else None, "expm1": mpmath.expm1,
    "sin": mpmath.sin, "cos": mpmath.cos, "tan": mpmath.tan, "tanh": mpmath.tanh,
    "Abs": abs, "sign": mpmath.sign,
    "sigmoid": lambda u: 1 / (1 + mpmath.exp(-u)),
    "softplus": lambda u: mpmath.log1p(mpmath.exp(u)),
    "relu": lambda u: u if u > 0 else mpmath.mpf(0),
}
_BINARY = {
    "max": lambda a, b: a if a >= b else b, "min": lambda a, b: a if a <= b else b,
    "StrictGreaterThan": lambda a, b: a > b, "GreaterThan": lambda a, b: a >= b,
    "StrictLessThan": lambda a, b: a < b, "LessThan": lambda a, b: a <= b,
    "Equality": lambda a, b: a == b, "Unequality": lambda a, b: a != b,
}


class _Values:
    """Values of an expression at :data:`POINTS` seeded points (30 digits), memoized per
    node. A symbol's values depend on its name only, so any two expressions compare; a
    point outside an expression's domain is ``None``."""

    def __init__(self):
        self.memo: dict = {}

    def __call__(self, expr) -> list:
        hit = self.memo.get(expr)
        if hit is None:
            with mpmath.workdps(30):
                hit = self.memo[expr] = self._evaluate(expr)
        return hit

    def _evaluate(self, e) -> list:
        if e is sp.true or e is sp.false:
            return [bool(e)] * POINTS
        if e.is_Symbol:
            rng = random.Random(e.name)
            return [mpmath.mpf(rng.gauss(0.0, 1.5)) for _ in range(POINTS)]
        if e.is_Rational:
            return [mpmath.mpf(e.p) / e.q] * POINTS
        if e.is_Number or e.is_NumberSymbol:
            return [mpmath.mpf(str(sp.N(e, 40)))] * POINTS
        if isinstance(e, sp.Piecewise):
            pairs = [(self(v), self(c)) for v, c in e.args]
            out = []
            for k in range(POINTS):
                chosen = None
                for values, conds in pairs:
                    if conds[k] is None:
                        break
                    if conds[k]:
                        chosen = values[k]
                        break
                out.append(chosen)
            return out
        args = [self(a) for a in e.args]
        name = type(e).__name__ if not isinstance(e, AppliedUndef) else e.func.__name__
        if isinstance(e, sp.Add):
            op = lambda *xs: mpmath.fsum(xs)                      # noqa: E731
        elif isinstance(e, sp.Mul):
            op = lambda *xs: mpmath.fprod(xs)                     # noqa: E731
        elif isinstance(e, sp.Pow):
            op = lambda b, x: None if b == 0 and x < 0 else b ** x      # noqa: E731
        elif isinstance(e, sp.And):
            op = lambda *xs: all(xs)                              # noqa: E731
        elif isinstance(e, sp.Or):
            op = lambda *xs: any(xs)                              # noqa: E731
        elif isinstance(e, sp.Not):
            op = lambda x: not x                                  # noqa: E731
        elif name in _UNARY and len(args) == 1:
            op = _UNARY[name]
        elif name in _BINARY and len(args) == 2:
            op = _BINARY[name]
        else:
            return [None] * POINTS                   # unknown: nothing can be proven
        out = []
        for xs in zip(*args):
            try:
                value = None if any(x is None for x in xs) else op(*xs)
            except (ZeroDivisionError, ValueError, OverflowError):
                value = None
            if isinstance(value, mpmath.mpc) or (isinstance(value, mpmath.mpf)
                                                 and not mpmath.isfinite(value)):
                value = None
            out.append(value)
        return out


_VALUES = _Values()


def agree(a, b) -> bool:
    """Whether ``a`` and ``b`` have the same value at the seeded random points (at least
    half of them inside both domains). Symbols are independent variables here, so agreement
    is never claimed from a relation that holds only through a definition."""
    # strict: numbers and SymPy objects only, never text (project text goes through the
    # ast whitelist in expressions.py).
    a, b = sp.sympify(a, strict=True), sp.sympify(b, strict=True)
    if a == b:
        return True
    seen = 0
    tolerance = mpmath.mpf(10) ** -20
    for va, vb in zip(_VALUES(a), _VALUES(b)):
        if va is None or vb is None:
            continue
        if isinstance(va, bool) or isinstance(vb, bool):
            if va != vb:
                return False
        elif abs(va - vb) > tolerance * max(1, abs(va), abs(vb)):
            return False
        seen += 1
    return seen >= POINTS // 2


def _rebuild(expr, args):
    """``expr`` with new children; untouched when they are the same objects (a rebuilt
    ``2*(a - b)`` would come back distributed as ``2*a - 2*b``)."""
    if all(new is old for new, old in zip(args, expr.args)):
        return expr
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[tuple(pair.args) for pair in args], evaluate=False)
    if isinstance(expr, (sp.Add, sp.Mul, sp.Pow, ExprCondPair)):
        return expr.func(*args)
    try:
        return expr.func(*args, evaluate=False)
    except TypeError:
        return expr.func(*args)


# ------------------------------------------------------------- folding the lowered forms

def _relations(expr) -> list[sp.core.relational.Relational]:
    found = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.core.relational.Relational) and node not in found:
            found.append(node)
    return found


def _known_forms(expr) -> Iterable[sp.Expr]:
    """Functions the user may have written that ``expr`` could be the lowering of: built
    from the operands of the comparisons inside it (tie rules pick the spelling: a strict
    ``u > 0`` is relu, ``a >= b`` is max with ``a`` first, as in expressions.py)."""
    first = expr.args[0].expr if isinstance(expr, sp.Piecewise) else None
    for rel in _relations(expr):
        a, b = rel.lhs, rel.rhs
        if isinstance(rel, (sp.Lt, sp.Le)):
            a, b = b, a                          # a > b or a >= b from here on
        u = a if b == 0 else (-b if a == 0 else a - b)
        pairs = [(a, b), (b, a)] if first != b else [(b, a), (a, b)]
        if isinstance(rel, (sp.Gt, sp.Lt)) and b == 0:
            yield relu(a)
        for x, y in pairs:
            yield fmax(x, y)
            yield fmin(x, y)
        yield sigmoid(u)
        yield softplus(u)
        yield sp.Abs(u)
        yield -sp.Abs(u)


class _Folder:
    """Rewrites expressions into user functions; memoized (entries share subexpressions)."""

    def __init__(self):
        self.memo: dict[sp.Expr, sp.Expr] = {}

    def fold(self, expr):
        if not isinstance(expr, sp.Basic) or expr.is_Atom or not expr.has(sp.Piecewise):
            return expr
        hit = self.memo.get(expr)
        if hit is None:
            hit = self.memo[expr] = self._fold(expr)
        return hit

    def _fold(self, expr):
        if isinstance(expr, sp.Add):
            merged = _merge_piecewise_terms(expr)
            if merged is not expr:
                return self.fold(merged)
        if not isinstance(expr, sp.core.relational.Relational) and not isinstance(
                expr, sp.logic.boolalg.Boolean):
            for candidate in _known_forms(expr):
                if agree(expr, candidate):
                    return candidate.func(*[self.fold(a) for a in candidate.args])
        if isinstance(expr, sp.Piecewise):
            return self._branches(expr)
        return _rebuild(expr, [self.fold(a) for a in expr.args])

    def _branches(self, expr: sp.Piecewise):
        """Each branch simplified under its condition (and the earlier ones failing); one
        formula when all branches then agree."""
        facts: dict = {}
        pairs = []
        for value, cond in expr.args:
            known = dict(facts)
            _learn(known, cond, True)
            pairs.append((self.fold(_assume(value, known)),
                          self.fold(cond) if cond is not sp.true else cond))
            _learn(facts, cond, False)
        # through sigmoid only to see whether the branches agree (e^u/(1 + e^u) for u < 0 and
        # 1/(1 + e^-u) otherwise are one sigmoid(u)); a split that stays keeps its own forms
        values = [through_sigmoid(v) for v, _ in pairs]
        if all(v == values[0] for v in values) or all(agree(values[0], v) for v in values[1:]):
            return min(values + [v for v, _ in pairs],
                       key=lambda v: (sp.count_ops(v), len(str(v))))
        return sp.Piecewise(*pairs, evaluate=False)


def _merge_piecewise_terms(expr: sp.Add):
    """``where(c, a, b) + where(c, p, q)`` → ``where(c, a + p, b + q)``: terms split under
    the same conditions are one formula per branch (``1 − s`` and ``s`` for u ≥ 0 / u < 0
    together are sigmoid(u)). ``expr`` itself when there is nothing to merge."""
    def terms(node, scale=sp.Integer(1)):
        """The terms of a nested unevaluated sum, ``-(a - b)`` flattened to ``-a, b``."""
        if isinstance(node, sp.Add):
            return [t for arg in node.args for t in terms(arg, scale)]
        coeff, body = node.as_coeff_Mul()
        if coeff != 1 and isinstance(body, sp.Add):
            return terms(body, scale * coeff)
        return [scale * node if scale != 1 else node]

    flat = terms(expr)
    groups: dict[tuple, list] = {}
    for term in flat:
        coeff, body = term.as_coeff_Mul()
        if isinstance(body, sp.Piecewise):
            groups.setdefault(tuple(c for _, c in body.args), []).append((coeff, body))
    merged, used = [], set()
    for conds, members in groups.items():
        if len(members) < 2:
            continue
        branches = [sp.Add(*[coeff * body.args[k].expr for coeff, body in members])
                    for k in range(len(conds))]
        merged.append(sp.Piecewise(*zip(branches, conds), evaluate=False))
        used |= {coeff * body for coeff, body in members}
    if not merged:
        return expr
    rest = [t for t in flat if t not in used]
    return sp.Add(*rest, *merged, evaluate=False) if rest else \
        (merged[0] if len(merged) == 1 else sp.Add(*merged, evaluate=False))


def _fact(rel) -> tuple | None:
    """A comparison as (strict, d) meaning d > 0 (strict) or d >= 0."""
    if isinstance(rel, sp.Gt):
        return True, rel.lhs - rel.rhs
    if isinstance(rel, sp.Ge):
        return False, rel.lhs - rel.rhs
    if isinstance(rel, sp.Lt):
        return True, rel.rhs - rel.lhs
    if isinstance(rel, sp.Le):
        return False, rel.rhs - rel.lhs
    return None


def _key(cond):
    """How a condition is looked up among known facts."""
    if isinstance(cond, sp.core.relational.Relational):
        return _fact(cond) or cond
    return cond


def _learn(facts: dict, cond, truth: bool) -> None:
    fact = _fact(cond) if isinstance(cond, sp.core.relational.Relational) else None
    if fact is None:
        if cond is not sp.true:
            facts[cond] = truth
        return
    strict, d = fact
    facts[(strict, d)] = truth
    facts[(not strict, -d)] = not truth          # not (d > 0)  ⇔  -d >= 0


def _assume(expr, facts: dict):
    """``expr`` with every nested ``Piecewise`` decided by ``facts`` where it can be."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom or not expr.has(sp.Piecewise) or not facts:
        return expr
    if isinstance(expr, sp.Piecewise):
        kept = []
        for value, cond in expr.args:
            truth = True if cond is sp.true else facts.get(_key(cond))
            if truth is False:
                continue
            kept.append((_assume(value, facts), cond))
            if truth is True:
                break
        if not kept:                            # inconsistent facts: decide nothing
            return expr
        decided = kept[-1][1] is sp.true or facts.get(_key(kept[-1][1])) is True
        if not decided:                         # no default left: keep every branch
            return sp.Piecewise(*[(_assume(v, facts), c) for v, c in expr.args],
                                evaluate=False)
        if len(kept) == 1:
            return kept[0][0]
        return sp.Piecewise(*kept[:-1], (kept[-1][0], sp.true), evaluate=False)
    return _rebuild(expr, [_assume(a, facts) for a in expr.args])


def through_sigmoid(expr: sp.Expr) -> sp.Expr:
    """``exp(±u)`` written through ``s = sigmoid(u)`` (e^u = s/(1 − s)) when that removes
    every ``exp(±u)``; otherwise ``expr`` unchanged."""
    if expr.has(sp.Piecewise):
        return expr
    arguments = set()
    for e in expr.atoms(sp.exp):
        arg = e.args[0]
        arguments.add(-arg if arg.could_extract_minus_sign() else arg)
    arguments |= {f.args[0] for f in expr.atoms(AppliedUndef) if f.func == sigmoid}
    for u in sorted(arguments, key=sp.default_sort_key):
        s = sp.Dummy("s")
        replaced = expr.xreplace({sp.exp(u): s / (1 - s), sp.exp(-u): (1 - s) / s,
                                  sigmoid(u): s})
        if any(e.args[0] in (u, -u) for e in replaced.atoms(sp.exp)):
            continue
        try:
            replaced = sp.factor(sp.cancel(replaced))
        except (sp.PolynomialError, ValueError, TypeError, NotImplementedError):
            continue
        expr = replaced.xreplace({s: sigmoid(u)})
    return expr


def shortest(expr: sp.Expr, extra: Iterable[sp.Expr] = ()) -> sp.Expr:
    """The candidate form of ``expr`` with the fewest operations (ties: the original)."""
    candidates = [expr, *extra]
    if expr.has(sp.Piecewise):
        try:      # one Piecewise with a formula per branch reads better than a sum of them
            folded = sp.piecewise_fold(expr)
            candidates.append(folded)
            if isinstance(folded, sp.Piecewise):
                candidates.append(sp.Piecewise(*[(sp.factor(e), c) for e, c in folded.args]))
        except (ValueError, TypeError, NotImplementedError, sp.PolynomialError):
            pass
    for rewrite in (sp.factor, sp.factor_terms):
        try:
            candidates.append(rewrite(expr))
        except (sp.PolynomialError, ValueError, TypeError, NotImplementedError):
            pass
    candidates += [_absorb_sign(c) for c in candidates]
    if sp.count_ops(expr) <= SIMPLIFY_LIMIT and not expr.has(sp.Piecewise):
        try:       # (on a Piecewise it simplifies every condition: seconds, rarely shorter)
            candidates.append(sp.simplify(expr, ratio=1))
        except (ValueError, TypeError, NotImplementedError, RecursionError):
            pass
    # simplify() may trade sign(r) for r/Abs(r) plus an Eq(r, 0) branch: same value, harder to
    # read, so a candidate that introduces Eq conditions the expression did not have loses
    # (an ITE condition from piecewise_fold is no way to write a formula either)
    original_eqs = len(expr.atoms(sp.Eq))
    return min(candidates, key=lambda e: (e.has(sp.ITE) and not expr.has(sp.ITE),
                                          len(e.atoms(sp.Eq)) > original_eqs,
                                          sp.count_ops(e), len(str(e))))


def _absorb_sign(expr):
    """``-2*(h**2 - 1)*r`` → ``2*(1 - h**2)*r``: a product's minus sign taken into a sum."""
    if not expr.is_Mul:
        return expr
    coeff, rest = expr.as_coeff_Mul()
    if not coeff.is_negative:
        return expr
    factors = list(sp.Mul.make_args(rest))
    for k, f in enumerate(factors):
        if f.is_Add:
            factors[k] = -f
            return sp.Mul(-coeff, *factors)
    return expr


def _finite(factor) -> bool:
    base = factor.base if factor.is_Pow and factor.exp.is_Integer and factor.exp > 0 else factor
    return base.is_Symbol or base.is_Number


def pull_common_factors(expr):
    """``where(c, a*x, b*x)`` → ``where(c, a, b)*x`` (a 0 branch shares any finite factor)."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom:
        return expr
    if not isinstance(expr, sp.Piecewise):
        return _rebuild(expr, [pull_common_factors(a) for a in expr.args])
    pairs = [(pull_common_factors(v), c) for v, c in expr.args]
    counts = [Counter(sp.Mul.make_args(v)) for v, _ in pairs if v != 0]
    if not counts:
        return expr
    common = counts[0]
    for c in counts[1:]:
        common &= c
    common = Counter({f: n for f, n in common.items() if _finite(f) and not f.is_Number})
    if not common:
        return sp.Piecewise(*pairs, evaluate=False)
    shared = sp.Mul(*[f ** n for f, n in common.items()])
    inner = [(v if v == 0 else sp.Mul(*(Counter(sp.Mul.make_args(v)) - common).elements()), c)
             for v, c in pairs]
    if all(v.is_Number for v, _ in inner):
        return sp.Piecewise(*pairs, evaluate=False)   # where(c, 2*p, 0), not p*where(c, 2, 0)
    return sp.Mul(sp.Piecewise(*inner, evaluate=False), shared, evaluate=False)


# ------------------------------------------------------------------------- the program

_ELEMENT = re.compile(r"^(?P<name>.+?)(?P<index>(?:_\d+)+)_*$")


class _Names:
    """IR symbol → how a user writes it (``w_0`` → ``w[0]``), and back."""

    def __init__(self, program: Program, definitions: Iterable[str] | None):
        self.arrays: dict[str, dict[tuple[int, ...], sp.Symbol]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.where: dict[sp.Symbol, tuple[str, tuple[int, ...]]] = {}
        self.kind: dict[str, str] = {}
        for owner, kind in [(p, "param") for p in program.parameters] + \
                [(f, f.role) for f in program.fields]:
            self.kind[owner.name] = kind
            if owner.shape:
                self._add(owner.name, owner.shape, owner.symbols)
        self.definitions = None if definitions is None else set(definitions)

    def _add(self, name, shape, symbols):
        self.shapes[name] = tuple(shape)
        table = self.arrays.setdefault(name, {})
        for index, symbol in zip(itertools.product(*(range(n) for n in shape)), symbols):
            table[index] = symbol
            self.where[symbol] = (name, index)

    def add_let(self, symbol: sp.Symbol) -> None:
        """A definition's element symbol (``h_3`` of definition ``h``)."""
        match = _ELEMENT.match(symbol.name)
        if not match or symbol.name in (self.definitions or ()):
            return
        if self.definitions is None:     # no project at hand: any element-like let name
            if match.group("name") in self.kind and self.kind[match.group("name")] != "let":
                return
        elif match.group("name") not in self.definitions:
            return
        name = match.group("name")
        index = tuple(int(i) for i in match.group("index").split("_")[1:])
        self.kind.setdefault(name, "let")
        self.arrays.setdefault(name, {})[index] = symbol
        self.where[symbol] = (name, index)
        shape = self.shapes.get(name, (0,) * len(index))
        self.shapes[name] = tuple(max(n, i + 1) for n, i in zip(shape, index))

    def text(self) -> dict[str, str]:
        return {s.name: f"{name}[{', '.join(map(str, index))}]"
                for s, (name, index) in self.where.items()}


def _lets_and_entries(kernel: Kernel, names: _Names, keep, folder: "_Folder"):
    """(user lets in order, gradient entries, kept guards) with generated temporaries
    inlined. A guard (an operand the parser bound because a comparison reads it) is inlined
    once folded; one still holding a ``Piecewise`` stays a let, so that no condition holds
    a ``Piecewise`` (SymPy would turn it into ``ITE`` trees)."""
    inline: dict[sp.Symbol, sp.Expr] = {}
    lets, guards = [], []
    for a in kernel.body:
        expr = substitute(a.expr, inline)
        if keep(a.target) and a.target not in kernel.temporaries:
            lets.append((a.target, expr))
            names.add_let(a.target)
        elif a.target not in kernel.temporaries and not a.target.name.startswith("d_"):
            folded = folder.fold(expr)
            if folded.has(sp.Piecewise):
                guards.append((a.target, folded))
            else:
                inline[a.target] = folded
        else:
            inline[a.target] = expr
    return lets, [(i, substitute(e, inline)) for i, e in kernel.gradient], guards


def _fold_dots(expr, names: _Names):
    """``w_0*x_0 + w_1*x_1 + w_2*x_2`` → ``dot(w, x)`` (whole 1-D arrays only)."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom:
        return expr
    args = [_fold_dots(a, names) for a in expr.args]
    if not isinstance(expr, sp.Add):
        return _rebuild(expr, args)
    order = {"param": 0, "input": 1, "target": 2, "let": 3}
    groups: dict[tuple[str, str], dict[int, sp.Expr]] = {}
    for term in args:
        factors = sp.Mul.make_args(term)
        if len(factors) != 2 or not all(f in names.where for f in factors):
            continue
        (na, ia), (nb, ib) = (names.where[f] for f in factors)
        if len(ia) != 1 or ia != ib or names.shapes[na] != names.shapes[nb]:
            continue
        key = tuple(sorted((na, nb), key=lambda n: (order.get(names.kind.get(n), 4), n)))
        groups.setdefault(key, {})[ia[0]] = term
    rest = list(args)
    dots = []
    for (na, nb), terms in groups.items():
        if len(terms) == names.shapes[na][0] and len(terms) > 1:
            for term in terms.values():
                rest.remove(term)
            dots.append(dot(sp.Symbol(na), sp.Symbol(nb)))
    return sp.Add(*dots, *rest) if dots else _rebuild(expr, args)


# --------------------------------------------------------------------------- grouping

def _index_letters(rank: int, taken: set[str]) -> tuple[str, ...]:
    preferred = {1: ["j", "k", "m", "n"], 2: ["i", "j", "k", "l", "m", "n"]}.get(
        rank, list("ijklmnpq"))
    letters = [c for c in preferred if c not in taken]
    if len(letters) < rank:
        letters += [f"j{n}" for n in range(rank)]
    return tuple(letters[:rank])


def _template(expr, index: tuple[int, ...], letters, names: _Names):
    """``expr`` at array ``index`` with every symbol indexed by one of its components
    written with the index letters (``x_2`` at w[2] → ``x[j]``); None if ambiguous."""
    if len(set(index)) != len(index):
        return None
    position = {value: letter for value, letter in zip(index, letters)}
    mapping = {}
    for s in expr.free_symbols:
        if s not in names.where:
            continue
        name, own = names.where[s]
        parts = [position.get(i, str(i)) for i in own]
        if any(p in letters for p in parts):
            mapping[s] = sp.Symbol(f"{name}[{', '.join(parts)}]")
    return expr.xreplace(mapping)


def _instantiate(template, index: tuple[int, ...], letters, names: _Names):
    values = dict(zip(letters, map(str, index)))
    mapping = {}
    for s in template.free_symbols:
        m = re.fullmatch(r"(?P<name>.+)\[(?P<parts>.*)\]", s.name)
        if not m:
            continue
        parts = tuple(int(values.get(p.strip(), p.strip())) for p in m.group("parts").split(","))
        symbol = names.arrays.get(m.group("name"), {}).get(parts)
        if symbol is None:
            return None
        mapping[s] = symbol
    return template.xreplace(mapping)


def _group(shape: tuple[int, ...], values: list, names: _Names, taken: set[str],
           best=lambda expr: expr, same=None):
    """One template for all ``values`` of an array of ``shape`` (row-major), or None. The
    template is ``best`` of one entry (its shortest form); every entry is then checked
    against it by value, so only the representative pays for the search of a short form."""
    indices = list(itertools.product(*(range(n) for n in shape)))
    letters = _index_letters(len(shape), taken)
    if len(indices) < 2 or len(values) != len(indices) or all(v == 0 for v in values):
        return None
    tried = set()
    for k in reversed(range(len(indices))):          # the last entry first: distinct indices
        if len(set(indices[k])) != len(indices[k]):
            continue                                   # W[1, 1]: which 1 is which index?
        template = _template(best(values[k]), indices[k], letters, names)
        if template is None or template in tried:
            continue
        tried.add(template)
        if all(_matches(_instantiate(template, index, letters, names), value, same)
               for index, value in zip(indices, values)):
            return template, letters
        if len(tried) >= 3:
            break
    return None


def _matches(candidate, value, same=None) -> bool:
    return candidate is not None and (candidate == value or (same or agree)(candidate, value))


# --------------------------------------------------------------------------- printing

class MathPrinter(StrPrinter):
    """SymPy's str printer as a user writes: ``w[0]``, ``abs``, ``where``, ``a - b``."""

    def __init__(self, names: dict[str, str]):
        super().__init__({"order": None})
        self.names = names

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    _print_Dummy = _print_Symbol

    @staticmethod
    def decimal(value: sp.Rational) -> str | None:
        """``1/10`` → ``0.1`` when the fraction is a finite decimal (as the user wrote it)."""
        q = int(value.q)
        while q % 2 == 0:
            q //= 2
        while q % 5 == 0:
            q //= 5
        if q != 1:
            return None
        from decimal import Decimal
        text = format(Decimal(int(value.p)) / Decimal(int(value.q)), "f")
        return text

    def _print_Rational(self, expr):
        return self.decimal(expr) or super()._print_Rational(expr)

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Piecewise(self, expr):
        pairs = list(expr.args)
        text = self._print(pairs[-1].expr) if pairs[-1].cond is sp.true else \
            f"where({self._print(pairs[-1].cond)}, {self._print(pairs[-1].expr)}, nan)"
        for value, cond in reversed(pairs[:-1] if pairs[-1].cond is sp.true else pairs[:-1]):
            text = f"where({self._print(cond)}, {self._print(value)}, {text})"
        return text

    def _print_Relational(self, expr):
        lhs, rhs, op = expr.lhs, expr.rhs, expr.rel_op
        swap = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
        if lhs == 0 and rhs.is_Add:
            lhs, rhs, op = rhs, lhs, swap.get(op, op)
        if rhs == 0 and lhs.is_Add:          # 1 - p*y <= 0  →  p*y >= 1
            negative = [t for t in lhs.args if t.could_extract_minus_sign()]
            if negative and len(negative) < len(lhs.args):
                lhs = sp.Add(*[t for t in lhs.args if t not in negative])
                rhs = -sp.Add(*negative)
        if (lhs.is_Atom and not rhs.is_Atom) or (lhs.is_Number and not rhs.is_Number):
            lhs, rhs = rhs, lhs
            op = swap.get(op, op)
        return f"{self._print(lhs)} {op} {self._print(rhs)}"

    def _print_And(self, expr):
        return " and ".join(self.parenthesize(a, PRECEDENCE["And"]) for a in expr.args)

    def _print_Or(self, expr):
        return " or ".join(self.parenthesize(a, PRECEDENCE["Or"]) for a in expr.args)

    def _print_Add(self, expr, order=None):
        """Terms in SymPy's order, but the positive ones first: ``sigmoid(z) - y``."""
        terms = list(expr.as_ordered_terms())
        # positive terms first, and a dot product before the bias: dot(w, x) + b
        terms.sort(key=lambda t: (t.could_extract_minus_sign(), not t.has(dot)))
        level = precedence(expr)
        parts = []
        for term in terms:
            text = self._print(term)
            sign = "+"
            if text.startswith("-"):
                sign, text = "-", text[1:]
            if precedence(term) < level or (sign == "-" and term.is_Add):
                text = f"({text})"
            parts += [sign, text]
        first = parts.pop(0)
        return ("-" if first == "-" else "") + " ".join(parts)

    def _indexed(self, factor) -> bool:
        base = factor.base if factor.is_Pow and factor.exp.is_positive else factor
        return base.is_Symbol and "[" in self._print_Symbol(base)

    def _print_Mul(self, expr):
        """Array elements last: ``(sigmoid(z) - y)*x[j]``, as one writes a gradient; a
        decimal coefficient as a number: ``0.0002*w[j]``, not ``w[j]/5000``."""
        coeff, body = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and body != 1 and self.decimal(coeff):
            sign = "-" if coeff < 0 else ""
            rest = self._print(body) if body.is_Mul else self.parenthesize(body,
                                                                            PRECEDENCE["Mul"])
            return f"{sign}{self.decimal(abs(coeff))}*{rest}"
        factors = sp.Mul.make_args(expr)
        moved = [f for f in factors if self._indexed(f)]
        if not moved or len(moved) == len(factors):
            return super()._print_Mul(expr)
        # unevaluated: SymPy would distribute 2*(p - y) into 2*p - 2*y
        kept = [f for f in factors if f not in moved]
        rest = sp.Mul(*kept, evaluate=False) if len(kept) > 1 else kept[0]
        if rest.is_Number:
            return super()._print_Mul(expr)          # w[j]/5000, -x[j]
        tail = "*".join(self.parenthesize(f, PRECEDENCE["Mul"]) for f in moved)
        head = self._print(rest) if rest.is_Mul else self.parenthesize(rest, PRECEDENCE["Mul"])
        return f"{head}*{tail}"


# ----------------------------------------------------------------------------- report

@dataclass(frozen=True)
class Explanation:
    """What ``gradforge explain`` prints, as data."""

    definitions: list[str]      # "z = dot(w, x) + b", the user's lets, ℓ and R
    formulas: list[Formula]     # the gradient lines shown (a grouped array is one line)
    hidden: int = 0             # lines beyond the limit, not computed


def explain(program: Program, spec=None, limit: int | None = None) -> Explanation:
    """The readable gradient of ``program`` (``spec``: its project, for the user's own text
    of definitions, prediction, loss and regularization): at most ``limit`` gradient lines
    are worked out, the others only counted."""
    user_definitions = [name for name, _ in spec.model.definitions] if spec is not None else []
    names = _Names(program, user_definitions if spec is not None else None)
    if spec is not None:
        wanted = set(user_definitions) | {"prediction"}

        def keep(symbol):
            m = _ELEMENT.match(symbol.name)
            return symbol.name in wanted or bool(m and m.group("name") in user_definitions)
    else:
        def keep(symbol):
            return not symbol.name.startswith("d_") and not re.fullmatch(r"pw\d+_*", symbol.name)

    _VALUES.memo.clear()
    folder = _Folder()
    kernels = [("ℓ", program.loss_and_gradient)]
    if program.regularizer is not None:
        kernels.append(("R", program.regularizer))
    let_values: dict[sp.Symbol, sp.Expr] = {}
    raw: list[tuple[str, int, sp.Expr]] = []
    guards: dict[sp.Symbol, sp.Expr] = {}
    for of, kernel in kernels:
        lets, entries, kept = _lets_and_entries(kernel, names, keep, folder)
        for symbol, value in lets:
            let_values.setdefault(symbol, folder.fold(value))
        guards.update(kept)
        raw += [(of, i, e) for i, e in entries]

    # lets that are a sigmoid are inlined in one candidate, then named again (xent: ℓ in
    # terms of prediction = sigmoid(z) has the gradient (prediction - y)*x)
    sigmoid_lets = {s: v for s, v in let_values.items()
                    if isinstance(v, AppliedUndef) and v.func == sigmoid}
    done = [(of, i, folder.fold(expr)) for of, i, expr in raw]
    chosen: dict[sp.Expr, sp.Expr] = {}
    over_leaves: dict[sp.Symbol, sp.Expr] = {}
    for symbol, value in let_values.items():
        over_leaves[symbol] = value.xreplace(over_leaves)

    def same(a, b) -> bool:
        """Equal as written, or once the definitions are substituted ((prediction - y)*x
        is the cross-entropy gradient because prediction = sigmoid(z))."""
        return agree(a, b) or agree(a.xreplace(over_leaves), b.xreplace(over_leaves))

    def best(expr):
        """The shortest form of one entry (memoized: the search costs a SymPy simplify)."""
        if expr not in chosen:
            extra = [through_sigmoid(expr)]          # a candidate: kept only when shorter
            used = {s: v for s, v in sigmoid_lets.items() if s in expr.free_symbols}
            if used:
                inlined = through_sigmoid(expr.xreplace(used))
                extra.append(inlined.xreplace({v: s for s, v in used.items()}))
            chosen[expr] = pull_common_factors(shortest(expr, extra))
        return chosen[expr]

    # name a sum of parameter terms that repeats (the linear part the user did not name)
    taken = {s.name for s in program.leaf_kind()} | {s.name for s in let_values} | \
        set(names.arrays) | set(user_definitions) | {"prediction"}
    auto: list[tuple[sp.Symbol, sp.Expr]] = []
    named_guards: list[tuple[sp.Symbol, sp.Expr]] = []
    for guard, value in guards.items():            # named like the sums below
        symbol = sp.Symbol(_fresh(taken), real=True)
        named_guards.append((symbol, pull_common_factors(value)))
        done = [(of, i, e.xreplace({guard: symbol})) for of, i, e in done]
    params = {s for p in program.parameters for s in p.symbols}
    counts: Counter = Counter()
    for _, _, expr in done:
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.Add) and len(node.args) >= 3 and node.free_symbols & params \
                    and not node.has(sp.Piecewise):
                # u and -u are one name: z = dot(w, x) + b, written with its terms positive
                counts[-node if _mostly_negative(node) else node] += 1
    for total, n in sorted(counts.items(), key=lambda kv: (-len(kv[0].args), str(kv[0]))):
        if n < 2 or any(total.has(s) for s, _ in auto):
            continue
        symbol = sp.Symbol(_fresh(taken), real=True)
        auto.append((symbol, total))
        done = [(of, i, _replace_sum(_replace_sum(e, total, symbol), -total, -symbol))
                for of, i, e in done]

    printer = MathPrinter(names.text())
    lines: list = []            # Formula, or (label, entry) still to be worked out
    for of in ("ℓ", "R"):
        entries = {i: e for o, i, e in done if o == of}
        for p in program.parameters:
            mine = {i: e for i, e in entries.items() if p.offset <= i < p.offset + p.size}
            if not mine:
                continue
            if limit and len(lines) >= limit:
                lines += [None] * len(mine)        # past the cut: counted, not worked out
                continue
            values = [mine.get(p.offset + k, sp.Integer(0)) for k in range(p.size)]
            grouped = _group(p.shape, values, names, taken, best, same) if p.shape else None
            if grouped is not None:
                template, letters = grouped
                text = printer.doprint(_fold_dots(template, names))
                ranges = " ".join(f"for {c} in range({n})" for c, n in zip(letters, p.shape))
                lines.append(Formula(f"∂{of}/∂{p.name}[{', '.join(letters)}]", text,
                                     int(sp.count_ops(template)), ranges))
                continue
            lines += [(_label(program, i, of), e) for i, e in sorted(mine.items())]
    shown = lines[:limit] if limit else lines
    formulas = []
    for line in shown:
        if not isinstance(line, Formula):
            label, expr = line
            expr = best(expr)
            line = Formula(label, printer.doprint(_fold_dots(expr, names)),
                           int(sp.count_ops(expr)))
        formulas.append(line)

    definitions = [f"{s.name} = {printer.doprint(_fold_dots(v, names))}" for s, v in auto]
    guard_lines = [f"{s.name} = {printer.doprint(_fold_dots(v, names))}"
                   for s, v in named_guards]
    if spec is not None:
        from .model import _dependency_order
        sources = dict(spec.model.definitions)
        sources["prediction"] = spec.model.prediction
        definitions += [f"{n} = {' '.join(sources[n].split())}" for n in _dependency_order(sources)]
        definitions += guard_lines
        definitions.append(f"ℓ = {' '.join(spec.model.loss.split())}")
        if spec.model.regularization is not None:
            definitions.append(f"R = {' '.join(spec.model.regularization.split())}")
    else:       # the IR's own lets, an array's elements as one line where they share a form
        listed = set()
        for symbol, value in let_values.items():
            if symbol in listed:
                continue
            name, _ = names.where.get(symbol, (None, None))
            if name is not None and names.kind.get(name) == "let":
                shape = names.shapes[name]
                table = names.arrays[name]
                indices = list(itertools.product(*(range(n) for n in shape)))
                members = [table.get(i) for i in indices]
                if all(m in let_values for m in members):
                    grouped = _group(shape, [let_values[m] for m in members], names, taken)
                    if grouped is not None:
                        template, letters = grouped
                        ranges = " ".join(f"for {c} in range({n})" for c, n in zip(letters, shape))
                        definitions.append(f"{name}[{', '.join(letters)}] = "
                                           f"{printer.doprint(_fold_dots(template, names))}"
                                           f"   {ranges}")
                        listed.update(members)
                        continue
            definitions.append(f"{printer.doprint(symbol)} = "
                               f"{printer.doprint(_fold_dots(value, names))}")
        definitions += guard_lines
    return Explanation(definitions, formulas, len(lines) - len(shown))


def _mostly_negative(total: sp.Add) -> bool:
    return 2 * sum(t.could_extract_minus_sign() for t in total.args) > len(total.args)


def _fresh(taken: set[str]) -> str:
    """A short name for an unnamed subexpression (``z`` first, as in z = dot(w, x) + b)."""
    name = next(c for c in ["z", "u", "v", "s", "q"] + [f"z{k}" for k in range(2, 10**4)]
                if c not in taken)
    taken.add(name)
    return name


def _replace_sum(expr, total: sp.Add, symbol: sp.Symbol):
    """``expr`` with ``total`` (also as part of a longer sum) replaced by ``symbol``."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom:
        return expr
    if expr == total:
        return symbol
    args = [_replace_sum(a, total, symbol) for a in expr.args]
    if isinstance(expr, sp.Add) and not isinstance(expr, sp.Piecewise):
        terms = list(args)
        if all(t in terms for t in total.args):
            for t in total.args:
                terms.remove(t)
            return sp.Add(symbol, *terms)
    return _rebuild(expr, args)


def _label(program: Program, index: int, of: str) -> str:
    param, i = program.parameter_of(index)
    if not param.shape:
        return f"∂{of}/∂{param.name}"
    idx = []
    for n in reversed(param.shape):
        idx.append(i % n)
        i //= n
    return f"∂{of}/∂{param.name}[{', '.join(map(str, reversed(idx)))}]"


def formulas(program: Program, limit: int | None = DEFAULT_LIMIT, spec=None):
    """(definitions, gradient lines): the first ``limit`` lines, or all with ``None``."""
    result = explain(program, spec, limit)
    return result.definitions, result.formulas


def report(program: Program, limit: int | None = DEFAULT_LIMIT, spec=None) -> str:
    """The text ``gradforge explain`` prints."""
    result = explain(program, spec, limit)
    shown = result.formulas
    lines = [f"{program.name}: J = {program.reduction} over samples of ℓ"
             + (" + R" if program.regularizer is not None else ""), ""]
    if result.definitions:
        lines.append("where")
        lines += [f"  {d}" for d in result.definitions]
        lines.append("")
    lines.append("gradient (subgradients at kinks: sign(0) = 0; see docs/semantics.md)")
    width = max((len(f.label) for f in shown), default=0)
    lines += [f"  {f.label.ljust(width)} = {f.text}" + (f"   {f.indices}" if f.indices else "")
              for f in shown]
    hidden = result.hidden
    if hidden:
        where = f" {spec.path}" if spec is not None and spec.path else ""
        lines.append(f"  … {hidden} more {'entry' if hidden == 1 else 'entries'} not shown "
                     f"(all of them: gradforge explain --all{where})")
    loss_ops = program.loss.op_count()
    grad_ops = program.loss_and_gradient.op_count()
    lines += ["", f"operations per sample: loss {loss_ops}, loss+gradient {grad_ops} "
              f"(ratio {grad_ops / max(loss_ops, 1):.2f})"]
    return "\n".join(lines) + "\n"
