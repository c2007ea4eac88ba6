"""Build time and op counts for tanh MLPs of growing size (figures, not a test).

    python benchmarks/build_scaling.py            # 81, 577 and 2,177 parameters
    python benchmarks/build_scaling.py --naive    # also time sympy.diff per parameter

Reports, per model: derive (parse + reverse mode + IR), emit NumPy, emit C, their total, the
op counts of the per-sample loss and loss+gradient kernels and their ratio. Targets on the
reference machine: 577 parameters ≤ 1 s and 2,177 ≤ 3 s for derive+emit(NumPy, C); ratio ≤ 1.8.
"""
from __future__ import annotations

import argparse
import time

import sympy as sp

import gradforge
from gradforge.model import build_model
from gradforge.plugins import load_registry

SIZES = [(8, 8), (32, 16), (64, 32)]      # (hidden, inputs)


def mlp(hidden: int, inputs: int) -> gradforge.ProjectSpec:
    return gradforge.ProjectSpec.create(
        name=f"mlp{hidden}x{inputs}",
        parameters={"W": {"shape": [hidden, inputs], "init": 0.1}, "b": {"shape": [hidden]},
                    "v": {"shape": [hidden], "init": 0.1}, "c": 0.0},
        inputs={"x": {"shape": [inputs]}}, targets={"y": {}},
        definitions={"h": f"[tanh(sum(W[k, j]*x[j] for j in range({inputs})) + b[k]) "
                          f"for k in range({hidden})]"},
        prediction="dot(v, h) + c", loss="(prediction - y)**2")


def naive_seconds(spec) -> float:
    """sympy.diff of the fully inlined loss, once per parameter (the quadratic baseline)."""
    model = build_model(spec)
    lets = {}
    for symbol, expr in model.lets:
        lets[symbol] = expr.xreplace(lets)
    loss = model.loss.xreplace(lets)
    start = time.perf_counter()
    for p in model.parameter_symbols:
        sp.diff(loss, p)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive", action="store_true", help="also time sympy.diff per parameter")
    args = parser.parse_args()
    registry = load_registry()
    print(f"{'params':>7} {'derive s':>9} {'numpy s':>8} {'c s':>7} {'total s':>8} "
          f"{'loss ops':>9} {'l+g ops':>8} {'ratio':>6}" + ("  naive diff s" if args.naive else ""))
    for hidden, inputs in SIZES:
        spec = mlp(hidden, inputs)
        t0 = time.perf_counter()
        program = gradforge.compile_project(spec)
        t1 = time.perf_counter()
        gradforge.emit(program, "numpy", registry=registry)
        t2 = time.perf_counter()
        gradforge.emit(program, "c", registry=registry)
        t3 = time.perf_counter()
        loss_ops = program.loss.op_count()
        grad_ops = program.loss_and_gradient.op_count()
        row = (f"{program.num_params:>7} {t1 - t0:>9.2f} {t2 - t1:>8.2f} {t3 - t2:>7.2f} "
               f"{t3 - t0:>8.2f} {loss_ops:>9} {grad_ops:>8} {grad_ops / loss_ops:>6.2f}")
        if args.naive:
            row += f"  {naive_seconds(spec):>12.2f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
