"""Stage 5: Model → IR :class:`~gradforge.ir.Program` (derivatives, temporaries, optimizer).

The per-sample kernels share one forward recording, but each keeps only what its outputs need
(prediction only, loss only, loss with gradient), so ``predict`` and ``objective`` never pay
for the gradient; the regularizer is a separate parameter-only kernel.
Temporaries are renumbered ``t0, t1, …`` per kernel in the order they are assigned, which keeps
generated code readable and byte-identical for the same project.
"""
from __future__ import annotations

import copy

import sympy as sp

from . import derivative, least_squares
from .ir import Assignment, Constant, Field, Kernel, Parameter, Program, Training
from .model import Model, build_model
from .params_file import model_hash
from .optimizers import build_optimizer
from .project import ProjectSpec


def _kernel(line: derivative.StraightLine, names: list[str], namer,
            with_gradient: bool = False) -> Kernel:
    """Wrap straight-line code as a Kernel, renaming generated temporaries to t0, t1, …"""
    rename: dict[sp.Symbol, sp.Symbol] = {}
    local = copy.deepcopy(namer)
    counter = 0
    for symbol, _ in line.assignments:
        if symbol in line.temporaries:
            while True:
                candidate = f"t{counter}"
                counter += 1
                if candidate not in local.taken:
                    break
            local.taken.add(candidate)
            rename[symbol] = sp.Symbol(candidate, real=True)
    body = tuple(Assignment(rename.get(s, s), derivative.substitute(e, rename, evaluate=False))
                 for s, e in line.assignments)
    outputs = [derivative.substitute(e, rename, evaluate=False) for e in line.outputs]
    named = tuple(zip(names, outputs[:len(names)]))
    gradient = ()
    if with_gradient:   # outputs after the named ones are ∂/∂θ[0], ∂/∂θ[1], …
        gradient = tuple((i, g) for i, g in enumerate(outputs[len(names):]) if g != 0)
    return Kernel(body, named, gradient, frozenset(rename.values()))


def lower(model: Model) -> Program:
    """Derive every kernel of ``model`` and assemble the program."""
    spec = model.spec
    theta = model.parameter_symbols
    namer = model.namer

    def fresh():
        return copy.deepcopy(namer)

    # one forward recording serves the three per-sample kernels (dead code is dropped per kernel)
    tape, (prediction, loss_atom) = derivative.linearize(
        model.lets, [model.prediction, model.loss], fresh())
    predict = _kernel(derivative.cleanup(tape.assignments, [prediction], tape.named, tape.temps),
                      ["prediction"], namer)
    loss = _kernel(derivative.cleanup(tape.assignments, [loss_atom], tape.named, tape.temps),
                   ["loss"], namer)
    loss_grad = _kernel(derivative.reverse(tape, loss_atom, theta), ["loss"], namer,
                        with_gradient=True)
    regularizer = None
    if model.regularization is not None:
        regularizer = _kernel(derivative.gradient(model.lets_for(model.regularization),
                                                  model.regularization, theta, fresh()),
                              ["value"], namer, with_gradient=True)

    sample_residuals: tuple[Kernel, ...] = ()
    regularizer_residuals: tuple[Kernel, ...] = ()
    if spec.training.optimizer == "levenberg_marquardt":
        sample, regular = least_squares.residuals(model)
        sample_residuals = tuple(
            _kernel(derivative.gradient(model.lets_for(r), r, theta, fresh()), ["residual"],
                    namer, with_gradient=True) for r in sample)
        regularizer_residuals = tuple(
            _kernel(derivative.gradient(model.lets_for(q), q, theta, fresh()), ["residual"],
                    namer, with_gradient=True) for q in regular)

    inf = float("inf")
    offset = 0
    parameters = []
    for p_spec, p in zip(spec.parameters, model.parameters):
        n = len(p.symbols)
        parameters.append(Parameter(p.name, p.shape, offset, p_spec.init, p.symbols,
                                    p_spec.lower or (-inf,) * n, p_spec.upper or (inf,) * n))
        offset += n
    ranges = {f.name: f.range for f in (*spec.inputs, *spec.targets)}
    inputs = tuple(Field(f.name, "input", f.shape, f.symbols, ranges.get(f.name))
                   for f in model.inputs)
    targets = tuple(Field(f.name, "target", f.shape, f.symbols, ranges.get(f.name))
                    for f in model.targets)
    constants = tuple(Constant(c.name, c.default, s) for c, s in model.constants)
    t = spec.training
    return Program(
        name=spec.name, precision=spec.precision, parameters=tuple(parameters),
        inputs=inputs, targets=targets, constants=constants, reduction=spec.model.reduction,
        predict=predict, loss=loss, loss_and_gradient=loss_grad, regularizer=regularizer,
        optimizer=build_optimizer(t, fresh()),
        training=Training(t.epochs, t.batch_size, t.seed, t.optimizer, *t.stopping(spec.precision),
                          t.history),
        source=spec.path.name if spec.path else None,
        residuals=sample_residuals, regularizer_residuals=regularizer_residuals,
        model_hash=model_hash(spec))


def compile_project(spec: ProjectSpec) -> Program:
    """ProjectSpec → Program: the whole front half of the pipeline."""
    return lower(build_model(spec))
