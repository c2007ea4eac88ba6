"""Stage 5b: optimizer updates as IR (element-wise formulas every backend prints the same way).

SGD:      θ ← θ − η g
Momentum: v ← μ v + g;  θ ← θ − η v
Adam:     m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
          θ ← θ − η m̂ / (√v̂ + ε)  with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)

β₁ᵗ and β₂ᵗ are scalar state multiplied once per step (no ``pow`` with an integer exponent in
the generated code, which float32 C would have to convert).
"""
from __future__ import annotations

import sympy as sp

from .ir import Assignment, Hyperparameter, Optimizer
from .project import TrainingSpec


def build_optimizer(training: TrainingSpec, namer) -> Optimizer:
    """The IR for ``training.optimizer`` with the project's hyper-parameter defaults."""
    hyper = {name: Hyperparameter(name, value, namer.symbol(name))
             for name, value in training.hyperparameters().items()}
    h = {name: item.symbol for name, item in hyper.items()}
    param, grad = namer.symbol("param"), namer.symbol("grad")
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
