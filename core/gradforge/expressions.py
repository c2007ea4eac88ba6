"""Stage 2: expression text → SymPy, through a whitelist over Python's ``ast``.

Project files never reach ``eval``, ``sympify`` or ``parse_expr``: we walk the syntax tree
ourselves and accept only the nodes listed here. Loops (``sum(... for j in range(N))`` and list
comprehensions) are unrolled at build time, so every index is a concrete integer that we
bounds-check. Non-smooth functions are lowered to ``Piecewise`` with explicit conditions so that
their tie rules do not depend on SymPy's argument ordering (see ``docs/semantics.md``).
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Union

import sympy as sp
from sympy.codegen.cfunctions import expm1 as _expm1, log1p as _log1p

from .errors import ProjectError, did_you_mean
from .printing import float32_round


@dataclass(frozen=True)
class Array:
    """A fixed-shape array of scalar SymPy expressions, stored flat in row-major order."""

    shape: tuple[int, ...]
    items: tuple[sp.Expr, ...]

    def __post_init__(self):
        assert len(self.items) == math.prod(self.shape)

    def row(self, index: int) -> Union["Array", sp.Expr]:
        inner = math.prod(self.shape[1:])
        chunk = self.items[index * inner:(index + 1) * inner]
        return chunk[0] if len(self.shape) == 1 else Array(self.shape[1:], chunk)


Value = Union[sp.Expr, Array, int, bool, sp.logic.boolalg.Boolean]  # Boolean: conditions


def _f(func):
    """``func`` applied without SymPy's automatic evaluation, which queries the (slow)
    assumption system on every argument; a 2k-parameter model would spend seconds there."""
    return lambda *args: func(*args, evaluate=False)


def _relation(func):
    """A comparison: decided now between two numbers, left unevaluated otherwise."""
    def build(a, b):
        a, b = _sym(a), _sym(b)        # already-built values (ints or SymPy), never text
        if a.is_Number and b.is_Number:
            return sp.true if func(a, b) else sp.false
        return func(a, b, evaluate=False)
    return build


exp, log, Abs, sign = _f(sp.exp), _f(sp.log), _f(sp.Abs), _f(sp.sign)
log1p, expm1 = _f(_log1p), _f(_expm1)
Lt, Le, Gt, Ge = _relation(sp.Lt), _relation(sp.Le), _relation(sp.Gt), _relation(sp.Ge)


def Piecewise(*pairs):  # noqa: N802 - mirrors sympy.Piecewise
    """``sympy.Piecewise`` without evaluation (SymPy would fold nested Piecewise operands of
    conditions into ``ITE`` trees no backend can print); constant conditions are decided."""
    kept = []
    for value, cond in pairs:
        if cond is sp.false or cond is False:
            continue
        if cond is sp.true or cond is True:
            if not kept:
                return _sym(value)
            kept.append((value, sp.true))
            break
        kept.append((value, cond))
    return sp.Piecewise(*kept, evaluate=False)


def _has_piecewise(*values) -> bool:
    return any(isinstance(v, sp.Basic) and v.has(sp.Piecewise) for v in values)


def add(a, b):
    return sp.Add(a, b, evaluate=not _has_piecewise(a, b))


def sub(a, b):
    return add(a, mul(sp.Integer(-1), b))


def mul(a, b):
    """a·b; with a Piecewise operand SymPy's flatten may rebuild powers of it and distribute
    them into the branches (re-evaluating conditions), so those stay unevaluated."""
    return sp.Mul(a, b, evaluate=not _has_piecewise(a, b))


def total(items) -> sp.Expr:
    """Sum of many terms (unevaluated when a term holds a Piecewise, see :func:`mul`)."""
    return sp.Add(*items, evaluate=not _has_piecewise(*items))


def div(a, b):
    return mul(a, power(b, sp.Integer(-1)))


def power(base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
    """base**exponent; a Piecewise base stays a power (SymPy would distribute into branches
    and re-evaluate their conditions, producing unprintable ``zoo`` comparisons)."""
    return sp.Pow(base, exponent, evaluate=not base.has(sp.Piecewise))


def _exp_minus_abs(u: sp.Expr) -> sp.Expr:
    """e^(-|u|) in (0, 1]: never overflows. The exponent is a select (-u where u >= 0, else u)
    rather than -Abs(u), so its derivative at u = 0 is that of the u >= 0 side (sign(0) = 0
    would make softplus'(0) = 0 instead of 1/2)."""
    return exp(Piecewise((mul(sp.Integer(-1), u), Ge(u, 0)), (u, True)))


def sigmoid(u: sp.Expr) -> sp.Expr:
    """Logistic function from the one transcendental e = e^(-|u|): 1/(1+e) for u >= 0, e/(1+e)
    otherwise (no overflow for any finite u, full relative accuracy on both tails)."""
    e = _exp_minus_abs(u)
    r = power(add(sp.Integer(1), e), sp.Integer(-1))
    return Piecewise((r, Ge(u, 0)), (mul(e, r), True))


def softplus(u: sp.Expr) -> sp.Expr:
    """log(1 + e^u) = max(u, 0) + log1p(e^(-|u|)): one exp and one log1p, stable for every finite
    u; its derivative is sigmoid(u) from the same exp (1/2 at 0)."""
    return add(Piecewise((u, Ge(u, 0)), (sp.Integer(0), True)), log1p(_exp_minus_abs(u)))


def relu(u: sp.Expr) -> sp.Expr:
    """max(u, 0) with relu'(0) = 0."""
    return Piecewise((u, Gt(u, 0)), (0, True))


def maximum(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """max(a, b) = a when a >= b: at a tie the gradient goes to the first argument."""
    return Piecewise((a, Ge(a, b)), (b, True))


def minimum(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """min(a, b) = a when a <= b: at a tie the gradient goes to the first argument."""
    return Piecewise((a, Le(a, b)), (b, True))


def clip(u: sp.Expr, low: sp.Expr, high: sp.Expr) -> sp.Expr:
    """u limited to [low, high]; the gradient passes on the closed interval."""
    return Piecewise((low, Lt(u, low)), (high, Gt(u, high)), (u, True))


#: name → (number of arguments or None for "two or more", builder).
SCALAR_FUNCTIONS: dict[str, tuple[int | None, Callable[..., sp.Expr]]] = {
    "abs": (1, Abs),
    "sign": (1, sign),
    "exp": (1, exp),
    "log": (1, log),
    "log1p": (1, log1p),
    "expm1": (1, expm1),
    "sqrt": (1, lambda u: power(u, sp.Rational(1, 2))),
    "sin": (1, _f(sp.sin)),
    "cos": (1, _f(sp.cos)),
    "tan": (1, _f(sp.tan)),
    "tanh": (1, _f(sp.tanh)),
    "sigmoid": (1, sigmoid),
    "softplus": (1, softplus),
    "relu": (1, relu),
    "clip": (3, clip),
}
SPECIAL_FUNCTIONS = ("max", "min", "where", "sum", "dot")
#: Functions lowered to Piecewise whose conditions mention their arguments.
CONDITIONAL = frozenset({"max", "min", "clip", "relu", "sigmoid", "softplus"})
FUNCTIONS = tuple(SCALAR_FUNCTIONS) + SPECIAL_FUNCTIONS

_BINARY = {ast.Add: add, ast.Sub: sub, ast.Mult: mul, ast.Div: div}
_INT_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
               ast.Mult: lambda a, b: a * b}
_COMPARE = {ast.Lt: Lt, ast.LtE: Le, ast.Gt: Gt, ast.GtE: Ge,
            ast.Eq: _f(sp.Eq), ast.NotEq: _f(sp.Ne)}
_INT_COMPARE = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
                ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}
MAX_UNROLL = 1_000_000
#: Operators whose written chains (a + b - c, a*b*c) are parsed with a loop, not recursion.
_CHAIN = {ast.Add: "sum", ast.Sub: "sum", ast.Mult: "product"}


def number(value: float | int) -> sp.Expr:
    """A literal as an exact SymPy number: 2.0 → 2, 0.1 → 1/10 (printed back as 0.1)."""
    if isinstance(value, int) or float(value).is_integer():
        return sp.Integer(int(value))
    return sp.Rational(repr(float(value)))


class ExpressionParser:
    """Parses one expression string against a table of names (symbols, arrays, definitions)."""

    def __init__(self, names: Mapping[str, Value], key: str,
                 bind: Callable[[sp.Expr], sp.Symbol] | None = None,
                 precision: str = "float64",
                 constants: Mapping[sp.Symbol, sp.Expr] | None = None):
        self.names = dict(names)
        self.constants = constants or {}     # let-bound names whose value is a number
        self.precision = precision
        self.key = key
        self.bind = bind
        self.source = ""
        self.unrolled = 0

    # -- entry point -------------------------------------------------------------------
    def parse(self, source: str) -> Value:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            column = (exc.offset or 1)
            raise ProjectError(f"syntax error in expression at column {column}: "
                               f"{exc.msg}", key=self.key,
                               hint="expressions use Python syntax") from None
        self.source = source.strip()
        return self.visit(tree.body, {})

    # -- errors ------------------------------------------------------------------------
    def fail(self, node: ast.AST, message: str, hint: str | None = None) -> ProjectError:
        segment = ast.get_source_segment(self.source, node) or ""
        where = f" at column {node.col_offset + 1}" if hasattr(node, "col_offset") else ""
        text = f"{message}: `{segment}`{where}" if segment else message
        return ProjectError(text, key=self.key, hint=hint)

    # -- visitor -----------------------------------------------------------------------
    def visit(self, node: ast.AST, loops: dict[str, int]) -> Value:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, f"{_describe(node)} is not allowed in gradforge expressions",
                            "use numbers, names, arithmetic, indexing, sum/dot/where and the "
                            "listed functions")
        value = method(node, loops)
        if isinstance(node, (ast.BinOp, ast.Call, ast.UnaryOp)):
            problem = _singular(value, self.constants)
            if problem:
                raise self.fail(node, f"singular expression, {problem}",
                                "rewrite it so that it is defined for every sample: no "
                                "division by zero, no log or sqrt of a constant outside "
                                "its domain")
        return value

    def visit_Constant(self, node: ast.Constant, loops) -> Value:
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise self.fail(node, "only numeric literals are allowed")
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise self.fail(node, "literal is not finite")
        if self.precision == "float32" and node.value != 0:
            rounded = float32_round(float(node.value))
            if math.isinf(rounded) or rounded == 0:
                raise self.fail(node, f"literal {'overflows' if rounded else 'underflows'} "
                                f"float32 (its finite non-zero range is 1.4e-45 to "
                                f"3.4028235e+38)", "use a value in range, or "
                                "precision = \"float64\" under [project]")
        return node.value if isinstance(node.value, int) else number(node.value)

    def visit_Name(self, node: ast.Name, loops) -> Value:
        if node.id in loops:
            return loops[node.id]
        if node.id in self.names:
            return self.names[node.id]
        if node.id == "pi":
            return sp.pi
        if node.id in FUNCTIONS:
            raise self.fail(node, f"'{node.id}' is a function", f"call it: {node.id}(...)")
        raise self.fail(node, f"unknown name '{node.id}'",
                        did_you_mean(node.id, list(self.names) + list(loops))
                        or "declare it under [parameters], [inputs], [targets], [constants] "
                           "or [model.definitions]")

    def visit_UnaryOp(self, node: ast.UnaryOp, loops) -> Value:
        operand = self.visit(node.operand, loops)
        if isinstance(node.op, ast.USub):
            return self.elementwise(node, lambda a: mul(sp.Integer(-1), _sym(a)), operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            if isinstance(operand, bool):
                return not operand
            # kept as written: SymPy would turn not (x > 0) into x <= 0, which differs at NaN
            # (every comparison with NaN is false, its negation true; docs/semantics.md)
            return sp.Not(self.condition(node, operand), evaluate=False)
        raise self.fail(node, "unsupported unary operator")

    def visit_BinOp(self, node: ast.BinOp, loops) -> Value:
        # a + b + c + … is a left-leaning chain as deep as it is long: walk its spine with a
        # loop, so that a sum of thousands of written terms does not exhaust the stack
        family = _CHAIN.get(type(node.op))
        spine = [node]
        while family and isinstance(spine[-1].left, ast.BinOp) \
                and _CHAIN.get(type(spine[-1].left.op)) == family:
            spine.append(spine[-1].left)
        value = self.visit(spine[-1].left, loops)
        for link in reversed(spine):
            value = self.binary(link, value, self.visit(link.right, loops))
        return value

    def binary(self, node: ast.BinOp, left: Value, right: Value) -> Value:
        if isinstance(node.op, ast.Pow):
            if _is_int(left) and _is_int(right) and right >= 0:
                return left ** right
            return self.elementwise(node, lambda a, b: power(_sym(a), _sym(b)), left, right)
        if type(node.op) in _BINARY:
            if _is_int(left) and _is_int(right) and not isinstance(node.op, ast.Div):
                return _INT_BINARY[type(node.op)](left, right)
            op = _BINARY[type(node.op)]
            return self.elementwise(node, lambda a, b: op(_sym(a), _sym(b)), left, right)
        if isinstance(node.op, ast.FloorDiv) and _is_int(left) and _is_int(right):
            if right == 0:
                raise self.fail(node, "integer division by zero")
            return left // right
        if isinstance(node.op, ast.Mod) and _is_int(left) and _is_int(right):
            if right == 0:
                raise self.fail(node, "integer modulo by zero")
            return left % right
        raise self.fail(node, f"operator {_describe(node.op)} is not allowed here",
                        "// and % work on loop-variable integers only")

    def visit_Compare(self, node: ast.Compare, loops) -> Value:
        values = [self.visit(node.left, loops)] + [self.visit(c, loops) for c in node.comparators]
        parts = []
        for op, a, b in zip(node.ops, values, values[1:]):
            if type(op) not in _COMPARE:
                raise self.fail(node, "only < <= > >= == != comparisons are allowed")
            if isinstance(a, Array) or isinstance(b, Array):
                raise self.fail(node, "comparisons work on scalars")
            if _is_number(a) and _is_number(b):   # decided now: where(0.5 > 0.1, …)
                parts.append(bool(_INT_COMPARE[type(op)](_sym(a), _sym(b))))
            else:
                parts.append(_COMPARE[type(op)](self.guard(_sym(a)), self.guard(_sym(b))))
        if all(isinstance(p, bool) for p in parts):
            return all(parts)
        return sp.And(*parts) if len(parts) > 1 else parts[0]

    def visit_BoolOp(self, node: ast.BoolOp, loops) -> Value:
        values = [self.visit(v, loops) for v in node.values]
        if all(isinstance(v, bool) for v in values):
            return all(values) if isinstance(node.op, ast.And) else any(values)
        conditions = [self.condition(node, v) for v in values]
        return sp.And(*conditions) if isinstance(node.op, ast.And) else sp.Or(*conditions)

    def visit_Subscript(self, node: ast.Subscript, loops) -> Value:
        base = self.visit(node.value, loops)
        if not isinstance(base, Array):
            raise self.fail(node, "only arrays can be indexed")
        index_nodes = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(index_nodes) > len(base.shape):
            raise self.fail(node, f"too many indices for an array of shape {list(base.shape)}")
        value: Value = base
        for axis, index_node in enumerate(index_nodes):
            if isinstance(index_node, ast.Slice):
                raise self.fail(index_node, "slices are not supported", "index one element")
            index = self.visit(index_node, loops)
            if not _is_int(index):
                raise self.fail(index_node, "an index must be an integer built from literals "
                                "and loop variables")
            size = base.shape[axis]
            if not 0 <= index < size:
                raise self.fail(node, f"index {index} is out of bounds for axis {axis} of "
                                f"size {size}", "indices run from 0 to size - 1")
            value = value.row(index)  # type: ignore[union-attr]
        return value

    def visit_List(self, node: ast.List, loops) -> Value:
        return self.stack(node, [self.visit(e, loops) for e in node.elts])

    def visit_ListComp(self, node: ast.ListComp, loops) -> Value:
        return self.stack(node, [self.visit(node.elt, env)
                                 for env in self.iterate(node, node.generators, loops)])

    def visit_Call(self, node: ast.Call, loops) -> Value:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only calls of the built-in functions are allowed")
        name = node.func.id
        if node.keywords:
            raise self.fail(node, f"{name}() takes no keyword arguments")
        if name == "sum":
            return self.call_sum(node, loops)
        if name == "range":
            raise self.fail(node, "range() is only allowed in a `for` clause")
        args = [self.visit(a, loops) for a in node.args]
        if name in CONDITIONAL:
            args = [self.guard(a) for a in args]
        if name == "where":
            if len(args) != 3:
                raise self.fail(node, "where() takes 3 arguments: where(condition, a, b)")
            cond = args[0]
            if isinstance(cond, bool):
                return args[1] if cond else args[2]
            cond = self.condition(node.args[0], cond)
            return self.elementwise(node, lambda a, b: Piecewise((a, cond), (b, True)),
                                    args[1], args[2])
        if name == "dot":
            if len(args) != 2 or not all(isinstance(a, Array) for a in args) \
                    or args[0].shape != args[1].shape:
                raise self.fail(node, "dot() takes two arrays of the same shape")
            return total([mul(a, b) for a, b in zip(args[0].items, args[1].items)])
        if name in ("max", "min"):
            if len(args) == 1 and isinstance(args[0], Array):
                args = list(args[0].items)
            if len(args) < 2:
                raise self.fail(node, f"{name}() needs two or more values or one array")
            fold = maximum if name == "max" else minimum
            result = args[0]
            for arg in args[1:]:
                # max(a, b, c) = max(max(a, b), c): the inner result is compared again, so it
                # is bound to a let first (a Piecewise inside a condition would become ITE)
                result = self.elementwise(node, lambda a, b: fold(_sym(a), _sym(b)),
                                          self.guard(result), self.guard(arg))
            return result
        if name in SCALAR_FUNCTIONS:
            arity, build = SCALAR_FUNCTIONS[name]
            if len(args) != arity:
                raise self.fail(node, f"{name}() takes {arity} argument{'s' * (arity > 1)}")
            return self.elementwise(node, lambda *xs: build(*map(_sym, xs)), *args)
        raise self.fail(node.func, f"unknown function '{name}'",
                        did_you_mean(name, FUNCTIONS)
                        or f"available: {', '.join(sorted(FUNCTIONS))}")

    # -- helpers -----------------------------------------------------------------------
    def guard(self, value):
        """An operand that will appear inside a condition, made Piecewise-free.

        SymPy folds a ``Piecewise`` inside a condition into ``ITE`` trees (ExprCondPair does
        ``piecewise_fold``); binding such an operand to a let-symbol first keeps conditions
        flat, and the value is computed once instead of once per branch.
        """
        if isinstance(value, Array):
            return Array(value.shape, tuple(self.guard(v) for v in value.items))
        if isinstance(value, sp.Basic) and not value.is_Atom and value.has(sp.Piecewise):
            if self.bind is None:
                raise ProjectError("a comparison of a max/min/where result is not supported "
                                   "here", key=self.key)
            return self.bind(value)
        return value

    def call_sum(self, node: ast.Call, loops) -> Value:
        if len(node.args) != 1:
            raise self.fail(node, "sum() takes one generator or array")
        arg = node.args[0]
        if isinstance(arg, ast.GeneratorExp):
            terms = [self.visit(arg.elt, env) for env in self.iterate(arg, arg.generators, loops)]
            terms = [t.items if isinstance(t, Array) else (t,) for t in terms]
            if any(len(t) != 1 for t in terms):
                raise self.fail(node, "sum(... for ...) needs a scalar term")
            return total([_sym(t[0]) for t in terms])
        value = self.visit(arg, loops)
        if not isinstance(value, Array):
            raise self.fail(node, "sum() of a scalar", "write sum(expr for j in range(N))")
        return total(value.items)

    def iterate(self, node, generators, loops):
        """Yield the loop-variable environments of nested ``for`` clauses, in order."""
        def walk(index: int, env: dict[str, int]):
            if index == len(generators):
                yield env
                return
            gen = generators[index]
            if getattr(gen, "is_async", 0):
                raise self.fail(node, "async comprehensions are not allowed")
            if not isinstance(gen.target, ast.Name):
                raise self.fail(gen.target, "a loop variable must be a single name")
            var = gen.target.id
            if var in self.names or var in FUNCTIONS or var == "pi":
                raise self.fail(gen.target, f"loop variable '{var}' shadows a model name",
                                "pick another name, e.g. j or k")
            for i in self.range_of(gen.iter, env):
                inner = {**env, var: i}
                conditions = [self.visit(c, inner) for c in gen.ifs]
                if not all(isinstance(c, bool) for c in conditions):
                    raise self.fail(gen.ifs[0], "a comprehension filter must compare loop "
                                    "variables only")
                if all(conditions):
                    yield from walk(index + 1, inner)
        yield from walk(0, dict(loops))

    def range_of(self, node, loops) -> range:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "range" and not node.keywords and 1 <= len(node.args) <= 3):
            raise self.fail(node, "a loop must run over range(...)")
        bounds = [self.visit(a, loops) for a in node.args]
        if not all(_is_int(b) for b in bounds):
            raise self.fail(node, "range() bounds must be integers")
        if len(bounds) == 3 and bounds[2] == 0:
            raise self.fail(node, "range() step must not be zero")
        result = range(*bounds)
        self.unrolled += len(result)
        if self.unrolled > MAX_UNROLL:
            raise self.fail(node, f"loops unroll to more than {MAX_UNROLL} terms")
        return result

    def stack(self, node, values: list[Value]) -> Array:
        if not values:
            raise self.fail(node, "an empty array is not allowed")
        shapes = {v.shape if isinstance(v, Array) else () for v in values}
        if len(shapes) != 1:
            raise self.fail(node, "array entries have different shapes")
        inner = shapes.pop()
        items: list[sp.Expr] = []
        for v in values:
            if is_condition(v):
                raise self.fail(node, "array entries must be numbers, not conditions")
            items.extend(v.items if isinstance(v, Array) else (_sym(v),))
        return Array((len(values),) + inner, tuple(items))

    def condition(self, node, value: Value):
        if is_condition(value):
            return sp.true if value is True else sp.false if value is False else value
        raise self.fail(node, "expected a condition (a comparison such as x > 0)")

    def elementwise(self, node, op, *args: Value) -> Value:
        arrays = [a for a in args if isinstance(a, Array)]
        for a in args:
            if is_condition(a):
                raise self.fail(node, "a condition cannot be used as a number",
                                "use where(condition, a, b)")
        if not arrays:
            return op(*args)
        shape = arrays[0].shape
        if any(a.shape != shape for a in arrays):
            raise self.fail(node, "arrays of different shapes "
                            f"({' vs '.join(str(list(a.shape)) for a in arrays)})")
        columns = [a.items if isinstance(a, Array) else (a,) * len(arrays[0].items) for a in args]
        return Array(shape, tuple(op(*column) for column in zip(*columns)))


def _singular(value, constants: Mapping[sp.Symbol, sp.Expr] | None = None) -> str | None:
    """Why a freshly built value is undefined (None when it is fine): a division by zero or
    a function of a constant outside its domain (``log(0)``, ``sqrt(-1)``), also through a
    definition whose value is a constant (``constants``: ``u = "x - x"`` then ``c/u``). Only
    the node and its direct arguments are inspected, so checking every node stays linear."""
    for item in value.items if isinstance(value, Array) else (value,):
        if not isinstance(item, sp.Basic) or is_condition(item):
            continue
        parts = (item, *item.args)
        for part in parts:                  # identity tests: these are singletons
            if part is sp.zoo or part is sp.oo or part is sp.S.NegativeInfinity:
                return "division by zero"
            if part is sp.nan:
                return "undefined (0/0)"
            if part is sp.I:
                return "not a real number"
        for part in parts:
            if not isinstance(part, (sp.Function, sp.Pow)) or not part.args:
                continue
            args = part.args
            if constants and any(arg in constants for arg in args):
                args = tuple(constants.get(arg, arg) for arg in args)
            elif not all(arg.is_number for arg in args):
                continue
            evaluated = part.func(*args)
            shown = part.func(*args, evaluate=False) if args != part.args else part
            if evaluated.has(sp.nan):
                return f"{shown} is undefined"
            if evaluated.has(sp.zoo, sp.oo, -sp.oo):
                return "division by zero" if isinstance(part, sp.Pow) and args[0] == 0 \
                    else f"{shown} is infinite"
            if evaluated.is_extended_real is False:
                return f"not a real number ({shown} = {evaluated})"
    return None


def is_condition(value) -> bool:
    """True for comparisons and their and/or/not combinations (SymPy symbols are Boolean too)."""
    return isinstance(value, (bool, sp.core.relational.Relational, sp.And, sp.Or, sp.Not,
                              sp.logic.boolalg.BooleanAtom))


def _is_number(value) -> bool:
    return _is_int(value) or (isinstance(value, sp.Basic) and value.is_Number)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sym(value) -> sp.Expr:
    return sp.Integer(value) if _is_int(value) else value


def _describe(node) -> str:
    names = {"Lambda": "a lambda", "Attribute": "attribute access", "Dict": "a dict",
             "Set": "a set", "Starred": "unpacking", "IfExp": "an if-expression",
             "NamedExpr": "an assignment expression", "JoinedStr": "an f-string",
             "Mod": "%", "FloorDiv": "//", "MatMult": "@", "BitAnd": "&", "BitOr": "|",
             "BitXor": "^", "LShift": "<<", "RShift": ">>", "Await": "await",
             "Yield": "yield", "Tuple": "a tuple", "SetComp": "a set comprehension",
             "DictComp": "a dict comprehension", "GeneratorExp": "a generator outside sum()"}
    return names.get(type(node).__name__, type(node).__name__)


def referenced_names(source: str) -> set[str]:
    """Names an expression mentions (loop variables included); for dependency ordering."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
