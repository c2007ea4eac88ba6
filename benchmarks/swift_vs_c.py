#!/usr/bin/env python3
"""Swift vs C: the generated ``valueAndGradient`` on 10^6 samples, and Swift build time.

For the story's model (examples/trend) and a 577-parameter tanh MLP (16 inputs → 32 hidden
units → 1 output), this script

1. emits the Swift package and builds it from clean with ``swift build -c release`` (timed:
   the build time of the 577-parameter MLP is one of the figures);
2. builds a small Swift benchmark package that depends on the generated package by path, and
   a C benchmark compiled with ``gcc -O3`` together with the generated C source;
3. runs both on the same 10^6 samples (generated in each program by gradforge's SplitMix64,
   bit for bit the same data) and reports the best of several timed calls of the full-batch
   value-and-gradient (CPU time, robust on a shared machine), and the speed of Swift relative
   to C (C time / Swift time; target ≥ 0.8).

Figures, not a test: run it by hand (about five minutes on two cores)::

    python benchmarks/swift_vs_c.py [--samples 1000000] [--keep DIR]

Without gcc or the C backend the C side is skipped with a message; without swift the script
stops.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gradforge
from gradforge.backend import write_files
from gradforge.plugins import load_registry

ROOT = Path(__file__).resolve().parent.parent
SEED = 2024
HIDDEN, INPUTS = 32, 16


def mlp_project(folder: Path) -> Path:
    """A 577-parameter tanh MLP (32 hidden × 16 inputs), random-looking initial weights."""
    rng = random.Random(5)

    def row(k):
        return "[" + ", ".join(f"{rng.uniform(-0.3, 0.3):.4f}" for _ in range(k)) + "]"

    text = f"""# Benchmark model: {INPUTS} inputs -> {HIDDEN} tanh units -> 1 output (577 parameters)
[project]
name = "mlp577"
precision = "float64"

[parameters]
W = {{ shape = [{HIDDEN}, {INPUTS}], init = [{", ".join(row(INPUTS) for _ in range(HIDDEN))}] }}
b1 = {{ shape = [{HIDDEN}], init = 0.0 }}
v = {{ shape = [{HIDDEN}], init = {row(HIDDEN)} }}
b2 = 0.0

[inputs]
x = {{ shape = [{INPUTS}] }}

[targets]
y = {{}}

[model.definitions]
h = "[tanh(sum(W[k, j]*x[j] for j in range({INPUTS})) + b1[k]) for k in range({HIDDEN})]"

[model]
prediction = "dot(v, h) + b2"
loss = "(prediction - y)**2"
reduction = "mean"

[training]
optimizer = "adam"
learning_rate = 0.01
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "project.toml"
    path.write_text(text, encoding="utf-8")
    return path


SWIFT_BENCH = """\
import {module}
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

func now() -> Double {{
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}}

var state: UInt64 = {seed}
func uniform() -> Double {{
    state = state &+ 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z = z ^ (z >> 31)
    return Double(z >> 11) * 0x1p-53 * 2.0 - 1.0
}}

let n = {samples}
{declare}
for i in 0..<n {{
{fill}
}}
let data = {module}Data({labels})
let parameters = {module}Parameters()
var result = {module}Model.valueAndGradient(parameters, on: data)
var best = Double.infinity
for _ in 0..<{reps} {{
    let start = now()
    result = {module}Model.valueAndGradient(parameters, on: data)
    best = Swift.min(best, now() - start)
}}
print(result.value, best, result.gradient.flat[0])
"""

C_BENCH = """\
#define _POSIX_C_SOURCE 200112L
#include "{name}.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t state = {seed}u;
static double uniform(void)
{{
    uint64_t z;
    state += 0x9E3779B97F4A7C15u;
    z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * 0x1p-53 * 2.0 - 1.0;
}}

static double now(void)
{{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}}

int main(void)
{{
    const size_t n = {samples};
    size_t i, e;
    int r;
    double params[{upper}_NUM_PARAMS], grad[{upper}_NUM_PARAMS], value, best = 1e300;
{declare}
    {name}_data d = {{ {pointers}, n }};
    (void)e;
    for (i = 0; i < n; ++i) {{
{fill}
    }}
    {name}_init_params(params);
    value = {name}_value_and_grad(params, &d, NULL, grad);
    for (r = 0; r < {reps}; ++r) {{
        const double start = now();
        double t;
        value = {name}_value_and_grad(params, &d, NULL, grad);
        t = now() - start;
        if (t < best) best = t;
    }}
    printf("%.17g %.17g %.17g\\n", value, best, grad[0]);
    return 0;
}}
"""


def run(args, cwd=None, timeout=3600) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout, elapsed


def swift_side(program, work: Path, samples: int, reps: int) -> dict:
    from gradforge_swift.plugin import module_name, swift_build_command

    files = gradforge.emit(program, "swift")
    module = module_name(program, {})
    package = work / "package"
    write_files(package, files)
    # 1. the generated package alone, from clean: what `swift build -c release` costs a user
    _, build_time = run(swift_build_command(package, work / "build-package", work / "cache"))
    # 2. the benchmark package, depending on the generated one by path
    bench = work / "bench"
    fields = program.fields
    declare = "\n".join(f"var f{k} = [{'Double' if program.precision == 'float64' else 'Float'}]"
                        f"(repeating: 0.0, count: {f.size} * n)" for k, f in enumerate(fields))
    scalar = "Double" if program.precision == "float64" else "Float"
    fill = "\n".join(f"    for e in 0..<{f.size} {{ f{k}[{f.size} * i + e] = {scalar}(uniform()) }}"
                     for k, f in enumerate(fields))
    from gradforge_swift.plugin import _Context
    idents = [f["ident"] for f in _Context(program, module).fields()]
    labels = ", ".join(f"{ident}: f{k}" for k, ident in enumerate(idents))
    write_files(bench, {
        "Package.swift": f"""// swift-tools-version:5.9
import PackageDescription
let package = Package(
    name: "Bench",
    dependencies: [.package(path: "../package")],
    targets: [.executableTarget(name: "Bench", dependencies: [
        .product(name: "{module}", package: "package")], path: "Sources/Bench")]
)
""",
        "Sources/Bench/main.swift": SWIFT_BENCH.format(
            module=module, seed=SEED, samples=samples, declare=declare, fill=fill,
            labels=labels, reps=reps),
    })
    run(swift_build_command(bench, work / "build-bench", work / "cache") + ["--product", "Bench"])
    out, _ = run([work / "build-bench" / "release" / "Bench"])
    value, best, g0 = map(float, out.split())
    return {"build_s": build_time, "value": value, "time_s": best, "g0": g0}


def c_side(program, work: Path, samples: int, reps: int) -> dict | str:
    if shutil.which("gcc") is None:
        return "gcc not found"
    try:
        files = gradforge.emit(program, "c")
    except Exception as exc:  # the C backend is another plugin: report, don't crash
        return f"C backend unavailable: {exc}"
    write_files(work / "c", files)
    name = program.name
    scalar = "double" if program.precision == "float64" else "float"
    declare = "\n".join(f"    {scalar} *f{k} = malloc(sizeof({scalar}) * {f.size} * n);"
                        for k, f in enumerate(program.fields))
    fill = "\n".join(f"        for (e = 0; e < {f.size}; ++e) f{k}[{f.size} * i + e] = "
                     f"({scalar})uniform();" for k, f in enumerate(program.fields))
    source = C_BENCH.format(name=name, upper=name.upper(), seed=SEED, samples=samples,
                            reps=reps, declare=declare, fill=fill,
                            pointers=", ".join(f"f{k}" for k in range(len(program.fields))))
    (work / "c" / "bench.c").write_text(source, encoding="utf-8")
    _, build_time = run(["gcc", "-O3", "-std=c99", "-o", work / "c" / "bench",
                         work / "c" / "bench.c", work / "c" / f"{name}.c", "-lm"])
    out, _ = run([work / "c" / "bench"])
    value, best, g0 = map(float, out.split())
    return {"build_s": build_time, "value": value, "time_s": best, "g0": g0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    if shutil.which("swift") is None:
        print("swift not found: install a Swift toolchain to run this benchmark")
        return 1
    registry = load_registry()
    if "swift" not in registry.backends:
        print("the swift backend is not installed (pip install -e .)")
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="gradforge-bench-"))
    models = [("trend", ROOT / "examples" / "trend" / "project.toml", 20),
              ("mlp577", mlp_project(work / "mlp577-project"), 5)]
    rows = []
    for label, path, reps in models:
        program = gradforge.load_program(path)
        print(f"== {label}: {program.num_params} parameters, {args.samples} samples", flush=True)
        swift = swift_side(program, work / label / "swift", args.samples, reps)
        print(f"   swift build -c release (generated package, clean): {swift['build_s']:.1f} s")
        print(f"   Swift valueAndGradient: {swift['time_s'] * 1e3:.2f} ms "
              f"(J = {swift['value']!r})", flush=True)
        c = c_side(program, work / label, args.samples, reps)
        if isinstance(c, str):
            print(f"   C skipped: {c}")
            rows.append((label, program.num_params, swift, None))
            continue
        agree = abs(c["value"] - swift["value"]) / max(abs(c["value"]), 1e-300)
        print(f"   C value_and_grad (gcc -O3): {c['time_s'] * 1e3:.2f} ms "
              f"(J = {c['value']!r}, relative difference {agree:.1e})")
        rows.append((label, program.num_params, swift, c))
    print()
    print(f"{'model':<8} {'params':>6} {'swift ms':>9} {'C ms':>8} {'Swift speed vs C':>17} "
          f"{'swift build s':>14}")
    for label, params, swift, c in rows:
        ratio = f"{c['time_s'] / swift['time_s']:.2f}x" if c else "C skipped"
        cms = f"{c['time_s'] * 1e3:.2f}" if c else "-"
        print(f"{label:<8} {params:>6} {swift['time_s'] * 1e3:>9.2f} {cms:>8} {ratio:>17} "
              f"{swift['build_s']:>14.1f}")
    print("target: Swift speed >= 0.8x C; swift build of the 577-parameter MLP < 60 s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
