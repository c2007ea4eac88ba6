"""Stage 3: ProjectSpec → :class:`Model`, the model as SymPy over real symbols.

All symbols are ``real=True`` (otherwise ``Abs`` differentiates into ``re``/``im`` soup).
Array parameters and fields become one symbol per element, named ``w_3``/``W_1_2`` and made
unique against every user name. Definitions stay as let-bindings (one symbol per element) so
that the derivative and the generated code keep the structure the user wrote.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import sympy as sp

from .errors import ProjectError
from .printing import float32_round
from .expressions import Array, ExpressionParser, is_condition, referenced_names
from .project import ConstantSpec, FieldSpec, ParameterSpec, ProjectSpec


class Namer:
    """Hands out identifiers unique within one model (user names are claimed first)."""

    def __init__(self, taken=()):
        self.taken: set[str] = set(taken)

    def claim(self, name: str) -> str:
        candidate = name
        while candidate in self.taken:
            candidate += "_"
        self.taken.add(candidate)
        return candidate

    def symbol(self, name: str) -> sp.Symbol:
        """A fresh real symbol named ``name`` or, if taken, ``name_``, ``name__`` …"""
        return sp.Symbol(self.claim(name), real=True)


def exact_symbol(name: str) -> sp.Symbol:
    """The real symbol for a user name (already reserved in the namer)."""
    return sp.Symbol(name, real=True)


def element_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """Row-major element names: ``w_0 w_1 …`` or ``W_0_0 W_0_1 …``; the name itself for scalars."""
    if not shape:
        return [name]
    return [name + "".join(f"_{i}" for i in index)
            for index in itertools.product(*(range(n) for n in shape))]


@dataclass(frozen=True)
class SymbolArray:
    """A declared parameter or field with its flat element symbols."""

    name: str
    shape: tuple[int, ...]
    symbols: tuple[sp.Symbol, ...]

    def value(self):
        return self.symbols[0] if not self.shape else Array(self.shape, self.symbols)


@dataclass(frozen=True)
class Model:
    """The differentiable model: ℓᵢ(θ; xᵢ, yᵢ) via let-bindings, and R(θ)."""

    spec: ProjectSpec
    parameters: tuple[SymbolArray, ...]
    inputs: tuple[SymbolArray, ...]
    targets: tuple[SymbolArray, ...]
    constants: tuple[tuple[ConstantSpec, sp.Symbol], ...]
    lets: tuple[tuple[sp.Symbol, sp.Expr], ...]   # definitions (element-wise) and prediction,
                                                  # in dependency order
    prediction: sp.Symbol                         # the let bound to the prediction
    loss: sp.Expr                                 # per-sample loss over lets/fields/params
    regularization: sp.Expr | None                # over parameters, constants (and their lets)
    namer: Namer
    #: declared residuals (``[model] residuals``), flat; None when not declared
    residuals: tuple[sp.Expr, ...] | None = None

    @property
    def parameter_symbols(self) -> tuple[sp.Symbol, ...]:
        """Flat parameter vector θ, in declaration order, arrays row-major."""
        return tuple(s for p in self.parameters for s in p.symbols)

    @property
    def field_symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(s for f in self.inputs + self.targets for s in f.symbols)

    @property
    def constant_symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(s for _, s in self.constants)

    def lets_for(self, expr: sp.Expr) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
        """The let-bindings ``expr`` needs, in order (inlining them would let SymPy fold
        Piecewise operands into conditions, so lets stay lets)."""
        return lets_needed(self.lets, expr)


def build_model(spec: ProjectSpec) -> Model:
    """Parse every expression of ``spec`` and assemble the model (errors name the key)."""
    user_names = [p.name for p in spec.parameters] + [f.name for f in spec.fields] + \
        [c.name for c in spec.constants] + [d for d, _ in spec.model.definitions]
    namer = Namer(user_names + ["prediction"])   # user names keep their own spelling

    def declare(item: ParameterSpec | FieldSpec) -> SymbolArray:
        if not item.shape:
            return SymbolArray(item.name, (), (exact_symbol(item.name),))
        return SymbolArray(item.name, item.shape,
                           tuple(namer.symbol(n) for n in element_names(item.name, item.shape)))

    if spec.precision == "float32":
        _check_float32(spec)
    parameters = tuple(declare(p) for p in spec.parameters)
    inputs = tuple(declare(f) for f in spec.inputs)
    targets = tuple(declare(f) for f in spec.targets)
    constants = tuple((c, exact_symbol(c.name)) for c in spec.constants)
    names: dict[str, object] = {a.name: a.value() for a in parameters + inputs + targets}
    names.update({c.name: s for c, s in constants})

    # `prediction` takes part in dependency ordering like a definition: definitions may use
    # it (e.g. a residual) as long as the prediction does not depend on them in turn.
    lets: list[tuple[sp.Symbol, sp.Expr]] = []

    def bind_operand(expr: sp.Expr) -> sp.Symbol:
        symbol = namer.symbol(f"pw{len(lets)}")
        lets.append((symbol, expr))
        return symbol

    def parser(key: str, table=None) -> ExpressionParser:
        constants = {s: v for s, v in lets if isinstance(v, sp.Basic) and v.is_Number}
        return ExpressionParser(names if table is None else table, key, bind_operand,
                                spec.precision, constants)

    sources = dict(spec.model.definitions)
    sources["prediction"] = spec.model.prediction
    prediction = exact_symbol("prediction")
    for name in _dependency_order(sources):
        if name == "prediction":
            value = parser("model.prediction").parse(sources[name])
            lets.append((prediction, _scalar(value, "model.prediction")))
            names["prediction"] = prediction
            continue
        key = f"model.definitions.{name}"
        value = parser(key).parse(sources[name])
        names[name] = _bind(value, name, namer, lets, key)

    loss = _scalar(parser("model.loss").parse(spec.model.loss), "model.loss")

    regularization = None
    if spec.model.regularization is not None:
        reg_names = {k: v for k, v in names.items() if k != "prediction"}
        value = parser("model.regularization", reg_names).parse(spec.model.regularization)
        regularization = _scalar(value, "model.regularization")
        needed = lets_needed(lets, regularization)
        leaves = set(regularization.free_symbols).union(*(v.free_symbols for _, v in needed))
        leaves -= {s for s, _ in needed}
        allowed = {s for p in parameters for s in p.symbols} | {s for _, s in constants}
        stray = sorted(str(s) for s in leaves - allowed)
        if stray:
            raise ProjectError(f"regularization may use parameters and constants only, "
                               f"found {', '.join(stray)}", key="model.regularization",
                               hint="move per-sample terms into the loss")

    residuals = None
    if spec.model.residuals is not None:
        value = parser("model.residuals").parse(spec.model.residuals)
        if is_condition(value):
            raise ProjectError("residuals must be numbers or an array", key="model.residuals")
        items = value.items if isinstance(value, Array) else (value,)
        residuals = tuple(sp.Integer(v) if isinstance(v, int) else v for v in items)

    # predict() takes inputs only (every backend): the prediction may not read a target.
    needed = lets_needed(lets, prediction)
    leaves = set().union(*(v.free_symbols for _, v in needed)) - {s for s, _ in needed}
    read = sorted(str(s) for s in leaves & {s for t in targets for s in t.symbols})
    if read:
        raise ProjectError(f"the prediction may not use the target(s) {', '.join(read)}",
                           key="model.prediction",
                           hint="compare the prediction with targets in the loss or a definition "
                                "the prediction does not use")

    used = loss.free_symbols.union(*(v.free_symbols for _, v in lets_needed(lets, loss)))
    if not used & {s for p in parameters for s in p.symbols} and regularization is None:
        raise ProjectError("the loss does not depend on any parameter", key="model.loss")
    return Model(spec, parameters, inputs, targets, constants, tuple(lets), prediction, loss,
                 regularization, namer, residuals)


def _check_float32(spec: ProjectSpec) -> None:
    """Initial values and constant defaults must be finite float32 numbers (a value beyond
    FLT_MAX would be printed as an infinity the user never wrote)."""
    values = [(f"parameters.{p.name}", v) for p in spec.parameters for v in p.init]
    values += [(f"constants.{c.name}", c.default) for c in spec.constants]
    for key, value in values:
        if math.isinf(float32_round(value)):
            raise ProjectError(f"{value!r} overflows float32 (largest 3.4028235e+38)", key=key,
                               hint="use a value in range, or precision = \"float64\" "
                                    "under [project]")


def _bind(value, name: str, namer: Namer, lets: list, key: str):
    """Give each element of a definition a let-bound symbol; return the name's new value."""
    if is_condition(value):
        raise ProjectError("a definition must be a number or an array, not a condition", key=key)
    if isinstance(value, int):
        value = sp.Integer(value)
    if isinstance(value, Array):
        symbols = []
        for element_name, item in zip(element_names(name, value.shape), value.items):
            symbol = namer.symbol(element_name)
            lets.append((symbol, item))
            symbols.append(symbol)
        return Array(value.shape, tuple(symbols))
    symbol = exact_symbol(name)
    lets.append((symbol, value))
    return symbol


def _scalar(value, key: str) -> sp.Expr:
    if isinstance(value, Array):
        raise ProjectError(f"must be a scalar, got an array of shape {list(value.shape)}",
                           key=key, hint="reduce it with sum(...) or dot(...)")
    if is_condition(value):
        raise ProjectError("must be a number, not a condition", key=key,
                           hint="use where(condition, a, b)")
    return sp.Integer(value) if isinstance(value, int) else value


def lets_needed(lets, expr: sp.Expr) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
    """The subset of ``lets`` that ``expr`` depends on, transitively, in their order."""
    wanted = set(expr.free_symbols)
    needed = []
    for symbol, value in reversed(lets):
        if symbol in wanted:
            needed.append((symbol, value))
            wanted |= value.free_symbols
    return tuple(reversed(needed))


def _dependency_order(definitions: dict[str, str]) -> list[str]:
    """Definitions sorted so each comes after what it uses; a cycle is an error naming it."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]):
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = path[path.index(name):] + [name]
            raise ProjectError(f"definitions form a cycle: {' -> '.join(cycle)}",
                               key="model.prediction" if name == "prediction"
                               else f"model.definitions.{name}",
                               hint="a definition may not depend on itself")
        state[name] = "active"
        for dep in sorted(referenced_names(definitions[name]) & definitions.keys()):
            visit(dep, path + [name])
        state[name] = "done"
        order.append(name)

    for name in definitions:
        visit(name, [])
    return order
