"""The independent reference: objective, gradient and one optimizer step at 50 digits.

Nothing here uses gradforge's reverse-mode derivative or its IR. The per-sample loss is the
model's expression with every definition inlined; its gradient comes from ``sympy.diff`` (a
different derivation) and is cross-checked against central finite differences, all evaluated
with mpmath at :data:`DIGITS` significant digits. The optimizer formulas are written out here
again by hand. Backends are compared with these numbers, never with each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import mpmath
import sympy as sp
from sympy.printing.pycode import MpmathPrinter

from .backend import Case
from .errors import GradforgeError
from .model import Model, build_model
from .project import ProjectSpec

DIGITS = 50


class OutsideDomain(GradforgeError):
    """A case leaves the model's domain: log or sqrt of a negative, a division by zero, an
    infinite value. Not a backend mismatch; the case has no finite real answer."""


def _real(value) -> bool:
    """A real number, possibly NaN or infinite (None and mpc are not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, mpmath.mpf))


def _finite_real(value) -> bool:
    """A finite real number (not None from a division by zero, not mpc from log/sqrt of a
    negative)."""
    return _real(value) and bool(mpmath.isfinite(value))


@dataclass(frozen=True)
class Expected:
    """Reference values for one case (as Python floats, rounded from 50 digits)."""

    objective: float
    gradient: tuple[float, ...]
    predictions: tuple[float, ...]
    stepped: tuple[float, ...] | None


def _no_delta(expr: sp.Expr) -> sp.Expr:
    """Away from kinks the derivative of sign is 0; sympy.diff writes it as DiracDelta, or as
    an unevaluated ``Derivative(sign(u), x)`` when it cannot decide (u = x**1.5)."""
    expr = expr.replace(lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, sp.sign),
                        lambda e: sp.Integer(0))
    return expr.replace(sp.DiracDelta, lambda *args: sp.Integer(0))


class _Printer(MpmathPrinter):
    """mpmath code for lambdify; a long sum is one ``fsum`` call (a chain of thousands of
    ``+`` exceeds Python's compiler recursion limit, and fsum rounds once)."""

    def _print_Add(self, expr, order=None):
        if len(expr.args) <= 64:
            return super()._print_Add(expr, order=order)
        terms = ", ".join(self._print(t) for t in expr.args)
        return f"{self._module_format('mpmath.fsum')}([{terms}])"


def _lambdify(args, expr):
    return sp.lambdify(args, expr, "mpmath",
                       printer=_Printer({"fully_qualified_modules": False, "inline": True,
                                         "allow_unknown_functions": True,
                                         "user_functions": {}}))


def _derivative(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr:
    """∂expr/∂symbol; a Piecewise is differentiated branch by branch, conditions kept as they
    are (SymPy's own Piecewise derivative re-evaluates the conditions and can fail on them)."""
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(_no_delta(sp.diff(e, symbol)), c) for e, c in expr.args],
                            evaluate=False)
    return _no_delta(sp.diff(expr, symbol))


class _Step:
    """One let (or output): value function and sympy.diff partials w.r.t. its direct inputs."""

    def __init__(self, expr: sp.Expr, args: list[sp.Symbol], active: set[sp.Symbol]):
        # compiled over the symbols it reads, not over every leaf and earlier let: lambdify's
        # cost grows with its argument list, which made large models quadratic
        position = {s: i for i, s in enumerate(args)}
        used = sorted(expr.free_symbols, key=lambda s: s.name)
        self.index = [position[s] for s in used]
        self._value = _lambdify(used, expr)
        self.deps = sorted((s for s in expr.free_symbols if s in active), key=lambda s: s.name)
        partials = [_derivative(expr, d) for d in self.deps]
        self._partials = _lambdify(used, partials) if partials else None

    def value(self, values):
        return self._value(*[values[i] for i in self.index])

    @property
    def has_partials(self) -> bool:
        return self._partials is not None

    def partials(self, values):
        return self._partials(*[values[i] for i in self.index])


def _lift_piecewise(expr, lets: list, counter: list[int]):
    """Replace every Piecewise in ``expr`` by a symbol bound in ``lets`` (inner ones first):
    ``sympy.diff`` of a power of a Piecewise can produce ``zoo`` in a zero branch."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom or not expr.has(sp.Piecewise):
        return expr
    if isinstance(expr, sp.Piecewise):
        pairs = [(_lift_piecewise(e, lets, counter), c) for e, c in expr.args]
        counter[0] += 1
        symbol = sp.Symbol(f"_pw{counter[0]}", real=True)
        lets.append((symbol, sp.Piecewise(*pairs, evaluate=False)))
        return symbol
    args = [_lift_piecewise(a, lets, counter) for a in expr.args]
    if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)):
        return expr.func(*args)
    return expr.func(*args, evaluate=False)


class _Chain:
    """Straight evaluation of lets then an output, with forward-mode tangents for ∂/∂θ."""

    def __init__(self, lets, output: sp.Expr, leaves: list[sp.Symbol], theta: list[sp.Symbol]):
        self.args = list(leaves)
        self.theta_index = {s: i for i, s in enumerate(theta)}
        self.size = len(theta)
        active = set(theta)
        self.steps: list[tuple[sp.Symbol, _Step]] = []
        lifted: list = []
        counter = [0]
        for symbol, expr in lets:
            lifted.append((symbol, _lift_piecewise(expr, lifted, counter)))
        output = _lift_piecewise(output, lifted, counter)
        for symbol, expr in lifted:
            self.steps.append((symbol, _Step(expr, list(self.args), set(active))))
            self.args.append(symbol)
            active.add(symbol)
        self.output = _Step(output, list(self.args), active)

    def evaluate(self, leaf_values, gradient: bool):
        values = list(leaf_values)
        where = {s: i for i, s in enumerate(self.args)}
        tangents: dict[sp.Symbol, list] = {}

        def tangent(step: _Step):
            if not gradient or not step.has_partials:
                return None
            out = [mpmath.mpf(0)] * self.size
            for dep, partial in zip(step.deps, step.partials(values)):
                if dep in self.theta_index:
                    out[self.theta_index[dep]] += partial
                elif dep in tangents and tangents[dep] is not None:
                    out = [o + partial * t for o, t in zip(out, tangents[dep])]
            return out

        for symbol, step in self.steps:
            tangents[symbol] = tangent(step)
            values.append(step.value(values))
        assert len(values) == len(where)
        grad = tangent(self.output) if gradient else None
        if gradient and grad is None:
            grad = [mpmath.mpf(0)] * self.size
        return self.output.value(values), grad


class Reference:
    """High-precision evaluator for one project (independent of the IR and the backends).

    Lets are evaluated in order, never inlined; derivatives are ``sympy.diff`` of each let
    with respect to its direct inputs, chained forward (not gradforge's reverse sweep).
    """

    def __init__(self, spec_or_model: ProjectSpec | Model, ieee: bool = False):
        """``ieee``: return NaN and ±inf where a case leaves the finite domain (the edge-data
        rules of docs/semantics.md) instead of raising :class:`OutsideDomain`."""
        model = spec_or_model if isinstance(spec_or_model, Model) else build_model(spec_or_model)
        self.ieee = ieee
        self.model = model
        self.spec = model.spec
        theta = list(model.parameter_symbols)
        self.leaves = theta + list(model.field_symbols) + list(model.constant_symbols)
        self.theta = theta
        self._loss = _Chain(model.lets_for(model.loss), model.loss, self.leaves, theta)
        self._prediction = _Chain(model.lets_for(model.prediction), model.prediction,
                                  self.leaves, theta)
        reg = model.regularization
        self._reg = None if reg is None else _Chain(model.lets_for(reg), reg, self.leaves, theta)

    # -- evaluation --------------------------------------------------------------------
    def _rows(self, case: Case):
        consts = [mpmath.mpf(case.constants.get(c.name, c.default))
                  for c in self.spec.constants]
        params = [mpmath.mpf(v) for v in case.params]
        for i in range(case.n):
            row = [mpmath.mpf(v) for f in self.spec.fields for v in case.data[f.name][i]]
            yield params + row + consts

    def _params_only(self, case: Case):
        nfield = sum(f.size for f in self.spec.fields)
        consts = [mpmath.mpf(case.constants.get(c.name, c.default))
                  for c in self.spec.constants]
        return [mpmath.mpf(v) for v in case.params] + [mpmath.mpf(0)] * nfield + consts

    def _scale(self, n: int):
        return mpmath.mpf(1) / n if self.spec.model.reduction == "mean" and n else mpmath.mpf(1)

    def _checked(self, chain: "_Chain", args, gradient: bool, what: str, case: Case,
                 sample: int | None):
        """``chain`` evaluated, or :class:`OutsideDomain` naming the value and the sample
        (with ``ieee``: NaN where the value is complex or undefined)."""
        try:
            value, g = chain.evaluate(args, gradient)
        except (ZeroDivisionError, ValueError, OverflowError):
            value, g = None, None
        if _finite_real(value) and (not gradient or all(_finite_real(v) for v in g)):
            return value, g           # the common case: the inputs are not looked at
        if self.ieee:
            def real(v):
                return v if _real(v) else mpmath.nan
            return real(value), ([real(v) for v in g] if gradient and g is not None
                                 else [mpmath.nan] * len(self.theta) if gradient else g)
        # A NaN or infinite field value is data, not a domain error: the documented edge rules
        # (docs/semantics.md) say what comes out, so only a complex or undefined result is
        # refused then.
        ok = _finite_real if all(_finite_real(a) for a in args) else _real
        bad = None
        if not ok(value):
            bad = what
        elif gradient and not all(ok(v) for v in g):
            bad = f"the gradient of the {what}"
        if bad is not None:
            raise OutsideDomain(f"{bad} is not a finite real number "
                                f"{self._where(case, sample)}")
        return value, g

    def _where(self, case: Case, sample: int | None) -> str:
        if sample is None:
            return "at these parameters"
        shown = []
        for f in self.spec.fields:
            values = case.data[f.name][sample]
            shown.append(f"{f.name}={values[0]:.4g}" if not f.shape else
                         f"{f.name}=[{', '.join(f'{v:.4g}' for v in values[:4])}"
                         f"{', …' if len(values) > 4 else ''}]")
        return f"at sample {sample} ({', '.join(shown)})"

    def _objective(self, case: Case, gradient: bool):
        with mpmath.workdps(DIGITS):
            total = mpmath.mpf(0)
            grad = [mpmath.mpf(0)] * len(self.theta)
            for i, args in enumerate(self._rows(case)):
                value, g = self._checked(self._loss, args, gradient, "loss", case, i)
                total += value
                if gradient:
                    grad = [a + b for a, b in zip(grad, g)]
            scale = self._scale(case.n)
            total *= scale
            grad = [g * scale for g in grad]
            if self._reg is not None:
                value, g = self._checked(self._reg, self._params_only(case), gradient,
                                         "regularization", case, None)
                total += value
                if gradient:
                    grad = [a + b for a, b in zip(grad, g)]
            return total, grad

    def objective_mp(self, case: Case, params: Sequence | None = None):
        """J(θ) at high precision (θ may be overridden, for finite differences)."""
        if params is not None:
            case = Case(tuple(params), case.data, case.constants)
        return self._objective(case, gradient=False)[0]

    def gradient_mp(self, case: Case):
        """∂J/∂θ by sympy.diff of each let, chained forward, at high precision."""
        return self._objective(case, gradient=True)[1]

    def finite_difference_mp(self, case: Case, step: float = 1e-20,
                             progress: Callable[[int, int], None] | None = None):
        """Central differences of J at high precision (truncation error ~ step²);
        ``progress(i, n)`` is told before each parameter (2n objectives: the slow part)."""
        with mpmath.workdps(DIGITS):
            out = []
            for i in range(len(case.params)):
                if progress is not None:
                    progress(i, len(case.params))
                plus = list(map(mpmath.mpf, case.params))
                minus = list(plus)
                h = mpmath.mpf(step) * max(1, abs(plus[i]))
                plus[i] += h
                minus[i] -= h
                out.append((self.objective_mp(case, plus) - self.objective_mp(case, minus))
                           / (2 * h))
            return out

    def predictions_mp(self, case: Case):
        with mpmath.workdps(DIGITS):
            return [self._checked(self._prediction, args, False, "prediction", case, i)[0]
                    for i, args in enumerate(self._rows(case))]

    def step_mp(self, params, grad, project: bool = True):
        """θ after one step of the project's optimizer from a fresh state (formulas by hand),
        projected onto the parameters' bounds as every backend's one-step function does
        (``project=False``: the raw step, to see whether a bound was crossed)."""
        t = self.spec.training
        if not t.first_order:
            return None     # L-BFGS / LM steps are checked against SciPy in the tests
        h = {k: mpmath.mpf(v) for k, v in t.hyperparameters().items()}
        lr = h["learning_rate"]
        with mpmath.workdps(DIGITS):
            theta = [mpmath.mpf(v) for v in params]
            if t.optimizer in ("sgd", "momentum"):
                # momentum from a fresh state: velocity = 0·μ + g, the same step as SGD
                out = [p - lr * g for p, g in zip(theta, grad)]
            else:
                b1, b2, eps = h["beta1"], h["beta2"], h["epsilon"]
                out = []
                for p, g in zip(theta, grad):
                    m = (1 - b1) * g
                    v = (1 - b2) * g * g
                    m_hat, v_hat = m / (1 - b1), v / (1 - b2)
                    out.append(p - lr * m_hat / (mpmath.sqrt(v_hat) + eps))
            return self._project(out) if project else out

    def _project(self, theta):
        """Clip each element onto [lower, upper] with comparisons (a NaN stays NaN), exactly
        at the working precision: the bounds are the spec's float64 values."""
        inf = float("inf")
        lower = [v for p in self.spec.parameters for v in (p.lower or (-inf,) * p.size)]
        upper = [v for p in self.spec.parameters for v in (p.upper or (inf,) * p.size)]
        out = []
        for value, lo, hi in zip(theta, lower, upper):
            lo, hi = mpmath.mpf(lo), mpmath.mpf(hi)
            out.append(lo if value < lo else (hi if value > hi else value))
        return out

    def expected(self, case: Case) -> Expected:
        """All reference values for ``case``, rounded to Python floats."""
        grad = self.gradient_mp(case)
        return Expected(float(self.objective_mp(case)), tuple(map(float, grad)),
                        tuple(map(float, self.predictions_mp(case))),
                        self._stepped(case.params, grad))

    def _stepped(self, params, grad):
        step = self.step_mp(params, grad)
        return None if step is None else tuple(map(float, step))

    def domain_problem(self, case: Case) -> str | None:
        """Why ``case`` has no finite real objective and prediction (None when it has one)."""
        try:
            self.objective_mp(case)
            self.predictions_mp(case)
        except OutsideDomain as exc:
            return str(exc)
        return None

    def derivative_error(self, case: Case,
                         progress: Callable[[int, int], None] | None = None) -> float:
        """Largest |sympy.diff gradient − finite differences|, relative to the gradient's norm."""
        grad = self.gradient_mp(case)
        fd = self.finite_difference_mp(case, progress=progress)
        scale = max([abs(g) for g in grad] + [mpmath.mpf(1e-30)])
        return float(max(abs(a - b) for a, b in zip(grad, fd)) / scale) if grad else 0.0
