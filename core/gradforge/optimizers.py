"""Stage 5b: the optimizers, described once; every backend prints exactly this.

First-order updates are element-wise IR (:func:`build_optimizer`):

SGD:      θ ← θ − η g
Momentum: v ← μ v + g;  θ ← θ − η v
Adam:     m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
          θ ← θ − η m̂ / (√v̂ + ε)  with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)

β₁ᵗ and β₂ᵗ are scalar state multiplied once per step (no ``pow`` with an integer exponent in
the generated code, which float32 C would have to convert).

The full-batch methods are scalar control flow around the generated value-and-gradient (or
residual-and-Jacobian) pass. Their constants live here (:data:`LINE_SEARCH`, :data:`DAMPING`,
:data:`STOP_REASONS`) and the templates print them; each template spells out the same steps in
the same order (docs/semantics.md, "Training", is the normative text):

**L-BFGS** (``history`` = m pairs): projected gradient pgᵢ = θᵢ − P(θᵢ − gᵢ); variables at a
bound whose gradient points out of the box are held (dᵢ = 0); d = −H g by the two-loop
recursion with H₀ = (sᵀy / yᵀy) I; a pair is kept only when sᵀy > ε_mach·yᵀy; if d is not a
descent direction the memory is cleared and d = −g (free variables). The step is capped at the
first bound it would cross (``stpmax``), so trial points stay in the box, and chosen by the
Moré–Thuente line search (MINPACK-2 ``dcsrch``/``dcstep``, strong Wolfe with ``ftol``, ``gtol``,
``xtol`` below) — the search L-BFGS-B uses, so the iterates are comparable with SciPy's and the
step is safeguarded by cubic/quadratic interpolation without a tuning knob. The first search
that ends without the strong Wolfe conditions (a kink: the slope along d jumps) switches the run
to the weak Wolfe bisection of Lewis & Overton (2013) with the same ftol and gtol: double, then
bisect, accept sufficient decrease with g'(α) ≥ gtol·g'(0); from then on ``objective_tolerance``
needs ``kink_patience`` small decreases in a row. First step length:
min(1/‖d‖₂, stpmax) after a (re)start, else min(1, stpmax). A non-finite trial value shrinks
the search interval (stpmax ← stx + ½(stp − stx)); a search that ends without the sufficient-
decrease condition restarts once from −g, then stops with ``line_search_failed``.

**Levenberg–Marquardt** with Nielsen's damping (Madsen, Nielsen & Tingleff 2004, §3.2):
F(θ) = ‖r‖² over all residuals (per-sample residuals scaled by 1/√n for ``mean``); A = JᵀJ,
g = Jᵀr; μ₀ = τ·max diag(A); solve (A + μI) δ = −g by Cholesky; trial θ' = P(θ + δ); gain
ρ = (F(θ) − F(θ')) / (δᵀ(μδ − g)) (the predicted decrease of ½‖r‖² is ½δᵀ(μδ − g), F is twice
that); ρ > 0: accept, μ ← μ·max(⅓, 1 − (2ρ − 1)³), ν ← 2; else μ ← μ·ν, ν ← 2ν. A non-finite
trial is a rejection; ``max_rejections`` in a row stop with ``line_search_failed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .ir import Assignment, Hyperparameter, Optimizer
from .project import TrainingSpec

#: Why training stopped: name → code (the C enum values, Swift enum cases in this order).
STOP_REASONS: tuple[str, ...] = ("gradient_tolerance", "objective_tolerance", "max_iterations",
                                 "line_search_failed", "non_finite", "callback")
#: The reasons that mean the optimum was reached (``report.converged``).
CONVERGED_REASONS: tuple[str, ...] = ("gradient_tolerance", "objective_tolerance")


@dataclass(frozen=True)
class LineSearch:
    """Moré–Thuente (MINPACK-2 dcsrch) constants, as in L-BFGS-B."""

    ftol: float = 1e-3          # sufficient decrease: f(stp) ≤ f(0) + ftol·stp·f'(0)
    gtol: float = 0.9           # curvature: |f'(stp)| ≤ gtol·|f'(0)|
    xtol: float = 0.1           # relative width of the uncertainty interval
    max_evaluations: int = 20   # per line search
    stpmax: float = 1e10        # cap when no bound limits the step
    xtrapl: float = 1.1
    xtrapu: float = 4.0
    #: after a kink, objective_tolerance stops only on this many small decreases in a row (a
    #: bisection step just past a kink can gain little while the run still converges)
    kink_patience: int = 3


@dataclass(frozen=True)
class Damping:
    """Nielsen's damping update for Levenberg–Marquardt."""

    tau: float = 1e-3           # μ₀ = tau · max diag(JᵀJ)
    max_rejections: int = 40    # rejected steps in a row before giving up


LINE_SEARCH = LineSearch()
DAMPING = Damping()


def build_optimizer(training: TrainingSpec, namer) -> Optimizer:
    """The IR for ``training.optimizer`` with the project's hyper-parameter defaults (an empty
    element-wise update for the full-batch methods, which have no per-step formula)."""
    hyper = {name: Hyperparameter(name, value, namer.symbol(name))
             for name, value in training.hyperparameters().items()}
    h = {name: item.symbol for name, item in hyper.items()}
    param, grad = namer.symbol("param"), namer.symbol("grad")
    if not training.first_order:
        return Optimizer(training.optimizer, (), (), (), (), (), param, grad)
    lr = h["learning_rate"]
    if training.optimizer == "sgd":
        return Optimizer("sgd", tuple(hyper.values()), (), (), (), (
            Assignment(param, param - lr * grad),), param, grad)
    if training.optimizer == "momentum":
        velocity = namer.symbol("velocity")
        return Optimizer("momentum", tuple(hyper.values()), (), (), (velocity,), (
            Assignment(velocity, h["momentum"] * velocity + grad),
            Assignment(param, param - lr * velocity),
        ), param, grad)
    m, v = namer.symbol("m"), namer.symbol("v")
    b1p, b2p = namer.symbol("beta1_power"), namer.symbol("beta2_power")
    step, vscale = namer.symbol("step_size"), namer.symbol("v_scale")
    b1, b2, eps = h["beta1"], h["beta2"], h["epsilon"]
    return Optimizer(
        "adam", tuple(hyper.values()),
        scalar_state=((b1p, 1.0), (b2p, 1.0)),
        scalar_update=(
            Assignment(b1p, b1p * b1),
            Assignment(b2p, b2p * b2),
            Assignment(step, lr / (1 - b1p)),
            Assignment(vscale, 1 / (1 - b2p)),
        ),
        element_state=(m, v),
        element_update=(
            Assignment(m, b1 * m + (1 - b1) * grad),
            Assignment(v, b2 * v + (1 - b2) * grad ** 2),
            Assignment(param, param - step * m / (sp.sqrt(v * vscale) + eps)),
        ),
        param=param, grad=grad)



def check_training(program, backend) -> None:
    """Refuse at build time what ``backend``'s trainer does not implement (never train wrongly)."""
    from .errors import BackendError
    method = program.training.method
    if method not in backend.training_methods:
        raise BackendError(f"the {backend.name} backend cannot train with optimizer '{method}' "
                           f"yet; use one of {', '.join(backend.training_methods)} or the numpy "
                           f"backend")
    if program.bounded and not backend.supports_bounds:
        raise BackendError(f"the {backend.name} backend does not support parameter bounds yet; "
                           f"remove lower/upper or use the numpy backend")
