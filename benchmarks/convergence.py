#!/usr/bin/env python3
"""Passes over the data and wall time to reach the optimum: gradforge's L-BFGS and
Levenberg–Marquardt (NumPy and C) against SciPy's L-BFGS-B and least_squares(method="lm") on
the same generated value-and-gradient (and residuals/Jacobian), and the project's first-order
optimizer at its learning rate.

For every model the target is the best objective any method found, or the optimum linear
programming certifies where there is one (the story's L1 model and the random nonsmooth ones), J*; a method's figure is
the number of passes (value+gradient or residual+Jacobian evaluations on all samples; a
mini-batch epoch is one pass) at which the best objective it had evaluated first came within
1e-6 relative of J* (``-`` if never), its total passes, wall time, and how far its final
objective ended from J*. The C rows run the generated C trainer (``-O3``) and report its own
passes and CPU time; their passes-to-target column is the NumPy run's, since the two follow
the same iterates (tests/test_convergence.py checks the first 5 to 1e-9 and the reports). Models: the
examples (in float64), random least-squares models and random nonsmooth models (L1 regression,
sparse SVM) with 5,000 samples.

Figures, not a test: run it by hand (about a minute on two cores)::

    python benchmarks/convergence.py [--samples 5000] [--no-c]

The goal of issue 9: gradforge needs no more passes than SciPy (within 20%) and reaches the
same or a better objective.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.optimize as so

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins"), str(ROOT / "tests")]

import gradforge  # noqa: E402
from gradforge.project import TrainingSpec, load_project  # noqa: E402
from gradforge_numpy.plugin import load_module  # noqa: E402
from lp_optima import hinge_l1_optimum, l1_optimum  # noqa: E402

TOLERANCE = 1e-6


def module_for(spec, folder: Path, tag: str):
    program = gradforge.compile_project(spec)
    path = folder / f"{spec.name}_{tag}.py"
    path.write_text(gradforge.emit(program, "numpy")[f"{spec.name}.py"])
    return program, load_module(path, f"bench_{spec.name}_{tag}")


def read_csv(path: Path) -> dict:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    columns: dict[str, list] = {}
    for i, name in enumerate(header):
        columns.setdefault(name.split("[")[0], []).append(rows[:, i])
    return {k: (v[0] if len(v) == 1 and "[" not in ",".join(header) .split(k)[1][:1]
                else np.stack(v, axis=1)) for k, v in columns.items()}


class Trace:
    """Objective after each evaluation, for passes-to-target."""

    def __init__(self):
        self.points: list[tuple[int, float]] = []   # (passes so far, best objective so far)
        self.passes = 0
        self.best = np.inf

    def add(self, value: float, passes: int = 1):
        self.passes += passes
        if np.isfinite(value):
            self.best = min(self.best, float(value))
        self.points.append((self.passes, self.best))

    def passes_to(self, target: float):
        for passes, best in self.points:
            if best <= target:
                return passes
        return None


def with_training(spec, **training):
    return dataclasses.replace(spec, training=TrainingSpec(**training))


def run_model(label: str, spec, data: dict, folder: Path, use_c: bool, least_squares: bool,
              exact: float | None = None, first_order_spec=None):
    """Rows for one model; ``exact`` is an optimum certified independently (linear
    programming), ``first_order_spec`` the first-order run to compare (default: the project's
    own training when it is first-order)."""
    rows = []
    results: dict[str, tuple[Trace, float, float]] = {}   # method → (trace, seconds, final J)

    # gradforge L-BFGS (NumPy): the module's minimize with a counting evaluator
    program, m = module_for(with_training(spec, optimizer="lbfgs"), folder, "lbfgs")
    d, n = m._data(data)
    c = m._constants(None)
    trace = Trace()

    def value_and_grad(theta):
        value, grad = m._value_and_grad_flat(theta, d, n, c)
        trace.add(float(value))
        return value, grad
    start = time.perf_counter()
    # the iteration budget of SciPy's default (maxiter 15000), so both may run as long
    report = m.minimize(value_and_grad, m.flatten(m.init_params()), {"max_iterations": 15000})
    results["gradforge lbfgs (numpy)"] = (trace, time.perf_counter() - start, report.objective)

    # SciPy L-BFGS-B on the same generated value_and_grad
    trace = Trace()

    def fun(theta):
        value, grad = m._value_and_grad_flat(theta, d, n, c)
        trace.add(float(value))
        return float(value), np.array(grad, dtype=float)
    bounds = list(zip([None if v == -np.inf else v for v in m.LOWER],
                      [None if v == np.inf else v for v in m.UPPER]))
    start = time.perf_counter()
    res = so.minimize(fun, m.flatten(m.init_params()), jac=True, method="L-BFGS-B",
                      bounds=bounds)
    results["scipy L-BFGS-B"] = (trace, time.perf_counter() - start, float(res.fun))

    if least_squares:
        lm_program, lm = module_for(with_training(spec, optimizer="levenberg_marquardt"), folder,
                                    "lm")
        trace = Trace()

        def normal(theta):
            value, jtj, jtr = lm._normal_flat(theta, d, n, c)
            trace.add(float(value))
            return value, jtj, jtr
        start = time.perf_counter()
        report = lm.minimize(normal, lm.flatten(lm.init_params()))
        results["gradforge lm (numpy)"] = (trace, time.perf_counter() - start, report.objective)

        trace = Trace()

        def residuals(theta):
            r, _ = lm._residuals_flat(theta, d, n, c)
            trace.add(float(r @ r))
            return r

        def jacobian(theta):
            trace.add(np.inf)              # a Jacobian evaluation is a pass too
            return lm._residuals_flat(theta, d, n, c)[1]
        start = time.perf_counter()
        if np.all(np.isinf(lm.LOWER)) and np.all(np.isinf(lm.UPPER)):
            res = so.least_squares(residuals, lm.flatten(lm.init_params()), jac=jacobian,
                                   method="lm")
            name = "scipy least_squares(lm)"
        else:
            res = so.least_squares(residuals, lm.flatten(lm.init_params()), jac=jacobian,
                                   method="trf", bounds=(lm.LOWER, lm.UPPER))
            name = "scipy least_squares(trf, bounds)"
        results[name] = (trace, time.perf_counter() - start, 2 * float(res.cost))

    # the project's first-order optimizer at its learning rate (its own epochs and batches);
    # the callback that records the objective makes the module evaluate J every epoch, which
    # a run without one skips, so an epoch counts as one pass (the cost without monitoring)
    first_order_spec = first_order_spec or (spec if spec.training.first_order else None)
    if first_order_spec is not None:
        spec = first_order_spec
        first_program, first = module_for(spec, folder, "first")
        trace = Trace()
        trace.add(float(first.objective(first.init_params(), data)))

        def progress(r):
            trace.add(r.objective)
        start = time.perf_counter()
        report = first.train(first.init_params(), data, callback=progress)
        t = spec.training
        results[f"{t.optimizer} lr={t.learning_rate:g} ({t.epochs} epochs)"] = (
            trace, time.perf_counter() - start, report.objective)

    if use_c:
        from gradforge_c.plugin import CBackend
        c_rows = {f.name: np.asarray(data[f.name]).reshape(n, -1).tolist()
                  for f in program.fields}
        for method, prog in (("lbfgs", program),) + ((("lm", lm_program),)
                                                      if least_squares else ()):
            run = CBackend().train(prog, c_rows, folder / f"c_{label}_{method}", optimize="-O3")
            # the same iterates as NumPy (tests/test_convergence.py): the trace is NumPy's
            key = f"gradforge {method} (numpy)"
            results[f"gradforge {method} (c)"] = (results[key][0], run.seconds, run.objective)

    best = min(final for _, _, final in results.values())
    if exact is not None:
        best = min(best, exact)
    target = best + TOLERANCE * max(abs(best), 1e-300)
    for method, (trace, seconds, final) in results.items():
        passes = trace.passes_to(target)
        rows.append((label, method, passes, trace.passes, seconds, (final - best) / abs(best)))
    return rows


def random_models(count: int, samples: int):
    shapes = ["a*exp(-b*x) + c", "a*tanh(b*x + c) + d*z", "a/(1 + exp(-b*(x - c))) + d*z"]
    for seed in range(count):
        rng = random.Random(seed)
        shape = shapes[seed % len(shapes)]
        names = [p for p in "abcd" if p in shape.replace("exp", "").replace("tanh", "")]
        truth = {p: round(rng.uniform(0.5, 1.5), 3) for p in names}
        start = {p: round(v + rng.uniform(-0.4, 0.4), 3) for p, v in truth.items()}
        spec = gradforge.ProjectSpec.create(
            name=f"random{seed}", parameters=start, inputs={"x": {}, "z": {}},
            targets={"y": {}}, prediction=shape, loss="(prediction - y)**2",
            training={"optimizer": "adam", "learning_rate": 0.05, "epochs": 200,
                      "batch_size": 64})
        gen = np.random.default_rng(seed)
        x = gen.uniform(-2, 2, samples)
        z = gen.normal(size=samples)
        env = {"exp": np.exp, "tanh": np.tanh, "x": x, "z": z, **truth}
        y = eval(shape, env) + gen.normal(0, 0.05, samples)   # benchmark data, not user input
        yield f"random{seed}: {shape}", spec, {"x": x, "z": z, "y": y}


def nonsmooth_models(count: int, samples: int):
    """Linear models whose objective has kinks, with the optimum linear programming certifies:
    L1 regression (abs loss) and a sparse linear SVM (hinge loss + 0.01·Σ|w|)."""
    for seed in range(count):
        gen = np.random.default_rng(100 + seed)
        p = 4 + 2 * seed
        names = [f"w{j}" for j in range(p)]
        x = gen.normal(size=(samples, p))
        truth = gen.normal(size=p)
        prediction = " + ".join(f"{w}*x[{j}]" for j, w in enumerate(names))
        if seed % 2 == 0:
            y = x @ truth + gen.standard_t(3, size=samples)
            model = {"loss": "abs(prediction - y)"}
            exact = l1_optimum(x, y)[0]
            label = f"l1 regression, {p} weights"
        else:
            y = np.sign(x @ truth + 0.5 * gen.normal(size=samples))
            model = {"loss": "max(0, 1 - y*prediction)",
                     "regularization": " + ".join(f"0.01*abs({w})" for w in names)}
            exact = hinge_l1_optimum(x, y, 0.01)
            label = f"sparse svm, {p} weights"
        spec = gradforge.ProjectSpec.create(
            name=f"kink{seed}", parameters={w: 0.0 for w in names},
            inputs={"x": {"shape": [p]}}, targets={"y": {}}, prediction=prediction,
            reduction="mean", training={"optimizer": "adam", "learning_rate": 0.01,
                                        "epochs": 200, "batch_size": 64}, **model)
        yield f"{label} (n={samples})", spec, {"x": x, "y": y}, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--random", type=int, default=3)
    parser.add_argument("--nonsmooth", type=int, default=2)
    parser.add_argument("--no-c", action="store_true", help="skip the C backend")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("trend", "logistic", "huber", "mlp", "decay"):
            spec = load_project(ROOT / "examples" / name / "project.toml")
            spec = dataclasses.replace(spec, precision="float64")
            data = read_csv(ROOT / "examples" / name / "data.csv")
            squares = name == "decay"
            extra = {}
            if name == "trend":     # certified optimum; the Adam the example used before lbfgs
                x = data["x"]       # an L1 regression on (x², x, 1): certified by LP
                extra = {"exact": l1_optimum(np.stack([x ** 2, x, np.ones(len(x))], axis=1),
                                             data["y"])[0],
                         "first_order_spec": with_training(
                    spec, optimizer="adam", learning_rate=0.05, epochs=200, batch_size=16,
                    seed=7)}
            rows += run_model(f"{name} (n={len(next(iter(data.values())))})", spec, data, folder,
                              not args.no_c and name != "mlp", squares, **extra)
        for label, spec, data in random_models(args.random, args.samples):
            rows += run_model(label, spec, data, folder, not args.no_c, True)
        for label, spec, data, exact in nonsmooth_models(args.nonsmooth, args.samples):
            rows += run_model(label, spec, data, folder, not args.no_c, False, exact=exact)
    print(f"| model | method | passes to 1e-6 of best | passes in all | seconds | "
          f"final (J - J*)/J* |")
    print("|---|---|---:|---:|---:|---:|")
    for label, method, passes, total, seconds, gap in rows:
        shown = "-" if passes is None else str(passes)
        print(f"| {label} | {method} | {shown} | {total} | {seconds:.4f} | {gap:.1e} |")


if __name__ == "__main__":
    main()
