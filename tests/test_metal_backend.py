"""Metal backend: the emitted kernels compiled as C++20 through gradforge's Metal shim and run
on the CPU over real threadgroups, compared with the independent reference; the shim's own
rules (barriers, divergence, no double); the Swift host parsed and type-checked.

What this cannot catch (Metal-only rules that C++ accepts) is listed in docs/backends/metal.md;
the real Metal compiler runs in .github/workflows/metal-macos.yml.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gradforge
from gradforge.errors import BackendError, ProjectError, ToolchainError
from gradforge.project import ProjectSpec
from gradforge.reference import Reference
from gradforge.verification import compare, make_cases
from gradforge.writer import HEADER_LINES, MARKER

from conftest import examples_for, example_path, require_tool
from random_models import random_project

from gradforge_metal.plugin import CXX_FLAGS, SHIM_DIR, MetalBackend

BACKEND = MetalBackend()
#: (threads per threadgroup, most threadgroups); case k runs on GRIDS[k % 4]
GRIDS = ((1, 4), (7, 3), (32, 2), (64, 1))
#: sample counts: grid-stride loops (50 on 1×4, 65 on 7×3), partial groups, one, none
SAMPLES = (50, 65, 13, 1, 65, 0, 50, 64)


def float32_spec(name: str) -> ProjectSpec:
    """The example as float32 (trend and huber are float64 projects; Metal has no double)."""
    return dataclasses.replace(gradforge.load_project(example_path(name)), precision="float32")


def require_shim() -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("the Metal shim needs Linux (POSIX ucontext and ELF section symbols)")
    return require_tool(os.environ.get("CXX", "g++"))


def options(**given) -> dict:
    return BACKEND.resolve_options(given)


def problems(spec: ProjectSpec, cases, results) -> list[str]:
    reference = Reference(spec)
    out = []
    for k, (case, result) in enumerate(zip(cases, results)):
        out += [f"case {k} (n={case.n}, grid {GRIDS[k % len(GRIDS)]}): {p}"
                for p in compare(result, reference.expected(case), "float32")]
    return out


class Built:
    """One compiled harness per (example, options), shared by the tests of this module."""

    def __init__(self, factory):
        self.factory = factory
        self.cache = {}

    def get(self, label: str, spec: ProjectSpec, **opts):
        key = (label, tuple(sorted(opts.items())))
        if key not in self.cache:
            program = gradforge.compile_project(spec)
            workdir = self.factory.mktemp(f"metal-{label}")
            exe = BACKEND.build_runner(program, options(**opts), workdir)
            self.cache[key] = (program, exe, workdir)
        return self.cache[key]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require_shim()
    return Built(tmp_path_factory)


# ----------------------------------------------------------------------------- emission

def test_float64_is_refused_with_the_fix():
    program = gradforge.load_program(example_path("huber"))
    assert program.precision == "float64"
    with pytest.raises(BackendError, match=r'precision = "float32"'):
        BACKEND.emit(program, options())


def test_registered_through_the_entry_point(registry):
    assert isinstance(registry.backend("metal"), MetalBackend)
    files = gradforge.emit(gradforge.compile_project(float32_spec("trend")), "metal",
                           registry=registry)
    assert "trend.metal" in files


@pytest.mark.parametrize("name", examples_for("metal"))
def test_emit_is_deterministic_and_marked(name):
    program = gradforge.compile_project(float32_spec(name))
    first = BACKEND.emit(program, options())
    again = BACKEND.emit(gradforge.compile_project(float32_spec(name)), options())
    assert first == again
    camel = name[0].upper() + name[1:]
    assert set(first) == {f"{name}.metal", f"Sources/{camel}Metal/{camel}MetalTrainer.swift",
                          f"Sources/{camel}Metal/{camel}MetalSource.swift"}
    for rel, text in first.items():
        head = text.splitlines()[:HEADER_LINES]
        assert any(MARKER.search(line) for line in head), rel
    metal = first[f"{name}.metal"]
    assert "double" not in metal and "atomic" not in re.sub(r"//.*", "", metal)
    # the embedded source is exactly the .metal file
    assert metal in first[f"Sources/{camel}Metal/{camel}MetalSource.swift"]


def test_options_are_validated():
    program = gradforge.compile_project(float32_spec("mlp"))
    with pytest.raises(BackendError, match="threadgroup memory"):
        BACKEND.emit(program, options(max_threadgroup_size=1024, reduction_width=16))
    with pytest.raises(ProjectError, match="unknown option"):
        BACKEND.resolve_options({"simd": True})


def test_buffer_indices_agree_between_kernels_and_swift_host():
    program = gradforge.compile_project(float32_spec("mlp"))
    files = BACKEND.emit(program, options())
    model = BACKEND.model(program, options())
    metal = files["mlp.metal"]
    seen: dict[str, int] = {}
    for name, index in re.findall(r"(\w+) \[\[buffer\((\d+)\)\]\]", metal):
        assert seen.setdefault(name, int(index)) == int(index), name
    assert len(set(seen.values())) == len(seen)
    swift = files["Sources/MlpMetal/MlpMetalTrainer.swift"]
    bound = {name: int(i) for name, i in
             re.findall(r"setBuffer\((\w+), offset: 0, index: (\d+)\)", swift)}
    assert bound["parameterBuffer"] == seen["theta"]
    assert bound["gradientBuffer"] == seen["gradient"]
    assert bound["objectiveBuffer"] == seen["objective"]
    assert bound["partialsBuffer"] == seen["partials"]
    assert bound["orderBuffer"] == seen["order"]
    assert re.search(rf"index: {seen['hyper']}\) }}", swift)
    # optimizer states and fields are bound as consecutive runs from their first index
    states = [seen[s["buffer"]] for s in model["states"]]
    fields = [seen[f["buffer"]] for f in model["fields"]]
    assert len(states) == 2 and len(fields) == 2            # adam: m, v; fields x, y
    assert states == list(range(states[0], states[0] + 2))
    assert fields == list(range(fields[0], fields[0] + 2))
    assert f"index: {states[0]} + k" in swift and f"index: {fields[0]} + k" in swift


# ------------------------------------------------------------------- the kernels, on CPU

@pytest.mark.parametrize("name", examples_for("metal"))
def test_metal_file_compiles_as_strict_cxx(name, tmp_path):
    require_shim()
    program = gradforge.compile_project(float32_spec(name))
    for label, opts in (("tree", {}), ("simd", {"simd_reduction": True})):
        path = tmp_path / f"{name}-{label}.metal"
        path.write_text(BACKEND.emit(program, options(**opts))[f"{name}.metal"])
        subprocess.run(["g++", *CXX_FLAGS, "-fsyntax-only", "-x", "c++", f"-I{SHIM_DIR}",
                        str(path)], check=True)


@pytest.mark.parametrize("name", examples_for("metal"))
def test_examples_match_the_reference(name, built):
    spec = float32_spec(name)
    program, exe, _ = built.get(name, spec)
    cases = make_cases(spec, count=len(SAMPLES), samples=SAMPLES, seed=5)
    results = BACKEND.run_built(exe, program, cases, GRIDS)
    assert problems(spec, cases, results) == []


@pytest.mark.parametrize("name", ["huber", "mlp"])
def test_reduction_is_bit_identical_whatever_the_schedule(name, built):
    spec = float32_spec(name)
    program, exe, _ = built.get(name, spec)
    cases = make_cases(spec, count=4, samples=(65, 50), seed=9)
    ascending = BACKEND.run_built(exe, program, cases, GRIDS[1:])
    descending = BACKEND.run_built(exe, program, cases, GRIDS[1:],
                                   env={"GF_SHIM_ORDER": "descending"})
    assert ascending == descending


@pytest.mark.parametrize("name", ["huber", "mlp"])
def test_simd_sum_reduction_matches_the_reference(name, built):
    spec = float32_spec(name)
    program, exe, _ = built.get(f"{name}-simd", spec, simd_reduction=True, reduction_width=3)
    cases = make_cases(spec, count=4, samples=(65, 50, 13, 64), seed=3)
    for width in ("32", "4"):      # 4 lanes: many simdgroups per threadgroup, and more
        env = {"GF_SHIM_SIMD_WIDTH": width}     # simdgroups than lanes at T = 32, 64
        results = BACKEND.run_built(exe, program, cases, GRIDS, env=env)
        assert problems(spec, cases, results) == []
        again = BACKEND.run_built(exe, program, cases, GRIDS,
                                  env={**env, "GF_SHIM_ORDER": "descending"})
        assert again == results


def test_sparse_gradient_and_parameter_only_terms(built):
    spec = ProjectSpec.create(
        name="sparse", precision="float32",
        parameters={"a": 0.5, "b": 0.2, "u": {"shape": [2], "init": 0.1}},
        inputs={"x": {}}, targets={"y": {}}, prediction="a*x",
        loss="(prediction - y)**2 + u[1]*x", regularization="b**2 + u[0]**2",
        reduction="sum", training={"optimizer": "momentum"})
    program, exe, workdir = built.get("sparse", spec)
    assert "sparse_zero_index" in (workdir / "sparse.metal").read_text()
    cases = make_cases(spec, count=4, samples=(50, 65, 13, 0), seed=1)
    assert problems(spec, cases, BACKEND.run_built(exe, program, cases, GRIDS)) == []


def test_metal_and_shim_words_are_escaped(built):
    spec = ProjectSpec.create(
        name="names", precision="float32",
        parameters={"device": 0.5, "sample": 0.2, "half": {"shape": [2], "init": 0.1}},
        inputs={"kernel": {"shape": [2]}, "order": {}}, targets={"threadgroup": {}},
        constants={"buffer": 0.7, "float2": 1.5},
        prediction="device*order + sample + dot(half, kernel)",
        loss="buffer*(prediction - threadgroup)**2 + float2*abs(sample)",
        training={"optimizer": "adam"})
    program, exe, workdir = built.get("names", spec)
    text = (workdir / "names.metal").read_text()
    assert "const float device_ = theta[0];" in text and "constants.float2_" in text
    cases = make_cases(spec, count=4, samples=(50, 65, 13, 1), seed=4)
    assert problems(spec, cases, BACKEND.run_built(exe, program, cases, GRIDS)) == []


@pytest.mark.parametrize("seed", [0, 1, 2])     # sgd, momentum, adam
def test_random_models_match_the_reference(seed, tmp_path):
    require_shim()
    spec = random_project(seed, precision="float32")
    program = gradforge.compile_project(spec)
    cases = make_cases(spec, count=4, samples=(50, 65, 13, 1), seed=seed)
    results = BACKEND.run(program, options(), cases, tmp_path)
    assert problems(spec, cases, results) == []


def test_runner_refuses_threadgroups_beyond_the_kernel_limit(built):
    spec = float32_spec("trend")
    program, exe, _ = built.get("trend", spec)
    cases = make_cases(spec, count=1, samples=(5,))
    with pytest.raises(ToolchainError, match="max_total_threads_per_threadgroup"):
        BACKEND.run_built(exe, program, cases, [(512, 1)])


# ---------------------------------------------------- the shim catches missing barriers

def _without_line(text: str, number: int) -> str:
    lines = text.split("\n")
    assert "threadgroup_barrier" in lines[number]
    del lines[number]
    return "\n".join(lines)


def _caught(spec, program, exe, cases, grids, env) -> bool:
    """True when a broken kernel is exposed: the shim aborts, the numbers are wrong, or they
    change with the scheduling order."""
    try:
        ascending = BACKEND.run_built(exe, program, cases, grids, env=env)
        descending = BACKEND.run_built(exe, program, cases, grids,
                                       env={**env, "GF_SHIM_ORDER": "descending"})
    except ToolchainError:
        return True
    return ascending != descending or bool(problems(spec, cases, ascending)) \
        or bool(problems(spec, cases, descending))


@pytest.mark.parametrize("simd", [False, True])
def test_removing_any_barrier_from_the_reduction_is_caught(simd, built):
    spec = float32_spec("huber")
    opts = {"simd_reduction": True, "reduction_width": 3} if simd else {}
    label = "huber-simd" if simd else "huber"
    program, _, workdir = built.get(label, spec, **opts)
    text = (workdir / "huber.metal").read_text()
    lines = [k for k, line in enumerate(text.split("\n")) if "threadgroup_barrier(" in line]
    assert len(lines) == 2
    cases = make_cases(spec, count=2, samples=(65, 50), seed=2)
    grids = [(32, 2), (64, 1)]
    env = {"GF_SHIM_SIMD_WIDTH": "4"} if simd else {}
    for number in lines:
        broken = workdir / f"broken-{number}"
        broken.mkdir()
        (broken / "huber.metal").write_text(_without_line(text, number))
        (broken / "harness.cpp").write_text((workdir / "harness.cpp").read_text())
        subprocess.run(["g++", *CXX_FLAGS, "-O1", f"-I{SHIM_DIR}", "harness.cpp", "-o",
                        "runner"], cwd=broken, check=True)
        assert _caught(spec, program, broken / "runner", cases, grids, env), \
            f"removing the barrier on line {number + 1} went unnoticed"


SHIM_PROGRAM = r"""
#include <metal_stdlib>
using namespace metal;

kernel void reduce(device const float* input [[buffer(0)]],
                   device float* output [[buffer(1)]],
                   constant uint& mode [[buffer(2)]],
                   uint tid [[thread_index_in_threadgroup]],
                   uint size [[threads_per_threadgroup]])
{
    threadgroup float scratch[64];
    scratch[tid] = input[tid];
    if (mode != 1) {                    // mode 1: the barrier after the store is missing
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (mode == 2 && tid == 3) {        // mode 2: one thread leaves early
        return;
    }
    if (mode == 3 && tid < 2) {         // mode 3: a barrier in divergent control flow
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    for (uint s = size / 2; s > 0; s >>= 1) {
        if (tid < s) {
            scratch[tid] += scratch[tid + s];
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    if (tid == 0) {
        output[0] = scratch[0];
    }
}
#include "metal_shim_end.hpp"
#include <cstdlib>

int main(int argc, char** argv) {
    const uint mode = argc > 1 ? static_cast<uint>(std::atoi(argv[1])) : 0u;
    std::vector<float> input(64), output(1);
    for (uint i = 0; i < 64; ++i) input[i] = static_cast<float>(i + 1);
    gf_shim::dispatch(1, 64, [&](const gf_shim::thread_info& t) {
        reduce(input.data(), output.data(), mode, t.tg_index, t.tg_size);
    });
    std::printf("%g\n", static_cast<double>(output[0]));
    return 0;
}
"""


@pytest.fixture(scope="module")
def shim_program(tmp_path_factory):
    require_shim()
    folder = tmp_path_factory.mktemp("shim")
    (folder / "rules.cpp").write_text(SHIM_PROGRAM)
    subprocess.run(["g++", *CXX_FLAGS, "-O1", f"-I{SHIM_DIR}", "rules.cpp", "-o", "rules"],
                   cwd=folder, check=True)
    return folder / "rules"


def _run(exe, mode, order="ascending"):
    env = dict(os.environ, GF_SHIM_ORDER=order)
    return subprocess.run([str(exe), str(mode)], capture_output=True, text=True, env=env)


def test_shim_runs_a_correct_reduction(shim_program):
    for order in ("ascending", "descending"):
        out = _run(shim_program, 0, order)
        assert out.returncode == 0 and out.stdout.strip() == "2080"


def test_shim_exposes_a_missing_barrier_deterministically(shim_program):
    results = {_run(shim_program, 1).stdout.strip() for _ in range(3)}
    assert len(results) == 1 and results != {"2080"}      # NaN from poisoned memory
    assert "nan" in results.pop().lower()


def test_shim_aborts_when_a_thread_skips_a_barrier(shim_program):
    out = _run(shim_program, 2)
    assert out.returncode == 70 and "reached by 63 of 64 threads" in out.stderr


def test_shim_aborts_on_a_barrier_in_divergent_control_flow(shim_program):
    out = _run(shim_program, 3)
    assert out.returncode == 70 and "divergent control flow" in out.stderr


@pytest.mark.parametrize("body, message", [
    ("double d = 1.0; output[0] = float(d);", "metal_has_no_double"),
    ("output[0] = 1.0f;", "bufer"),
])
def test_shim_rejects_what_metal_rejects(body, message, tmp_path):
    require_shim()
    attribute = "bufer" if message == "bufer" else "buffer"
    (tmp_path / "k.metal").write_text(
        "#include <metal_stdlib>\nusing namespace metal;\n"
        f"kernel void k(device float* output [[{attribute}(0)]]) {{ {body} }}\n")
    out = subprocess.run(["g++", *CXX_FLAGS, "-fsyntax-only", "-x", "c++", f"-I{SHIM_DIR}",
                          "k.metal"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and message in out.stderr


# ------------------------------------------------------------------------ Swift host code

def _swift_sources(tmp_path: Path, names=tuple(examples_for("metal")), **opts) -> list[Path]:
    paths = []
    for name in names:
        program = gradforge.compile_project(float32_spec(name))
        for rel, text in BACKEND.emit(program, options(**opts)).items():
            if rel.endswith(".swift"):
                target = tmp_path / name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                paths.append(target)
    return paths


def test_swift_host_parses(tmp_path):
    swiftc = require_tool("swiftc")
    for name in examples_for("metal"):
        paths = _swift_sources(tmp_path / name, [name], simd_reduction=name == "mlp")
        subprocess.run([swiftc, "-parse", *map(str, paths)], check=True)


def test_swift_host_compiles_to_nothing_without_metal(tmp_path):
    swiftc = require_tool("swiftc")
    paths = _swift_sources(tmp_path, ["huber"])
    subprocess.run([swiftc, "-typecheck", *map(str, paths)], check=True)


PACKAGE = """// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "Trend",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [.library(name: "TrendMetal", targets: ["TrendMetal"])],
    targets: [
        .target(name: "Trend", path: "Sources/Trend"),
        .target(name: "TrendMetal", path: "Sources/TrendMetal"),
    ]
)
"""


def test_metal_target_builds_beside_the_swift_library_on_linux(tmp_path):
    """The Apple-only target in the Swift backend's layout: an empty module off Apple."""
    swift = require_tool("swift")
    program = gradforge.compile_project(float32_spec("trend"))
    for backend in ("swift", "metal"):
        for rel, text in gradforge.emit(program, backend).items():
            if rel.startswith("Sources/Trend/") or rel.startswith("Sources/TrendMetal/"):
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_text(text)
    (tmp_path / "Package.swift").write_text(PACKAGE)
    subprocess.run([swift, "build", "--target", "TrendMetal", "--scratch-path",
                    str(tmp_path / ".build")], cwd=tmp_path, check=True, capture_output=True)


@pytest.fixture(scope="module")
def metal_stub(tmp_path_factory):
    swiftc = require_tool("swiftc")
    folder = tmp_path_factory.mktemp("metal-stub")
    subprocess.run([swiftc, "-emit-module", "-module-name", "Metal", "-parse-as-library",
                    str(SHIM_DIR / "Metal.swift"), "-emit-module-path",
                    str(folder / "Metal.swiftmodule")], check=True, cwd=folder)
    return swiftc, folder


def test_swift_host_typechecks_against_the_metal_api(metal_stub, tmp_path):
    swiftc, stub = metal_stub
    for name in examples_for("metal"):        # one module per example, as in a SwiftPM target
        paths = _swift_sources(tmp_path / name, [name])
        subprocess.run([swiftc, "-typecheck", "-I", str(stub), *map(str, paths)], check=True)


def test_macos_ci_material_typechecks(metal_stub, tmp_path):
    from gradforge_metal.ci import generate
    swiftc, stub = metal_stub
    labels = generate(tmp_path, only={"huber", "huber_simd", "trend", "decay", "boxed_adam"})
    assert labels == ["huber", "trend", "decay", "huber_simd", "boxed_adam"]
    for label in labels:
        assert (tmp_path / label / f"{label}.metal").exists()
    sources = sorted(tmp_path.glob("*/Sources/*/*.swift"))
    subprocess.run([swiftc, "-typecheck", "-I", str(stub), str(tmp_path / "main.swift"),
                    *map(str, sources)], check=True)
    # issue 7 item 5: prediction from inputs alone, checked against the reference on macOS
    assert "predictions from inputs only\", try trainer.predict(x: [" in \
        (tmp_path / "main.swift").read_text()
    # Levenberg–Marquardt on the GPU against the NumPy backend's objective
    assert "levenberg-marquardt objective" in (tmp_path / "main.swift").read_text()
    # bounds with Adam: the GPU's 3 epochs of mini-batches must end where the NumPy backend's
    # do, on the active bounds a = -0.5, b = 0.5, w[0] = 0.25 (so a kernel that does not
    # project fails there)
    check = (tmp_path / "main.swift").read_text().split('"boxed_adam")')[1]
    assert 'close("\\(label) one step", trainer.parameters, [' in check
    assert 'close("\\(label) training", trained, [-0.5, 0.5, 0.25, ' in check


def test_host_predicts_from_inputs_only():
    """Issue 7 item 5: the Metal host's predict takes the inputs alone (no targets)."""
    spec = dataclasses.replace(gradforge.load_project(example_path("huber")), precision="float32")
    program = gradforge.compile_project(spec)
    trainer = gradforge.emit(program, "metal")["Sources/HuberMetal/HuberMetalTrainer.swift"]
    assert "public func predict(x input0: [Float]) throws -> [Float]" in trainer
    assert "y input" not in trainer


# ------------------------------------------------------------------------------ benchmark

def test_benchmark_report_counts_every_model():
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "metal_report.py"
    spec = importlib.util.spec_from_file_location("metal_report", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["metal_report"] = module          # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("metal_report", None)
    text = module.report(100.0, 2.6, 1_000_000, 4.0)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:8]}
    assert set(rows) == {"trend", "huber", "logistic", "mlp", "mlp577"}
    assert rows["mlp577"][1:3] == ["577", "578"]          # params, accumulators
    assert rows["trend"][3] == "12"                        # x, y and the order index


# ------------------------------------------- Levenberg–Marquardt: JᵀJ, Jᵀr, Σr² on the GPU

def _normal_reference(case, residuals, regularizer, num_params, reduction):
    """Σr², Jᵀr and the packed upper JᵀJ in 50-digit mpmath, from hand-written residual
    functions (not the compiler's) and numerical derivatives (mpmath.diff); plus the sums of
    absolute terms, which bound float32 rounding."""
    import mpmath
    mpmath.mp.dps = 50
    P = num_params
    theta = [mpmath.mpf(v) for v in case.params]
    width = 1 + P + P * (P + 1) // 2
    total = [mpmath.mpf(0)] * width
    size = [mpmath.mpf(0)] * width

    def add(values, rows, scale):
        for r, row in zip(values, rows):
            terms = [r * r] + [row[i] * r for i in range(P)] + [
                row[a] * row[b] for a in range(P) for b in range(a, P)]
            for k, term in enumerate(terms):
                total[k] += scale * term
                size[k] += scale * abs(term)

    def rows_of(function, count):
        return [[mpmath.diff(lambda v, i=i, k=k: function(
            theta[:i] + [v] + theta[i + 1:])[k], theta[i]) for i in range(P)]
            for k in range(count)]

    n = case.n
    scale = mpmath.mpf(1) / n if reduction == "mean" and n else mpmath.mpf(1)
    for s in range(n):
        sample = {name: [mpmath.mpf(v) for v in rows[s]] for name, rows in case.data.items()}
        values = residuals(theta, sample)
        add(values, rows_of(lambda t: residuals(t, sample), len(values)), scale)
    if regularizer is not None:
        values = regularizer(theta)
        add(values, rows_of(regularizer, len(values)), mpmath.mpf(1))
    return [float(v) for v in total], [float(v) for v in size]


def _check_normal_equations(spec, residuals, regularizer, built, label, **opts):
    program, exe, _ = built.get(label, spec, **opts)
    assert program.training.method == "levenberg_marquardt"
    cases = make_cases(spec, count=len(SAMPLES), samples=SAMPLES, seed=11)
    from gradforge.protocol import encode_cases
    out = subprocess.run([str(exe), "--normal-equations", *(f"{t}:{g}" for t, g in GRIDS)],
                         input=encode_cases(program, cases), capture_output=True, text=True,
                         check=True).stdout.split()
    P = program.num_params
    width = 1 + P + P * (P + 1) // 2
    assert len(out) == width * len(cases)
    bad = []
    for k, case in enumerate(cases):
        got = [float(v) for v in out[k * width:(k + 1) * width]]
        want, size = _normal_reference(case, residuals, regularizer, P, program.reduction)
        for column, (g, w, s) in enumerate(zip(got, want, size)):
            # float32: per-term rounding (~1e-6 relative) plus the tree's sums over ≤ 65 terms
            if not abs(g - w) <= 2e-5 * s + 1e-30:
                bad.append(f"case {k} (n={case.n}, grid {GRIDS[k % len(GRIDS)]}) column "
                           f"{column}: {g!r} vs {w!r}")
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("simd", [False, True])
def test_lm_normal_equations_match_the_reference(built, simd):
    """decay (mean reduction, exp, a bound): r = amplitude·exp(−rate·t) + baseline − y; the
    threadgroup tree and the simd_sum reduction."""
    import mpmath

    def residuals(theta, sample):
        amplitude, rate, baseline = theta
        return [amplitude * mpmath.exp(-rate * sample["t"][0]) + baseline - sample["y"][0]]
    _check_normal_equations(float32_spec("decay"), residuals, None, built, "decay-lm",
                            simd_reduction=simd)


def test_lm_normal_equations_with_declared_and_regularizer_residuals(built):
    """Two residuals per sample (one parameter-only), the regularizer's residuals added after
    the 1/n, and a parameter (c) no residual reads: its rows and columns stay 0."""
    import mpmath
    spec = gradforge.ProjectSpec.create(
        name="ridge", precision="float32",
        parameters={"w": {"shape": [2], "init": [0.5, -0.25]}, "c": 0.0},
        inputs={"x": {"shape": [2]}}, targets={"y": {}},
        prediction="dot(w, x)", loss="(prediction - y)**2 + 0.5*(w[0] - w[1])**2",
        residuals="[prediction - y, sqrt(0.5)*(w[0] - w[1])]",
        regularization="0.1*dot(w, w)", training={"optimizer": "lm"})

    def residuals(theta, sample):
        w0, w1, _ = theta
        x = sample["x"]
        return [w0 * x[0] + w1 * x[1] - sample["y"][0], mpmath.sqrt(0.5) * (w0 - w1)]

    def regularizer(theta):
        return [mpmath.sqrt(0.1) * theta[0], mpmath.sqrt(0.1) * theta[1]]
    _check_normal_equations(spec, residuals, regularizer, built, "ridge-lm")


def test_lm_normal_equations_are_bit_identical_whatever_the_schedule(built):
    spec = float32_spec("decay")
    program, exe, _ = built.get("decay-lm", spec, simd_reduction=False)
    cases = make_cases(spec, count=4, samples=(65, 50), seed=9)
    from gradforge.protocol import encode_cases
    runs = [subprocess.run([str(exe), "--normal-equations", *(f"{t}:{g}" for t, g in GRIDS[1:])],
                           input=encode_cases(program, cases), capture_output=True, text=True,
                           check=True, env={**os.environ, "GF_SHIM_ORDER": order}).stdout
            for order in ("ascending", "descending")]
    assert runs[0] == runs[1] and len(runs[0].split()) == 4 * 10


def test_lm_refuses_more_parameters_than_the_gpu_accumulates():
    from gradforge_metal.plugin import MAX_LM_PARAMETERS
    count = MAX_LM_PARAMETERS + 1
    spec = gradforge.ProjectSpec.create(
        name="wide", precision="float32",
        parameters={"w": {"shape": [count], "init": [0.0] * count}},
        inputs={"x": {"shape": [count]}}, targets={"y": {}},
        prediction="dot(w, x)", loss="(prediction - y)**2", training={"optimizer": "lm"})
    with pytest.raises(BackendError, match=rf"at most {MAX_LM_PARAMETERS} parameters"):
        BACKEND.emit(gradforge.compile_project(spec), options())


# ------------------------------------- bounds: first-order steps project (issue 9, item 3)

#: full-batch steps the shim runs per case, as the host's train(epochs:) encodes them
ITERATES = 40


def _boxed(optimizer: str, built):
    from gradforge_metal.ci import boxed_spec
    spec = boxed_spec(optimizer)
    program, exe, workdir = built.get(f"boxed-{optimizer}", spec)
    return spec, program, exe, workdir


def _shim_iterates(program, exe, cases) -> list[list[list[float]]]:
    """θ after each of ITERATES full-batch steps per case (harness --iterates), exactly as
    printed (%.17g of the float32 values)."""
    from gradforge.protocol import encode_cases
    out = subprocess.run([str(exe), "--iterates", str(ITERATES),
                          *(f"{t}:{g}" for t, g in GRIDS[1:3])],
                         input=encode_cases(program, cases), capture_output=True, text=True,
                         check=True).stdout.split()
    P = program.num_params
    assert len(out) == len(cases) * ITERATES * P
    values = [float(v) for v in out]
    return [[values[(c * ITERATES + k) * P:(c * ITERATES + k + 1) * P] for k in range(ITERATES)]
            for c in range(len(cases))]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_first_order_steps_stay_in_the_box_and_follow_numpy(optimizer, built):
    """boxed (gradforge_metal.ci.boxed_spec): the unconstrained fit lies outside the box.
    Through the shim, every iterate stays inside the bounds, b and w[0] end exactly on their
    active lower bounds, and the iterates follow the NumPy backend's train() (float32) within
    the conformance tolerance (1e-4 relative); without the bounds the same NumPy training
    leaves the box, so the projection is what keeps it in."""
    import numpy as np
    from gradforge_metal.ci import _numpy_float32
    spec, program, exe, workdir = _boxed(optimizer, built)
    text = (workdir / "boxed.metal").read_text()
    assert "constant float boxed_lower[4] = { -INFINITY, 0.5f, 0.25f, -1.0f };" in text
    assert "constant float boxed_upper[4] = { -0.5f, INFINITY, 4.0f, 1.0f };" in text
    free = dataclasses.replace(spec, parameters=tuple(
        dataclasses.replace(p, lower=None, upper=None) for p in spec.parameters))
    free_program = gradforge.compile_project(free)
    lower, upper = np.array(program.lower), np.array(program.upper)
    cases = make_cases(spec, count=2, samples=(64, 50), seed=3)
    worst = 0.0
    for c, (case, iterates) in enumerate(zip(cases, _shim_iterates(program, exe, cases))):
        got = np.array(iterates)
        assert np.all(got >= lower) and np.all(got <= upper), got
        assert got[-1][1] == 0.5 and got[-1][2] == 0.25, got[-1]
        module, params, data = _numpy_float32(program, case, f"_boxed_{optimizer}_{c}")
        for k in range(ITERATES):
            want = module.flatten(module.train(params, data, case.constants, epochs=k + 1,
                                               batch_size=0).params).astype(float)
            error = float(np.max(np.abs(got[k] - want)) / max(1.0, np.max(np.abs(want))))
            assert error <= 1e-4, (k, got[k], want)
            worst = max(worst, error)
        free_module, params, data = _numpy_float32(free_program, case, f"_free_{optimizer}_{c}")
        escaped = free_module.flatten(free_module.train(params, data, case.constants,
                                                        epochs=ITERATES, batch_size=0).params)
        assert np.any(escaped < lower) or np.any(escaped > upper), escaped
    print(f"boxed {optimizer}: worst relative difference from NumPy over {ITERATES} "
          f"iterates: {worst:.3g}")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_one_projected_step_matches_the_reference(optimizer, built):
    """The protocol's one step is the projected step: the independent reference's step
    (mpmath, projected onto the box), on cases that start on a bound and step across it."""
    spec, program, exe, _ = _boxed(optimizer, built)
    cases = make_cases(spec, count=len(SAMPLES), samples=SAMPLES, seed=7)
    results = BACKEND.run_built(exe, program, cases, GRIDS)
    reference = Reference(spec)
    bad, clipped = [], 0
    for k, (case, result) in enumerate(zip(cases, results)):
        want = reference.expected(case)
        raw = reference.step_mp(case.params, reference.gradient_mp(case), project=False)
        clipped += list(want.stepped) != [float(v) for v in raw]
        bad += [f"case {k}: {p}" for p in compare(result, want, "float32")]
        assert all(lo <= v <= hi for v, lo, hi in zip(result.stepped, program.lower,
                                                        program.upper)), result.stepped
    assert bad == []
    assert clipped >= 2, "no case's step crossed a bound: the clip went untested"


def test_first_order_training_checks_the_start_is_inside_the_bounds():
    """The host refuses a start outside the box, as every backend does (and emits no bound
    arrays for an unbounded model)."""
    from gradforge_metal.ci import boxed_spec
    files = gradforge.emit(gradforge.compile_project(boxed_spec("adam")), "metal")
    trainer = files["Sources/BoxedMetal/BoxedMetalTrainer.swift"]
    assert trainer.count("try checkInsideBounds(parameters)") == 2
    plain = gradforge.emit(gradforge.compile_project(float32_spec("trend")), "metal")
    assert "trend_lower" not in plain["trend.metal"]
