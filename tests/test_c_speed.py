"""The C backend's speed structure, checked by the compiler (never by a timer):

* threads: the value and gradient are bit-identical for every thread count, 1 included, and
  equal to the plain C99 build without pthreads (blocks of 1024 summed in block order);
* vectorization: gcc's vectorizer takes the contiguous loss-and-gradient loop (reported by
  ``-fopt-info-vec``), in float64 and float32, with the documented flags.
"""
from __future__ import annotations

import dataclasses
import platform
import re
import subprocess

import pytest

import gradforge
from gradforge.lower import compile_project

from conftest import example_path, require_tool

from gradforge_c.plugin import compile_flags

#: 5 full blocks and a short one: every thread count splits them differently.
SAMPLES = 5 * 1024 + 300


@pytest.fixture(scope="module")
def gcc():
    return require_tool("gcc")


def spec_for(example: str, precision: str):
    spec = gradforge.load_project(example_path(example))
    return dataclasses.replace(spec, precision=precision)


def driver(program) -> str:
    """A main that fills every field with SplitMix-like data, perturbs the parameters, and
    prints the objective, the value and every gradient entry as exact bit patterns."""
    prefix, upper = program.name, program.name.upper()
    T = "float" if program.precision == "float32" else "double"
    fields = "\n".join(f"    static {T} {f.name}[{SAMPLES} * {f.size}];" for f in program.fields)
    fill = "\n".join(
        f"    for (i = 0; i < {SAMPLES} * {f.size}; ++i) {f.name}[i] = "
        f"({T})(next(&state) * 4.0 - 2.0);" +
        (f"\n    for (i = 0; i < {SAMPLES}; ++i) {f.name}[i] = ({T})(next(&state) < 0.5);"
         if f.role == "target" and prefix == "logistic" else "")
        for f in program.fields)
    members = "\n".join(f"    d.{f.name} = {f.name};" for f in program.fields)
    return f"""#include "{prefix}.h"
#include <stdio.h>
#include <string.h>
static double next(unsigned long long *state)
{{
    unsigned long long z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}}
static void show({T} v)
{{
    unsigned char bytes[sizeof v];
    size_t k;
    memcpy(bytes, &v, sizeof v);
    for (k = 0; k < sizeof v; ++k) printf("%02x", bytes[k]);
    printf(" ");
}}
int main(void)
{{
{fields}
    static {T} params[{upper}_NUM_PARAMS], grad[{upper}_NUM_PARAMS];
    unsigned long long state = 42;
    {prefix}_data d;
    size_t i;
{fill}
{members}
    d.n = {SAMPLES};
    {prefix}_init_params(params);
    for (i = 0; i < {upper}_NUM_PARAMS; ++i) params[i] += ({T})(next(&state) - 0.5);
    show({prefix}_objective(params, &d, NULL));
    show({prefix}_value_and_grad(params, &d, NULL, grad));
    for (i = 0; i < {upper}_NUM_PARAMS; ++i) show(grad[i]);
    printf("\\n");
    return 0;
}}
"""


def run_build(program, folder, threads: int, defines=(), optimize="-O2") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    files = gradforge.emit(program, "c", {"threads": threads})
    files["driver.c"] = driver(program)
    for name, text in files.items():
        (folder / name).write_text(text)
    binary = folder / "driver"
    subprocess.run(["gcc", optimize, *compile_flags(program.precision, threads), *defines,
                    "-o", str(binary), f"{program.name}.c", "driver.c", "-lm"],
                   cwd=folder, check=True, capture_output=True, text=True)
    return subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout


@pytest.mark.toolchain
@pytest.mark.parametrize("example, precision", [("logistic", "float32"), ("huber", "float64"),
                                                ("mlp", "float32"), ("trend", "float64")])
def test_threads_give_bit_identical_value_and_gradient(gcc, tmp_path, example, precision):
    program = compile_project(spec_for(example, precision))
    upper = program.name.upper()
    plain = run_build(program, tmp_path / "plain", threads=1)
    assert len(plain.split()) == 2 + program.num_params
    objective, value = plain.split()[:2]
    assert objective == value or program.regularizer is not None
    for threads in (1, 2, 3, 4, 7):
        out = run_build(program, tmp_path / f"t{threads}", threads=4,
                        defines=[f"-D{upper}_THREADS={threads}"])
        assert out == plain, f"{threads} threads differ from the serial sum"
    # 0 = one thread per online processor
    assert run_build(program, tmp_path / "online", threads=0) == plain


@pytest.mark.toolchain
def test_threads_under_fast_math_and_simd_stay_bit_identical(gcc, tmp_path):
    """With the fast flags the numbers change (documented) but not with the thread count."""
    program = compile_project(spec_for("logistic", "float64"))
    flags = ["-ffast-math", "-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD"]
    serial = run_build(program, tmp_path / "s", threads=4,
                       defines=[*flags, "-DLOGISTIC_THREADS=1"], optimize="-O3")
    for threads in (2, 3):
        out = run_build(program, tmp_path / f"t{threads}", threads=4,
                        defines=[*flags, f"-DLOGISTIC_THREADS={threads}"], optimize="-O3")
        assert out == serial


def vectorized_lines(program, folder, flags, compiler="gcc") -> set[int]:
    """Source lines of ``<name>.c`` where the compiler reports a vectorized loop."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in gradforge.emit(program, "c").items():
        (folder / name).write_text(text)
    report = ["-fopt-info-vec-optimized"] if compiler == "gcc" else ["-Rpass=loop-vectorize"]
    result = subprocess.run([compiler, "-O3", *compile_flags(program.precision), *flags,
                             *report, "-c", f"{program.name}.c", "-o", "kernel.o"],
                            cwd=folder, check=True, capture_output=True, text=True)
    return {int(m.group(1)) for m in re.finditer(
        rf"{program.name}\.c:(\d+):\d+: (?:optimized: loop vectorized|remark: vectorized loop)",
        result.stderr)}


def contiguous_loop_lines(program, folder) -> set[int]:
    """Lines of the contiguous sample loop in the loss-and-gradient block (and its pragma)."""
    text = (folder / f"{program.name}.c").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if "_block_loss_and_grad(const" in line)
    loop = next(i for i in range(start, len(text)) if "for (i = start; i < end; ++i)" in text[i])
    return {loop - 1, loop + 1}       # 1-based: the pragma line (above #endif) or the for line


@pytest.mark.toolchain
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 vector ISA")
@pytest.mark.parametrize("example, precision, flags", [
    # no libm call: the OpenMP simd reduction alone (IEEE arithmetic otherwise)
    ("trend", "float64", ["-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD"]),
    ("trend", "float32", ["-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD"]),
    ("huber", "float64", ["-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD"]),
    # exp/log1p/tanh: glibc's libmvec, declared to gcc under -ffast-math ...
    ("logistic", "float32", ["-march=x86-64-v3", "-ffast-math"]),
    ("logistic", "float64", ["-march=x86-64-v3", "-ffast-math"]),
    ("mlp", "float32", ["-march=x86-64-v3", "-ffast-math"]),
    # ... or by the generated file itself with GRADFORGE_LIBMVEC (IEEE arithmetic otherwise)
    ("mlp", "float64", ["-march=x86-64-v3", "-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD",
                        "-DGRADFORGE_LIBMVEC"]),
    ("logistic", "float32", ["-march=x86-64-v3", "-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD",
                             "-DGRADFORGE_LIBMVEC"]),
])
def test_contiguous_loop_is_vectorized(gcc, tmp_path, example, precision, flags):
    program = compile_project(spec_for(example, precision))
    lines = vectorized_lines(program, tmp_path, flags)
    assert lines & contiguous_loop_lines(program, tmp_path), \
        f"gcc did not vectorize the sample loop (vectorized lines: {sorted(lines)})"


@pytest.mark.toolchain
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 libmvec")
@pytest.mark.parametrize("example, precision, tolerance", [("mlp", "float64", 1e-12),
                                                           ("logistic", "float32", 1e-5)])
def test_vector_math_build_agrees_with_the_ieee_build(gcc, tmp_path, example, precision,
                                                      tolerance):
    """libmvec (at most 4 ulp) and lane-wise sums move only the last bits of J and ∇J."""
    if not re.search(r"GLIBC 2\.(3[5-9]|[4-9]\d)", subprocess.run(
            ["ldd", "--version"], capture_output=True, text=True).stdout):
        pytest.skip("libmvec with tanh/log1p needs glibc >= 2.35")
    program = compile_project(spec_for(example, precision))
    ieee = run_build(program, tmp_path / "ieee", threads=1)
    fast = run_build(program, tmp_path / "vec", threads=1, optimize="-O3",
                     defines=["-march=native", "-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD",
                              "-DGRADFORGE_LIBMVEC"])
    dtype = "<f4" if precision == "float32" else "<f8"
    a = [struct_value(h, dtype) for h in ieee.split()]
    b = [struct_value(h, dtype) for h in fast.split()]
    scale = max(abs(v) for v in a)
    assert max(abs(x - y) for x, y in zip(a, b)) <= tolerance * scale


@pytest.mark.toolchain
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_clang_vectorizes_the_contiguous_loop(tmp_path, precision):
    """The same loop under clang's vectorizer (-Rpass=loop-vectorize)."""
    require_tool("clang")
    program = compile_project(spec_for("trend", precision))
    lines = vectorized_lines(program, tmp_path, ["-fopenmp-simd", "-DGRADFORGE_OPENMP_SIMD"],
                             compiler="clang")
    assert lines & contiguous_loop_lines(program, tmp_path), sorted(lines)


def struct_value(hex_bytes: str, dtype: str) -> float:
    import numpy as np
    return float(np.frombuffer(bytes.fromhex(hex_bytes), dtype=dtype)[0])
