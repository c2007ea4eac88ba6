"""The intermediate representation every backend consumes: map-reduce over samples.

A :class:`Program` holds

* the **per-sample kernels** — straight-line code over one sample's fields, the parameters and
  the constants: :attr:`Program.predict` (prediction only), :attr:`Program.loss` (ℓᵢ only) and
  :attr:`Program.loss_and_gradient` (ℓᵢ and the non-zero entries of ∂ℓᵢ/∂θ);
* the **reduction** (``"mean"`` or ``"sum"``) that turns per-sample values into J;
* the **parameter block** :attr:`Program.regularizer` (R(θ) and ∂R/∂θ, no samples involved);
* the **optimizer** (:class:`Optimizer`): element-wise update over the flat parameter vector
  with its state arrays, plus scalar state updated once per step.

Expressions are SymPy expressions over a closed vocabulary (:data:`VOCABULARY`); leaves are the
symbols listed in :attr:`Program.parameters`, :attr:`Program.fields`, :attr:`Program.constants`
and the temporaries assigned before use. A backend must print every member or refuse at build
time (:func:`check_vocabulary`). Symbol names are valid identifiers, unique in the program; a
backend applies its own reserved-word escaping to all of them consistently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .errors import BackendError

#: The closed expression vocabulary of the IR.
VOCABULARY: tuple[type, ...] = (
    sp.Symbol, sp.Integer, sp.Rational, sp.Float, sp.NumberSymbol,
    sp.Add, sp.Mul, sp.Pow,
    sp.exp, sp.log, log1p, expm1, sp.sin, sp.cos, sp.tan, sp.tanh, sp.Abs, sp.sign,
    sp.Piecewise, sp.core.relational.Relational, sp.And, sp.Or, sp.Not,
    sp.logic.boolalg.BooleanTrue, sp.logic.boolalg.BooleanFalse,
)


@dataclass(frozen=True)
class Assignment:
    """``target = expr``; targets are temporaries (or named definitions) assigned once."""

    target: sp.Symbol
    expr: sp.Expr


@dataclass(frozen=True)
class Kernel:
    """Straight-line code: ``body`` in order, then ``outputs`` (named expressions)."""

    body: tuple[Assignment, ...]
    outputs: tuple[tuple[str, sp.Expr], ...]
    #: non-zero gradient entries as (flat parameter index, expression); empty when not derived.
    gradient: tuple[tuple[int, sp.Expr], ...] = ()
    #: body targets that are generated temporaries (the others are user definitions,
    #: ``prediction`` and adjoints ``d_<name>`` of those).
    temporaries: frozenset = frozenset()

    def output(self, name: str) -> sp.Expr:
        return dict(self.outputs)[name]

    def expressions(self) -> Iterator[sp.Expr]:
        yield from (a.expr for a in self.body)
        yield from (e for _, e in self.outputs)
        yield from (e for _, e in self.gradient)

    def needed(self, roots) -> list[Assignment]:
        """The body assignments the ``roots`` expressions depend on, in order: what a backend
        emits for a subset of the outputs (unused temporaries would warn in C and Swift)."""
        want: set[sp.Symbol] = set()
        for expr in roots:
            want |= expr.free_symbols
        keep = []
        for assignment in reversed(self.body):
            if assignment.target in want:
                keep.append(assignment)
                want |= assignment.expr.free_symbols
        return keep[::-1]

    def op_count(self) -> int:
        """Operations the kernel performs (:func:`count_operations` over all expressions)."""
        return count_operations(self.expressions())

    def free_symbols(self) -> set[sp.Symbol]:
        """Leaves the kernel reads (its own temporaries excluded)."""
        used: set[sp.Symbol] = set()
        for expr in self.expressions():
            used |= expr.free_symbols
        return used - {a.target for a in self.body}


@dataclass(frozen=True)
class Parameter:
    """A learned parameter: ``symbols`` flat row-major, at ``offset`` in the flat vector θ."""

    name: str
    shape: tuple[int, ...]
    offset: int
    init: tuple[float, ...]
    symbols: tuple[sp.Symbol, ...]
    #: per-element bounds, flat; -inf / +inf where unbounded
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    @property
    def size(self) -> int:
        return len(self.symbols)

    @property
    def bounded(self) -> bool:
        return any(v != float("-inf") for v in self.lower) or \
            any(v != float("inf") for v in self.upper)


@dataclass(frozen=True)
class Field:
    """A per-sample input or target; ``symbols`` are one sample's elements, row-major."""

    name: str
    role: str                      # "input" | "target"
    shape: tuple[int, ...]
    symbols: tuple[sp.Symbol, ...]
    #: the project's ``range = [low, high]`` (the model's domain for this field), if given;
    #: generated self-tests draw their synthetic data from it
    range: tuple[float, float] | None = None

    @property
    def size(self) -> int:
        return len(self.symbols)


@dataclass(frozen=True)
class Constant:
    """A runtime hyper-parameter read by the kernels, with its default value."""

    name: str
    default: float
    symbol: sp.Symbol


@dataclass(frozen=True)
class Hyperparameter:
    """An optimizer setting (learning_rate, momentum, beta1 …) with its default."""

    name: str
    default: float
    symbol: sp.Symbol


@dataclass(frozen=True)
class Optimizer:
    """One optimizer step, element-wise over θ.

    Per step, first ``scalar_update`` runs in order over ``scalar_state`` and the
    hyper-parameters; then, for every flat index, ``element_update`` runs in order with
    ``param`` = θ[i], ``grad`` = g[i] and one symbol per ``element_state`` array element.
    Assignments to a state symbol or ``param`` write that storage back; later assignments read
    the new value. Temporaries may appear as targets too.
    """

    kind: str
    hyperparameters: tuple[Hyperparameter, ...]
    scalar_state: tuple[tuple[sp.Symbol, float], ...]    # (symbol, initial value)
    scalar_update: tuple[Assignment, ...]
    element_state: tuple[sp.Symbol, ...]                  # each initialised to 0
    element_update: tuple[Assignment, ...]
    param: sp.Symbol
    grad: sp.Symbol


@dataclass(frozen=True)
class Training:
    """Defaults of the generated training loop (overridable at run time).

    ``method`` is the optimizer family: the first-order kinds run :class:`Optimizer` steps;
    ``"lbfgs"`` and ``"levenberg_marquardt"`` are the full-batch methods described in
    :mod:`gradforge.optimizers` (constants in :data:`gradforge.optimizers.LINE_SEARCH` and
    :data:`gradforge.optimizers.DAMPING`). Stopping rules apply to every method.
    """

    epochs: int
    batch_size: int      # 0 = full batch
    seed: int
    method: str = "sgd"
    max_iterations: int = 100
    gradient_tolerance: float = 0.0
    objective_tolerance: float = 0.0
    history: int = 10


@dataclass(frozen=True)
class Program:
    """Everything a backend needs; see the module docstring for the execution model."""

    name: str
    precision: str                 # "float32" | "float64"
    parameters: tuple[Parameter, ...]
    inputs: tuple[Field, ...]
    targets: tuple[Field, ...]
    constants: tuple[Constant, ...]
    reduction: str                 # "mean" | "sum"
    predict: Kernel                # outputs: prediction
    loss: Kernel                   # outputs: loss
    loss_and_gradient: Kernel      # outputs: loss; gradient: ∂ℓᵢ/∂θ (non-zero entries)
    regularizer: Kernel | None     # outputs: value; gradient: ∂R/∂θ
    optimizer: Optimizer
    training: Training
    source: str | None = None      # project file the program came from, for headers
    model_hash: str = ""           # params_file.model_hash of the spec (params.json checks it)
    #: Levenberg–Marquardt: per-sample residual kernels (output ``residual``, gradient = the
    #: Jacobian row) with ℓᵢ = Σₖ rₖ²; then parameter-only residuals of the regularizer.
    residuals: tuple[Kernel, ...] = ()
    regularizer_residuals: tuple[Kernel, ...] = ()

    @property
    def bounded(self) -> bool:
        return any(p.bounded for p in self.parameters)

    @property
    def lower(self) -> tuple[float, ...]:
        return tuple(v for p in self.parameters for v in p.lower)

    @property
    def upper(self) -> tuple[float, ...]:
        return tuple(v for p in self.parameters for v in p.upper)

    @property
    def num_params(self) -> int:
        return sum(p.size for p in self.parameters)

    @property
    def fields(self) -> tuple[Field, ...]:
        return self.inputs + self.targets

    def kernels(self) -> Iterator[tuple[str, Kernel]]:
        yield "predict", self.predict
        yield "loss", self.loss
        yield "loss_and_gradient", self.loss_and_gradient
        if self.regularizer is not None:
            yield "regularizer", self.regularizer

    def residual_kernels(self) -> Iterator[Kernel]:
        """Levenberg–Marquardt's residual kernels: per-sample ones, then the regularizer's."""
        yield from self.residuals
        yield from self.regularizer_residuals

    def leaf_kind(self) -> dict[sp.Symbol, tuple[str, str, int]]:
        """symbol → (kind, owner name, flat index) for parameters, fields and constants."""
        table: dict[sp.Symbol, tuple[str, str, int]] = {}
        for p in self.parameters:
            for i, s in enumerate(p.symbols):
                table[s] = ("param", p.name, i)
        for f in self.fields:
            for i, s in enumerate(f.symbols):
                table[s] = (f.role, f.name, i)
        for c in self.constants:
            table[c.symbol] = ("constant", c.name, 0)
        return table

    def symbol_names(self) -> set[str]:
        """Every symbol name the program uses (for a backend's reserved-word escaping)."""
        names = {s.name for s in self.leaf_kind()}
        for kernel in [k for _, k in self.kernels()] + list(self.residual_kernels()):
            names |= {a.target.name for a in kernel.body}
        opt = self.optimizer
        names |= {h.symbol.name for h in opt.hyperparameters}
        names |= {s.name for s, _ in opt.scalar_state} | {s.name for s in opt.element_state}
        names |= {a.target.name for a in opt.scalar_update + opt.element_update}
        names |= {opt.param.name, opt.grad.name}
        return names

    def parameter_of(self, flat_index: int) -> tuple[Parameter, int]:
        """The parameter holding θ[flat_index] and the index within it."""
        for p in self.parameters:
            if p.offset <= flat_index < p.offset + p.size:
                return p, flat_index - p.offset
        raise IndexError(flat_index)


#: Largest |n| for which backends print x**n as products (kept here so counts match code).
MAX_EXPANDED_POWER = 8


def count_operations(exprs) -> int:
    """Arithmetic operations, comparisons and calls as generated code performs them (x**3 is
    two multiplications, a two-branch Piecewise one select). Linear time, unlike
    ``sympy.count_ops``, which took seconds on 2k-parameter kernels."""
    total = 0
    for expr in exprs:
        for node in walk(expr):
            if isinstance(node, (sp.Add, sp.Mul, sp.And, sp.Or)):
                total += len(node.args) - 1
            elif isinstance(node, sp.Pow):
                exponent = node.args[1]
                if exponent.is_Integer and 0 < abs(int(exponent)) <= MAX_EXPANDED_POWER:
                    total += abs(int(exponent)) - 1 + (1 if exponent < 0 else 0)
                else:
                    total += 1
            elif isinstance(node, sp.Piecewise):
                total += len(node.args) - 1
            elif isinstance(node, (sp.Function, sp.core.relational.Relational, sp.Not)):
                total += 1
    return total


def walk(expr) -> Iterator[sp.Basic]:
    """Every node of ``expr``, parents before children (deterministic)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.args))


def check_vocabulary(program: Program, supported: tuple[type, ...] = VOCABULARY,
                     backend: str = "backend") -> None:
    """Raise :class:`BackendError` naming the first node outside ``supported``."""
    exprs = [e for _, k in program.kernels() for e in k.expressions()]
    exprs += [e for k in program.residual_kernels() for e in k.expressions()]
    exprs += [a.expr for a in program.optimizer.scalar_update + program.optimizer.element_update]
    for expr in exprs:
        for node in walk(expr):
            if not isinstance(node, supported) and not isinstance(node, sp.Tuple):
                raise BackendError(f"the {backend} backend cannot print {type(node).__name__} "
                                   f"(in `{expr}`)")
