#!/usr/bin/env python3
"""Generated code at the speed limit: gradforge's C, Swift and NumPy against CasADi-generated C
and JAX ``jit(value_and_grad)`` on the CPU (issue 11).

For each model — every example and a 577-parameter tanh MLP, all in float64 — the same
samples (uniform in [-1, 1), NumPy's PCG64 from one seed) go to every contender, which computes
the objective J and its gradient over all of them; the figure is the best of several calls,
in ns per sample of CPU time (wall-clock time for the threaded run), so that other work on
a shared machine disturbs the figures less:

* ``C``: the generated C, 1 thread, ``gcc -O3`` (IEEE arithmetic, baseline ISA);
* ``C vec``: the same source with ``-march=native -fopenmp-simd -DGRADFORGE_OPENMP_SIMD
  -DGRADFORGE_LIBMVEC``: vectorized sums and glibc's libmvec, IEEE arithmetic otherwise;
* ``C fast``: the same source with ``-march=native -ffast-math -fopenmp-simd
  -DGRADFORGE_OPENMP_SIMD``
  (vectorized loops and glibc's libmvec for exp/log1p/tanh; docs/backends/c.md);
* ``C ×N``: ``C fast`` on all N online processors (``threads = 0``);
* ``CasADi`` / ``CasADi fast``: the per-sample loss and its reverse-mode gradient as CasADi SX,
  generated as C by ``casadi.CodeGenerator``, called once per sample from a C loop, compiled
  with the flags of ``C`` / ``C fast``;
* ``JAX``: ``jax.jit(jax.value_and_grad(J))`` on the CPU, float64, one intra-op thread;
* ``Swift`` (``--swift``): the generated package, ``swift build -c release``, on its own draws
  of the same distribution (benchmarks/swift_vs_c.py's harness), so its J differs slightly;
* ``NumPy``: the generated module's ``value_and_grad``.

CasADi and JAX are the optional ``bench`` extras (``pip install -e '.[bench]'``); each one that
is missing is skipped with a line. Every contender's J is compared with the generated C's.
Then the thread scaling of the generated C at ``--scaling-samples`` (10⁷) samples: the
wall-clock speed-up, and — meaningful even on a busy machine — the CPU time one thread spends
over the CPU time all threads spend together (1.00 = no work added by threading).

Figures, not a test. Run from the repository root::

    python benchmarks/codegen_speed.py --samples 200000 --reps 3 --scaling-samples 0

(the full run, ``python benchmarks/codegen_speed.py --swift``, takes several minutes).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sympy as sp

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import gradforge  # noqa: E402
from gradforge.model import build_model  # noqa: E402
from gradforge.plugin_api import TrainingSpec, write_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
SEED = 2024
IEEE_FLAGS = ["-O3", "-std=c99"]
VEC_FLAGS = IEEE_FLAGS + ["-march=native", "-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD",
                          "-DGRADFORGE_LIBMVEC"]
FAST_FLAGS = IEEE_FLAGS + ["-march=native", "-ffast-math", "-fopenmp-simd",
                           "-DGRADFORGE_OPENMP_SIMD"]
#: Models whose per-sample work is dominated by exp/log/tanh (goal: C ≥ 1.5× the best rival).
TRANSCENDENTAL = {"decay", "logistic", "mlp", "mlp577"}


# ------------------------------------------------------------------------------ models

def models(work: Path) -> list[tuple[str, gradforge.ProjectSpec]]:
    from swift_vs_c import mlp_project
    out = []
    for path in sorted((ROOT / "examples").glob("*/project.toml")):
        out.append((path.parent.name, gradforge.load_project(path)))
    out.append(("mlp577", gradforge.load_project(mlp_project(work / "mlp577-project"))))
    return [(label, dataclasses.replace(spec, precision="float64")) for label, spec in out]


def make_data(program, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {f.name: rng.uniform(-1.0, 1.0, size=(n, f.size)) for f in program.fields}


def full_expressions(model) -> tuple[sp.Expr, sp.Expr | None]:
    """The per-sample loss and the regularization with every definition substituted."""
    lets: dict = {}
    for symbol, expr in model.lets:
        lets[symbol] = expr.xreplace(lets)
    reg = model.regularization.xreplace(lets) if model.regularization is not None else None
    return model.loss.xreplace(lets), reg


class Translator:
    """SymPy → another library's expressions (CasADi SX or jax.numpy), memoized per node."""

    def __init__(self, lib: str, leaves: dict):
        self.lib = lib
        self.memo = dict(leaves)
        if lib == "casadi":
            import casadi as ca
            self.m = ca
            self.where = lambda c, a, b: ca.if_else(c, a, b)
            self.fns = {"exp": ca.exp, "log": ca.log, "log1p": ca.log1p, "expm1": ca.expm1,
                        "sin": ca.sin, "cos": ca.cos, "tan": ca.tan, "tanh": ca.tanh,
                        "Abs": ca.fabs, "sign": ca.sign}
        else:
            import jax.numpy as jnp
            self.m = jnp
            self.where = jnp.where
            self.fns = {"exp": jnp.exp, "log": jnp.log, "log1p": jnp.log1p,
                        "expm1": jnp.expm1, "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan,
                        "tanh": jnp.tanh, "Abs": jnp.abs, "sign": jnp.sign}

    def __call__(self, e):
        if e in self.memo:
            return self.memo[e]
        out = self._convert(e)
        self.memo[e] = out
        return out

    def _convert(self, e):
        if e.is_Number or e.is_NumberSymbol:
            return float(e)
        if isinstance(e, sp.Add):
            args = [self(a) for a in e.args]
            total = args[0]
            for a in args[1:]:
                total = total + a
            return total
        if isinstance(e, sp.Mul):
            args = [self(a) for a in e.args]
            total = args[0]
            for a in args[1:]:
                total = total * a
            return total
        if isinstance(e, sp.Pow):
            base, exp = self(e.args[0]), e.args[1]
            if exp.is_Integer and 0 < int(exp) <= 8:
                out = base
                for _ in range(int(exp) - 1):
                    out = out * base
                return out
            if exp == -1:
                return 1.0 / base
            if exp == sp.Rational(1, 2):
                return self.m.sqrt(base)
            return base ** self(exp)
        if isinstance(e, sp.Piecewise):
            out = self(e.args[-1][0])
            for value, cond in reversed(e.args[:-1]):
                out = self.where(self(cond), self(value), out)
            return out
        if isinstance(e, sp.core.relational.Relational):
            a, b = self(e.lhs), self(e.rhs)
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
                    "==": a == b, "!=": a != b}[e.rel_op]
        name = type(e).__name__
        if name in self.fns:
            return self.fns[name](self(e.args[0]))
        raise NotImplementedError(f"{self.lib}: {name}")


# ------------------------------------------------------------------------------ runners

def run(args, cwd=None, env=None) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout


def write_columns(folder: Path, program, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in program.fields:
        np.ascontiguousarray(data[f.name], dtype=np.float64).tofile(folder / f"{f.name}.bin")


#: The drivers' shared C: a clock (CPU time unless GF_CLOCK says otherwise) and a reader of
#: the raw float64 columns written by write_columns.
DRIVER_TIMING = """\
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifndef GF_CLOCK
#define GF_CLOCK CLOCK_PROCESS_CPUTIME_ID /* CPU time: the machine may be shared */
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(GF_CLOCK, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
"""
DRIVER_LOAD = """
static double *load(const char *path, size_t count)
{
    double *p = malloc(sizeof(double) * count);
    FILE *f = fopen(path, "rb");
    if (p == NULL || f == NULL || fread(p, sizeof(double), count, f) != count) exit(3);
    fclose(f);
    return p;
}
"""


C_DRIVER = """\
#define _POSIX_C_SOURCE 200112L
#include "{name}.h"
{timing}
static double cpu(void)
{{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}}
{load}
int main(void)
{{
    const size_t n = {samples};
    int r;
    double params[{upper}_NUM_PARAMS], grad[{upper}_NUM_PARAMS], value = 0.0, best = 1e300;
    double best_cpu = 1e300;
    {name}_data d;
{loads}
    d.n = n;
    {name}_init_params(params);
    for (r = 0; r < {reps} + 1; ++r) {{
        const double start = now(), start_cpu = cpu();
        double t, t_cpu;
        value = {name}_value_and_grad(params, &d, NULL, grad);
        t = now() - start;
        t_cpu = cpu() - start_cpu;
        if (r > 0 && t < best) best = t;
        if (r > 0 && t_cpu < best_cpu) best_cpu = t_cpu;
    }}
    printf("%.17g %.17g %.17g\\n", value, best, best_cpu);
    return 0;
}}
"""


def c_generated(program, folder: Path, data_dir: Path, n: int, reps: int, flags,
                threads: int = 1, cpu: bool = False) -> tuple[float, ...]:
    """(J, best time of the driver's clock[, best CPU time of the process]) of one build."""
    files = gradforge.emit(program, "c", {"threads": threads})
    loads = "\n".join(f'    d.{f.name} = load("{data_dir / (f.name + ".bin")}", n * {f.size});'
                      for f in program.fields)
    files["driver.c"] = C_DRIVER.format(timing=DRIVER_TIMING, load=DRIVER_LOAD, name=program.name, upper=program.name.upper(),
                                        samples=n, reps=reps, loads=loads)
    write_files(folder, files)
    # one thread: CPU time (robust on a shared machine); threads: wall-clock time
    clock = ["-DGF_CLOCK=CLOCK_MONOTONIC", "-pthread"] if threads != 1 else []
    run(["gcc", *flags, *clock, "-o", "driver", "driver.c", f"{program.name}.c", "-lm"],
        cwd=folder)
    value, best, best_cpu = map(float, run([folder / "driver"]).split())
    return (value, best, best_cpu) if cpu else (value, best)


CASADI_DRIVER = """\
#define _POSIX_C_SOURCE 200112L
#include "cas.h"
{timing}{load}
int main(void)
{{
    const size_t n = {samples};
    const casadi_real *arg[{n_arg}];
    casadi_real *res[2];
    casadi_int iw[{sz_iw} + 1];
    casadi_real w[{sz_w} + 1];
    casadi_real theta[{p}], consts[{n_const} + 1], grad[{p}], g[{p}], loss, reg, rgrad[{p}];
    double value = 0.0, best = 1e300;
    size_t i, k;
    int r;
{loads}
{init}
    for (r = 0; r < {reps} + 1; ++r) {{
        const double start = now();
        double t, total = 0.0;
        for (k = 0; k < {p}; ++k) grad[k] = 0.0;
        for (i = 0; i < n; ++i) {{
            arg[0] = theta;
{field_args}
            arg[{n_arg_minus}] = consts;
            res[0] = &loss;
            res[1] = g;
            f(arg, res, iw, w, 0);
            total += loss;
            for (k = 0; k < {p}; ++k) grad[k] += g[k];
        }}
        value = total * {scale};
        for (k = 0; k < {p}; ++k) grad[k] *= {scale};
        arg[0] = theta;
        arg[1] = consts;
        res[0] = &reg;
        res[1] = rgrad;
        R(arg, res, iw, w, 0);
        value += reg;
        for (k = 0; k < {p}; ++k) grad[k] += rgrad[k];
        t = now() - start;
        if (r > 0 && t < best) best = t;
    }}
    printf("%.17g %.17g\\n", value, best);
    return 0;
}}
"""


def casadi_side(program, spec, folder: Path, data_dir: Path, n: int, reps: int):
    import casadi as ca
    model = build_model(spec)
    loss, reg = full_expressions(model)
    theta = ca.SX.sym("theta", program.num_params)
    leaves = {s: theta[i] for i, s in enumerate(model.parameter_symbols)}
    field_syms = []
    for f in program.fields:
        v = ca.SX.sym(f.name, f.size)
        field_syms.append(v)
        leaves.update({s: v[i] for i, s in enumerate(f.symbols)})
    consts = ca.SX.sym("consts", max(len(program.constants), 1))
    leaves.update({c.symbol: consts[i] for i, c in enumerate(program.constants)})
    loss_sx = Translator("casadi", leaves)(loss)
    reg_sx = Translator("casadi", leaves)(reg) if reg is not None else ca.SX(0)
    f = ca.Function("f", [theta, *field_syms, consts], [loss_sx, ca.gradient(loss_sx, theta)])
    r_fun = ca.Function("R", [theta, consts], [reg_sx, ca.gradient(reg_sx, theta)])
    folder.mkdir(parents=True, exist_ok=True)
    gen = ca.CodeGenerator("cas.c", {"with_header": True})
    gen.add(f)
    gen.add(r_fun)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        gen.generate()
    finally:
        os.chdir(cwd)
    loads = "\n".join(f'    double *col{k} = load("{data_dir / (fl.name + ".bin")}", n * {fl.size});'
                      for k, fl in enumerate(program.fields))
    init = "\n".join(f"    theta[{i}] = {v!r};" for i, v in enumerate(
        v for p in program.parameters for v in p.init))
    init += "\n" + "\n".join(f"    consts[{i}] = {c.default!r};"
                             for i, c in enumerate(program.constants))
    field_args = "\n".join(f"            arg[{k + 1}] = col{k} + {fl.size} * i;"
                           for k, fl in enumerate(program.fields))
    scale = f"{1.0 / n!r}" if program.reduction == "mean" else "1.0"
    source = CASADI_DRIVER.format(timing=DRIVER_TIMING, load=DRIVER_LOAD,
        samples=n, n_arg=len(program.fields) + 2, n_arg_minus=len(program.fields) + 1,
        sz_iw=max(f.sz_iw(), r_fun.sz_iw()), sz_w=max(f.sz_w(), r_fun.sz_w()),
        p=program.num_params, n_const=len(program.constants), loads=loads, init=init,
        reps=reps, field_args=field_args, scale=scale)
    (folder / "driver.c").write_text(source)
    results = []
    for flags in (IEEE_FLAGS, FAST_FLAGS):
        run(["gcc", *flags, "-o", "driver", "driver.c", "cas.c", "-lm"], cwd=folder)
        results.append(tuple(map(float, run([folder / "driver"]).split())))
    return results


def jax_side(program, spec, data, reps: int):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    model = build_model(spec)
    loss, reg = full_expressions(model)
    params = model.parameter_symbols

    def objective(theta, columns, consts):
        leaves = {s: theta[i] for i, s in enumerate(params)}
        for f in program.fields:
            leaves.update({s: columns[f.name][:, i] for i, s in enumerate(f.symbols)})
        leaves.update({c.symbol: consts[i] for i, c in enumerate(program.constants)})
        per_sample = Translator("jax", leaves)(loss)
        total = jnp.mean(per_sample) if program.reduction == "mean" else jnp.sum(per_sample)
        if reg is not None:
            total = total + Translator("jax", leaves)(reg)
        return total

    fn = jax.jit(jax.value_and_grad(objective))
    theta = jnp.asarray([v for p in program.parameters for v in p.init], dtype=jnp.float64)
    columns = {k: jnp.asarray(v) for k, v in data.items()}
    consts = jnp.asarray([c.default for c in program.constants] or [0.0], dtype=jnp.float64)
    value, grad = fn(theta, columns, consts)
    grad.block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        value, grad = fn(theta, columns, consts)
        grad.block_until_ready()
        best = min(best, time.process_time() - start)
    return float(value), best


def numpy_side(program, folder: Path, data, reps: int):
    from gradforge_numpy.plugin import load_module
    files = gradforge.emit(program, "numpy")
    write_files(folder, files)
    module = load_module(folder / f"{program.name}.py", f"bench_{program.name}")
    params = module.initial_params() if hasattr(module, "initial_params") else None
    if params is None:
        params = {p.name: np.reshape(np.asarray(p.init, dtype=np.float64), p.shape)
                  for p in program.parameters}
    columns = {f.name: (data[f.name][:, 0] if not f.shape else
                        data[f.name].reshape((-1, *f.shape))) for f in program.fields}
    value, _ = module.value_and_grad(params, columns)
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        value, _ = module.value_and_grad(params, columns)
        best = min(best, time.process_time() - start)
    return float(value), best


def swift_side(program, spec, folder: Path, n: int, reps: int):
    from swift_vs_c import swift_side as build_and_run
    if spec.training.optimizer not in ("sgd", "momentum", "adam") or any(
            p.lower or p.upper for p in spec.parameters):
        # neither the optimizer nor bounds change value_and_grad; the Swift package trains
        # first-order and unbounded only
        spec = dataclasses.replace(spec, training=TrainingSpec(), parameters=tuple(
            dataclasses.replace(p, lower=None, upper=None) for p in spec.parameters))
        program = gradforge.compile_project(spec)
    result = build_and_run(program, folder, n, reps)
    return result["value"], result["time_s"]


# ------------------------------------------------------------------------------ main

def attempt(label, fn, *args):
    try:
        return fn(*args)
    except ImportError as exc:
        return f"skipped: {exc.name} not installed (pip install -e '.[bench]')"
    except Exception as exc:  # a rival or backend that cannot take this model: one line
        return f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scaling-samples", type=int, default=10_000_000,
                        help="samples for the thread-scaling figures (0: skip them)")
    parser.add_argument("--swift", action="store_true",
                        help="also build and time the Swift package (minutes per model)")
    parser.add_argument("--models", help="comma-separated subset of the models")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        print("gcc not found: the generated C is the reference of this benchmark")
        return 1
    cores = os.cpu_count() or 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="gradforge-codegen-"))
    work.mkdir(parents=True, exist_ok=True)
    chosen = set(args.models.split(",")) if args.models else None
    n = args.samples
    rows = []
    for label, spec in models(work):
        if chosen and label not in chosen:
            continue
        program = gradforge.compile_project(spec)
        data = make_data(program, n)
        data_dir = work / label / "data"
        write_columns(data_dir, program, data)
        print(f"== {label}: {program.num_params} parameters, {n} samples, float64", flush=True)
        row = {"model": label}
        row["C"] = c_generated(program, work / label / "c", data_dir, n, args.reps, IEEE_FLAGS)
        row["C vec"] = c_generated(program, work / label / "cvec", data_dir, n, args.reps,
                                   VEC_FLAGS)
        row["C fast"] = c_generated(program, work / label / "cfast", data_dir, n, args.reps,
                                    FAST_FLAGS)
        row[f"C x{cores}"] = c_generated(program, work / label / "cthreads", data_dir, n,
                                         args.reps, FAST_FLAGS, threads=0)
        casadi = attempt("CasADi", casadi_side, program, spec, work / label / "casadi",
                         data_dir, n, args.reps)
        row["CasADi"] = casadi if isinstance(casadi, str) else casadi[0]
        row["CasADi fast"] = casadi if isinstance(casadi, str) else casadi[1]
        row["JAX"] = attempt("JAX", jax_side, program, spec, data, args.reps)
        if args.swift:
            row["Swift"] = attempt("Swift", swift_side, program, spec, work / label / "swift",
                                   n, args.reps)
        row["NumPy"] = attempt("NumPy", numpy_side, program, work / label / "numpy", data,
                               max(1, args.reps // 2))
        reference = row["C"][0]
        for key, result in row.items():
            if key == "model":
                continue
            if isinstance(result, str):
                print(f"   {key:<11} {result}")
                continue
            value, seconds = result
            diff = abs(value - reference) / max(abs(reference), 1e-300)
            print(f"   {key:<11} {seconds / n * 1e9:9.2f} ns/sample   J = {value:.12g} "
                  f"(relative difference to C {diff:.1e})", flush=True)
        rows.append(row)

    keys = ["C", "C vec", "C fast", f"C x{cores}", "CasADi", "CasADi fast", "JAX"] \
        + (["Swift"] if args.swift else []) + ["NumPy"]
    print()
    print(f"ns per sample (value and gradient, float64, {n} samples, best of {args.reps}).")
    print("vs IEEE = min(CasADi, JAX) / C;  vs vec = min(CasADi, JAX) / C vec;  "
          "vs fast = min(CasADi fast, JAX) / C fast;  Swift/C = C time / Swift time")
    print(f"{'model':<9}" + "".join(f"{k:>12}" for k in keys)
          + f"{'vs IEEE':>9}{'vs vec':>9}{'vs fast':>9}"
          + (f"{'Swift/C':>9}" if args.swift else ""))

    def ns(result):
        return result[1] / n * 1e9 if not isinstance(result, str) else None

    for row in rows:
        cells = "".join(f"{ns(row[k]):>12.2f}" if ns(row[k]) is not None else f"{'-':>12}"
                        for k in keys)

        def best_of(*names):
            found = [ns(row[k]) for k in names if ns(row[k]) is not None]
            return min(found) if found else None

        ieee, fast_rival = best_of("CasADi", "JAX"), best_of("CasADi fast", "JAX")
        ratio = f"{ieee / ns(row['C']):>9.2f}" if ieee else f"{'-':>9}"
        ratio += f"{ieee / ns(row['C vec']):>9.2f}" if ieee else f"{'-':>9}"
        fast = f"{fast_rival / ns(row['C fast']):>9.2f}" if fast_rival else f"{'-':>9}"
        swift = ""
        if args.swift:
            swift = f"{ns(row['C']) / ns(row['Swift']):>9.2f}" if ns(row["Swift"]) else \
                f"{'-':>9}"
        print(f"{row['model']:<9}{cells}{ratio}{fast}{swift}")
    print("goal: C (1 thread) >= the faster of CasADi and JAX on every model, >= 1.5x on "
          f"{', '.join(sorted(TRANSCENDENTAL))}")

    if args.scaling_samples:
        m = args.scaling_samples
        print(f"\nthread scaling of the generated C (C fast flags), {m} samples, "
              f"{cores} online processors")
        for label, spec in models(work):
            if (chosen and label not in chosen) or label == "mlp577":
                continue       # mlp577 at 10^7 samples would need 1.4 GB of data
            program = gradforge.compile_project(spec)
            data_dir = work / label / "scaling"
            write_columns(data_dir, program, make_data(program, m))
            times, cpus = {}, {}
            for threads in sorted({1, 2, cores}):
                folder = work / label / f"scaling{threads}"
                _, times[threads], cpus[threads] = c_generated(
                    program, folder, data_dir, m, max(2, args.reps // 2),
                    FAST_FLAGS + [f"-D{program.name.upper()}_THREADS={threads}"], threads=0,
                    cpu=True)
            shutil.rmtree(data_dir, ignore_errors=True)
            line = ", ".join(f"{k} thread{'s' if k > 1 else ''} {v / m * 1e9:.2f} ns/sample"
                             for k, v in times.items())
            top = max(times)
            speedup = times[1] / times[top]
            # work conserved: CPU time of 1 thread over the CPU time all N threads spent; on
            # N idle cores the speed-up would be about N times this (memory bandwidth aside)
            efficiency = cpus[1] / cpus[top]
            print(f"   {label:<9} {line}; wall-clock speed-up {speedup:.2f}x on {top} "
                  f"(goal >= {0.8 * top:.1f}x); CPU time 1 thread / {top} threads "
                  f"{efficiency:.2f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
