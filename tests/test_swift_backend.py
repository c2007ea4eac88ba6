"""The Swift backend: the emitted SwiftPM package, its numbers against the independent
reference, the generated package's own XCTest suite, the CSV trainer, reserved-word escaping
and determinism.

Every example (plus a float32 variant of a float64 one and a project full of Swift keywords)
is built once per module with ``swift build -c release -Xswiftc -warnings-as-errors`` through
the backend's ``run`` and checked on several cases per build; ``swift test`` runs for the trend
example only (debug builds are slow). Without ``swift`` these tests skip, or fail when CI=true.
"""
from __future__ import annotations

import csv
import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

import gradforge
from gradforge.backend import Case
from gradforge.errors import BackendError, ProjectError
from gradforge.reference import Reference
from gradforge.verification import TOLERANCE, compare, make_cases
from gradforge.writer import MARKER

from conftest import examples_for, ROOT, example_path, require_tool
from test_conformance import boxed_decay_spec

EXAMPLES_DIR = ROOT / "examples"

from gradforge_swift.plugin import SwiftBackend, module_name, swift_build_command, \
    swiftpm_options
from gradforge_swift.printer import MAX_TERMS, SwiftPrinter

BACKEND = SwiftBackend()

# A project whose names are Swift keywords, stdlib names or names of the generated API (in
# float32, so that the Float flavour of the generated XCTest target is compiled too).
KEYWORDS_PROJECT = """\
[project]
name = "keywords"
precision = "float32"

[parameters]
self = 0.5
func = { shape = [2], init = [0.1, -0.2] }
gradient = 0.3
Type = 0.2
count = 0.1
shapeProblem = 0.2

[inputs]
let = { shape = [2] }
Double = {}
inputs = {}

[targets]
struct = {}

[constants]
static = 1.5
flat = 0.01

[model.definitions]
var = "self*let[0] + func[0]*let[1] + func[1]*Double"

[model]
prediction = "var + gradient*tanh(Type*Double) + count + shapeProblem*inputs"
loss = "where(abs(prediction - struct) <= static, 0.5*(prediction - struct)**2, static*(abs(prediction - struct) - 0.5*static))"
regularization = "flat*(self**2 + dot(func, func))"
reduction = "sum"

[training]
optimizer = "sgd"
learning_rate = 0.01
epochs = 3
batch_size = 4
seed = 11
"""


# --------------------------------------------------------------------------- helpers

def spec_for(subject: str, tmp_dir: Path):
    """``example``, ``example@float32`` or ``keywords`` → ProjectSpec."""
    if subject == "keywords":
        path = tmp_dir / "keywords" / "project.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(KEYWORDS_PROJECT, encoding="utf-8")
        return gradforge.load_project(path)
    name, _, precision = subject.partition("@")
    spec = gradforge.load_project(example_path(name))
    return dataclasses.replace(spec, precision=precision) if precision else spec


def swift_run(args: list, cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def load_csv(path: Path, program) -> dict[str, tuple[tuple[float, ...], ...]]:
    """data.csv columns ``name`` or ``name[i]`` grouped per field, in the program's order."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    head, body = rows[0], rows[1:]
    data = {}
    for f in program.fields:
        names = [f.name] if not f.shape else [f"{f.name}[{k}]" for k in range(f.size)]
        columns = [head.index(n) for n in names]
        data[f.name] = tuple(tuple(float(row[i]) for i in columns) for row in body)
    return data


def parse_trainer(output: str) -> tuple[float, float, dict[str, list[float]]]:
    """(initial objective, final objective, {parameter: values}) from `<name>-train`."""
    initial = float(re.search(r"^initial objective: (\S+)$", output, re.M).group(1))
    final = float(re.search(r"^final objective: (\S+)$", output, re.M).group(1))
    block = output.split("trained parameters:\n", 1)[1].split("final objective:", 1)[0]
    params = {}
    for line in block.strip().splitlines():
        name, value = line.split(" = ", 1)
        params[name] = [float(v) for v in value.strip("[]").split(",")]
    return initial, final, params


# ------------------------------------------------------------------ builds (one each)

SUBJECTS = examples_for("swift") + ["huber@float32", "keywords"]


@pytest.fixture(scope="module")
def swift():
    return require_tool("swift")


@pytest.fixture(scope="module")
def built(swift, tmp_path_factory):
    """subject → (spec, program, cases, results, workdir); each package is built once."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("swift_backend")

    def get(subject: str):
        if subject not in cache:
            spec = spec_for(subject, root)
            program = gradforge.compile_project(spec)
            cases = make_cases(spec, count=3, samples=(1, 13, 50), seed=3)
            cases.append(Case(cases[0].params, {f.name: () for f in spec.fields},
                              cases[0].constants))          # no samples at all
            workdir = root / subject.replace("@", "_")
            results = BACKEND.run(program, BACKEND.resolve_options({}), cases, workdir)
            cache[subject] = (spec, program, cases, results, workdir)
        return cache[subject]
    return get


@pytest.mark.toolchain
@pytest.mark.parametrize("subject", SUBJECTS)
def test_numbers_match_reference(built, subject):
    """Objective, gradient, predictions and one optimizer step vs the 50-digit reference,
    within 1e-9 (float64) / 1e-4 (float32) relative."""
    spec, program, cases, results, _ = built(subject)
    reference = Reference(spec)
    problems = []
    for i, (case, result) in enumerate(zip(cases, results)):
        problems += [f"case {i}: {p}" for p in compare(result, reference.expected(case),
                                                        program.precision)]
    assert not problems, "\n".join(problems[:20])


@pytest.mark.toolchain
def test_generated_package_tests_pass(built):
    """`swift test` on the emitted package (its XCTest target) for the trend example."""
    _, program, _, _, workdir = built("trend")
    package, scratch = workdir / "package", workdir / "swift-build"
    proc = swift_run(["swift", "test", *swiftpm_options(package, scratch, workdir / "swift-cache"),
                      "-Xswiftc", "-warnings-as-errors"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert re.search(r"Executed [1-9]\d* tests?, with 0 failures", proc.stdout + proc.stderr)


def build_trainer(program, workdir: Path) -> Path:
    package, scratch = workdir / "package", workdir / "swift-build"
    proc = swift_run(swift_build_command(package, scratch, workdir / "swift-cache")
                     + ["--product", f"{program.name}-train"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return scratch / "release" / f"{program.name}-train"


@pytest.mark.toolchain
def test_csv_trainer_reduces_objective(built):
    """`trend-train examples/trend/data.csv`: the objective falls, the printed final objective
    is the reference objective at the printed parameters, and a rerun prints the same."""
    spec, program, _, _, workdir = built("trend")
    trainer = build_trainer(program, workdir)
    data_csv = ROOT / "examples" / "trend" / "data.csv"
    first = swift_run([trainer, data_csv])
    assert first.returncode == 0, first.stderr
    initial, final, params = parse_trainer(first.stdout)
    assert final < 0.5 * initial
    theta = tuple(v for p in program.parameters for v in params[p.name])
    case = Case(theta, load_csv(data_csv, program), {})
    want = float(Reference(spec).objective_mp(case))
    assert abs(final - want) <= TOLERANCE["float64"] * abs(want)
    assert swift_run([trainer, data_csv]).stdout == first.stdout      # deterministic


@pytest.mark.toolchain
def test_trainer_batches_match_numpy_backend(built):
    """Same seed, same mini-batches: the Swift trainer ends where the NumPy backend's
    `train` ends (SplitMix64 + Fisher-Yates, not reseeded per epoch, last batch shorter)."""
    numpy = pytest.importorskip("numpy")
    from gradforge_numpy.plugin import load_module

    spec, program, _, _, workdir = built("trend")
    trainer = build_trainer(program, workdir)
    data_csv = ROOT / "examples" / "trend" / "data.csv"
    refused = swift_run([trainer, data_csv, "--batch-size", "10"])    # trend trains with lbfgs
    assert refused.returncode != 0 and "--batch-size applies to" in refused.stderr, refused
    out = swift_run([trainer, data_csv, "--optimizer", "adam", "--learning-rate", "0.05",
                     "--batch-size", "10", "--epochs", "7", "--seed", "99"])
    assert out.returncode == 0, out.stderr
    _, _, params = parse_trainer(out.stdout)
    adam = dataclasses.replace(spec, training=dataclasses.replace(
        spec.training, optimizer="adam", learning_rate=0.05))
    source = workdir / "trend_numpy.py"
    source.write_text(gradforge.emit(gradforge.compile_project(adam), "numpy")["trend.py"],
                      encoding="utf-8")
    module = load_module(source, "_swift_test_trend_numpy")
    data = {k: numpy.array(v)[:, 0] for k, v in load_csv(data_csv, program).items()}
    want = module.train(module.init_params(), data, epochs=7, batch_size=10, seed=99).params
    for name, values in params.items():
        assert values[0] == pytest.approx(float(want[name]), rel=1e-9, abs=1e-12), name


@pytest.mark.toolchain
def test_keywords_project_compiles_everywhere(built, tmp_path):
    """Names such as self, func, Type, gradient, count, let, struct are escaped consistently in
    the library, its tests and the trainer (which reads the original column names)."""
    spec, program, _, _, workdir = built("keywords")
    package, scratch = workdir / "package", workdir / "swift-build"
    proc = swift_run(["swift", "build", *swiftpm_options(package, scratch, workdir / "swift-cache"),
                      "--target", "KeywordsTests", "-Xswiftc", "-warnings-as-errors"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    trainer = build_trainer(program, workdir)
    rows = ["let[0],let[1],Double,inputs,struct"] + [
        f"{0.1 * k:.2f},{0.3 - 0.05 * k:.2f},{0.02 * k * k:.3f},{0.5 - 0.1 * k:.2f},{1 - 0.1 * k:.2f}"
        for k in range(9)]
    data_csv = tmp_path / "keywords.csv"
    data_csv.write_text("\n".join(rows) + "\n")
    out = swift_run([trainer, data_csv, "--epochs", "20", "--constant", "static=2"])
    assert out.returncode == 0, out.stderr
    initial, final, params = parse_trainer(out.stdout)
    assert final < initial
    assert set(params) == {"self_", "func_", "gradient_", "Type_", "count_", "shapeProblem_"}
    missing = swift_run([trainer, data_csv, "--constant", "nope=1"])
    assert missing.returncode == 2 and "unknown constant nope" in missing.stderr


# ------------------------------------------- two models in one app (Swift 6, release)

#: A model whose domain excludes the old synthetic data (uniform in [-1, 1]): s near -km is a
#: pole and 1 + prediction < 0 has no log. Its generated XCTests must still pass.
MICHAELIS_PROJECT = """\
[project]
name = "michaelis"

[parameters]
vmax = 1.5
km = 0.3

[inputs]
s = {}

[targets]
v = {}

[model]
prediction = "vmax*s/(km + s)"
loss = "(log(1 + prediction) - log(1 + v))**2"

[backends.swift]
"""

APP_MANIFEST = """\
// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "App",
    dependencies: [
        .package(path: "../huber/build/swift/Huber"),
        .package(path: "../michaelis/build/swift/Michaelis"),
    ],
    targets: [
        .executableTarget(name: "App", dependencies: [
            .product(name: "Huber", package: "Huber"),
            .product(name: "Michaelis", package: "Michaelis"),
        ], path: "Sources/App"),
    ],
    swiftLanguageModes: [.v6]
)
"""

APP_MAIN = """\
import Foundation
import Huber
import Michaelis

switch CommandLine.arguments.dropFirst().first ?? "" {
case "predict":
    // inputs only: no targets anywhere
    let huber = HuberModel.predict(HuberParameters(), on: HuberInputs(x: [0.5, -1.0, 0.25, 2.0, -0.3, 0.1, 1.5, -0.7]))
    let michaelis = MichaelisModel.predict(MichaelisParameters(), on: MichaelisInputs(s: [0.5, 2.0]))
    print((huber + michaelis).map { "\\($0)" }.joined(separator: " "))
case "objective-short-array":
    var parameters = HuberParameters()
    parameters.w = [1.0]
    print(HuberModel.objective(parameters, on: HuberData(x: [1, 2, 3, 4], y: [1])))
case "predict-long-array":
    var parameters = HuberParameters()
    parameters.w = [1, 2, 3, 4, 5]
    print(HuberModel.predict(parameters, on: HuberInputs(x: [1, 2, 3, 4])))
case "decode-short-array":
    do {
        _ = try JSONDecoder().decode(HuberParameters.self, from: Data(#"{"w": [1, 2], "b": 0}"#.utf8))
        print("decoded")
    } catch {
        print("refused: \\(error)")
    }
default:
    print("usage: App predict|objective-short-array|predict-long-array|decode-short-array")
}
"""

SWIFT6 = ["-Xswiftc", "-swift-version", "-Xswiftc", "6"]


@pytest.fixture(scope="module")
def two_models(swift, tmp_path_factory):
    """Huber and a Michaelis-Menten model, each built into its default folder (as a user would,
    with `gradforge build`), plus an app package that depends on both."""
    root = tmp_path_factory.mktemp("two_models")
    (root / "huber").mkdir()
    for name in ("project.toml", "data.csv"):
        (root / "huber" / name).write_text((EXAMPLES_DIR / "huber" / name).read_text())
    (root / "michaelis").mkdir()
    (root / "michaelis" / "project.toml").write_text(MICHAELIS_PROJECT)
    for model in ("huber", "michaelis"):
        gradforge.build(root / model / "project.toml", backends=["swift"])
    app = root / "app"
    (app / "Sources" / "App").mkdir(parents=True)
    (app / "Package.swift").write_text(APP_MANIFEST)
    (app / "Sources" / "App" / "main.swift").write_text(APP_MAIN)
    return root


@pytest.mark.toolchain
def test_two_models_in_one_app_swift6_release(two_models):
    """Issue 7 item 6: both default packages resolve side by side (distinct identities), build
    in Swift 6 language mode in release, predict from inputs only (item 5), and a parameter
    array of the wrong length stops `objective`/`predict` (no out-of-bounds read) and fails
    decoding."""
    app = two_models / "app"
    scratch, cache = two_models / "app-build", two_models / "app-cache"
    proc = swift_run(["swift", "build", *swiftpm_options(app, scratch, cache), "-c", "release",
                      *SWIFT6, "-Xswiftc", "-warnings-as-errors"], timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    binary = scratch / "release" / "App"

    out = swift_run([binary, "predict"])
    assert out.returncode == 0, out.stderr
    got = [float(v) for v in out.stdout.split()]
    want = []
    for model, inputs in (("huber", {"x": ((0.5, -1.0, 0.25, 2.0), (-0.3, 0.1, 1.5, -0.7))}),
                          ("michaelis", {"s": ((0.5,), (2.0,))})):
        spec = gradforge.load_project(two_models / model / "project.toml")
        program = gradforge.compile_project(spec)
        theta = tuple(v for p in program.parameters for v in p.init)
        n = len(next(iter(inputs.values())))
        data = {f.name: inputs.get(f.name, ((0.0,) * f.size,) * n) for f in program.fields}
        want += Reference(spec).expected(Case(theta, data, {})).predictions
    assert got == pytest.approx(want, rel=1e-12)

    for case in ("objective-short-array", "predict-long-array"):
        # release builds drop precondition messages: the run must stop before printing a
        # number read out of bounds (it used to print one and exit 0)
        bad = swift_run([binary, case])
        assert bad.returncode != 0 and bad.stdout == "", (case, bad.stdout)
    decoded = swift_run([binary, "decode-short-array"])
    assert decoded.returncode == 0 and decoded.stdout.startswith("refused:"), decoded.stdout
    assert "w needs 4 values" in decoded.stdout


@pytest.mark.toolchain
def test_generated_tests_respect_the_domain(two_models):
    """Issue 7 item 6: `swift test` passes for a model whose domain excludes data in [-1, 1]
    (the generated XCTests pick synthetic data where the objective is finite)."""
    package = two_models / "michaelis" / "build" / "swift" / "Michaelis"
    scratch = two_models / "michaelis-build"
    proc = swift_run(["swift", "test", *swiftpm_options(package, scratch, two_models / "cache")])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert re.search(r"Executed [1-9]\d* tests?, with 0 failures", output)


@pytest.mark.toolchain
def test_csv_trainer_swift6_crlf_and_empty(two_models, tmp_path):
    """Issue 7 item 6: the CSV trainer compiles in Swift 6 language mode without warnings,
    reads CRLF files (blank CRLF lines too), and refuses a header-only file with status 2."""
    package = two_models / "michaelis" / "build" / "swift" / "Michaelis"
    scratch = two_models / "michaelis-build"
    proc = swift_run(swift_build_command(package, scratch, two_models / "cache", "debug")
                     + ["--product", "michaelis-train", *SWIFT6])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    trainer = scratch / "debug" / "michaelis-train"
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"s,v\r\n0.5,0.9\r\n1.0,1.1\r\n\r\n2.0,1.3\r\n")
    out = swift_run([trainer, crlf, "--epochs", "3"])
    assert out.returncode == 0, out.stderr
    assert "samples: 3" in out.stdout
    header_only = tmp_path / "header.csv"
    header_only.write_bytes(b"s,v\r\n")
    empty = swift_run([trainer, header_only])
    assert empty.returncode == 2 and "has a header but no samples" in empty.stderr, empty


#: A domain no default candidate reaches (x > 5): only the declared range makes it testable.
SHIFTED_PROJECT = """\
[project]
name = "shifted"

[parameters]
a = 1.0

[inputs]
x = { range = [6, 9] }

[targets]
y = { range = [0.5, 2] }

[model]
prediction = "a*log(x - 5)"
loss = "(prediction - log(y))**2"

[backends.swift]
"""


def test_generated_tests_use_declared_ranges_first(tmp_path):
    path = tmp_path / "shifted" / "project.toml"
    path.parent.mkdir()
    path.write_text(SHIFTED_PROJECT)
    tests = gradforge.emit(gradforge.load_program(path), "swift")[
        "Tests/ShiftedTests/ShiftedTests.swift"]
    ranges = tests.split("candidateRanges: [[(Double, Double)]] = [", 1)[1]
    assert ranges.lstrip().startswith("[(6.0, 9.0), (0.5, 2.0)],")


@pytest.mark.toolchain
def test_generated_tests_pass_inside_declared_ranges(swift, tmp_path):
    """`swift test` on a model defined only for x > 5: the XCTests draw from `range`."""
    path = tmp_path / "shifted" / "project.toml"
    path.parent.mkdir()
    path.write_text(SHIFTED_PROJECT)
    gradforge.build(path, backends=["swift"])
    package = path.parent / "build" / "swift" / "Shifted"
    proc = swift_run(["swift", "test", *swiftpm_options(package, tmp_path / "scratch",
                                                        tmp_path / "cache")])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert re.search(r"Executed [1-9]\d* tests?, with 0 failures", output)


# --------------------------------------------------------------- no toolchain needed

@pytest.mark.parametrize("example", examples_for("swift"))
def test_emit_is_deterministic_and_marked(example):
    program = gradforge.load_program(example_path(example))
    files = gradforge.emit(program, "swift")
    assert files == gradforge.emit(gradforge.load_program(example_path(example)), "swift")
    module = module_name(program, {})
    assert set(files) == {
        "Package.swift", f"Sources/{module}/{module}.swift",
        f"Sources/{module}/{module}Kernels.swift", f"Sources/{module}/{module}Training.swift",
        f"Sources/{module}/{module}ParamsFile.swift",
        f"Sources/{module}Train/main.swift", f"Tests/{module}Tests/{module}Tests.swift"}
    for rel, text in files.items():
        assert any(MARKER.search(line) for line in text.splitlines()[:5]), rel
        assert "Foundation" not in re.sub(r"//.*", "", text), rel
    package = files["Package.swift"].splitlines()
    assert package[0] == "// swift-tools-version:5.9"
    assert MARKER.search(package[1])
    assert "platforms: [.iOS(.v15), .macOS(.v12)]" in files["Package.swift"]
    assert "Verify" not in files["Package.swift"]     # the harness lives in run()'s copy only
    library = files[f"Sources/{module}/{module}Kernels.swift"]
    assert "#if canImport(Darwin)\nimport Darwin\n#elseif canImport(Glibc)\nimport Glibc\n" \
           "#elseif canImport(Musl)\nimport Musl\n#endif" in library


@pytest.mark.parametrize("example", examples_for("swift"))
def test_public_api_is_documented(example):
    program = gradforge.load_program(example_path(example))
    module = module_name(program, {})
    for rel, text in gradforge.emit(program, "swift").items():
        if not rel.startswith(f"Sources/{module}/"):
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s*public\b", line):
                j = i - 1
                while lines[j].strip().startswith("@"):
                    j -= 1
                assert lines[j].strip().startswith("///"), f"{rel}:{i + 1}: {line.strip()}"


def test_float32_output_has_no_double():
    program = gradforge.load_program(example_path("logistic"))
    assert program.precision == "float32"
    files = gradforge.emit(program, "swift")
    for rel, text in files.items():
        if rel.startswith("Sources/Logistic/"):
            assert "Double" not in text, rel


def test_keywords_are_escaped(tmp_path):
    spec = spec_for("keywords", tmp_path)
    files = gradforge.emit(gradforge.compile_project(spec), "swift")
    library = files["Sources/Keywords/Keywords.swift"]
    for name in ("self_", "func_", "gradient_", "Type_", "count_", "let_", "Double_", "struct_",
                 "static_", "flat_", "inputs_", "shapeProblem_"):
        assert f"public var {name}:" in library or f"internal(set) var {name}:" in library, name
    assert not re.search(r"\bvar (self|func|Type|let|struct|static):", library)


def test_module_option():
    program = gradforge.load_program(example_path("trend"))
    files = gradforge.emit(program, "swift", {"module": "StoryCurve"})
    assert "Sources/StoryCurve/StoryCurve.swift" in files
    assert "public struct StoryCurveParameters" in files["Sources/StoryCurve/StoryCurve.swift"]
    for bad in ("Swift", "not-an-identifier", "struct"):
        with pytest.raises(ProjectError):
            gradforge.emit(program, "swift", {"module": bad})


def test_long_sums_become_short_typed_statements():
    import sympy as sp
    xs = sp.symbols("a0:40", real=True)
    printer = SwiftPrinter({"scalar": "Double"})
    lines = printer.statement("let total: Double = ", sp.Add(*[x * x for x in xs]))
    assert lines[-1].startswith("let total: Double = ")
    assert all(line.count(" + ") < MAX_TERMS for line in lines)
    assert all(re.match(r"let _s\d+: Double = ", line) for line in lines[:-1])
    assert printer.expression(-xs[0] * xs[1]) == "-a0*a1"


def test_glued_operators_are_refused():
    with pytest.raises(BackendError):
        SwiftPrinter.check("a*-b")
    SwiftPrinter.check("a*(-b) + 1.0e-8 - c")


def test_toolchain_reported():
    (tool,) = BACKEND.toolchains()
    assert tool.name == "swift"


# ------------------------------------------------- bounds: the one step projects (issue 9)

BOXED_MAIN = """\
import BoxedDecay

// theta (4 values) then gradient (4 values) as arguments; one step of each optimizer
let values = CommandLine.arguments.dropFirst().map { Double($0)! }
let theta = Array(values[0..<4]), gradient = Array(values[4..<8])
var sgd = BoxedDecaySGD(learningRate: 0.1)
var momentum = BoxedDecayMomentum(learningRate: 0.1)
var adam = BoxedDecayAdam(learningRate: 0.1)
var a = theta, b = theta, c = theta
sgd.step(&a, gradient: gradient)
momentum.step(&b, gradient: gradient)
adam.step(&c, gradient: gradient)
var shaped = BoxedDecayParameters(flat: theta)
var again = BoxedDecaySGD(learningRate: 0.1)
again.step(&shaped, gradient: BoxedDecayParameters(flat: gradient))
for row in [a, b, c, shaped.flat] {
    print(row.map { "\\($0)" }.joined(separator: " "))
}
"""


@pytest.mark.toolchain
def test_every_optimizer_step_projects_onto_the_bounds(swift, tmp_path):
    """The public `step` of SGD, momentum and Adam (flat and shaped) in a bounded project:
    an app built against the package (Swift 6, release, warnings as errors) takes one step
    of each from cases whose raw step leaves the box; every result equals the 50-digit
    reference's projected step within the float64 tolerance and lies in the box, a NaN
    gradient element stays NaN, and a free element is left alone."""
    spec = boxed_decay_spec()
    program = gradforge.compile_project(spec)
    package = tmp_path / "BoxedDecay"
    for name, text in gradforge.emit(program, "swift").items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    app = tmp_path / "app"
    (app / "Sources" / "App").mkdir(parents=True)
    (app / "Package.swift").write_text(APP_MANIFEST.replace(
        '        .package(path: "../huber/build/swift/Huber"),\n', "").replace(
        '        .product(name: "Huber", package: "Huber"),\n', "").replace(
        "Michaelis", "BoxedDecay").replace("../michaelis/build/swift/BoxedDecay", "../BoxedDecay"))
    (app / "Sources" / "App" / "main.swift").write_text(BOXED_MAIN)
    scratch = tmp_path / "app-build"
    proc = swift_run(["swift", "build", *swiftpm_options(app, scratch, tmp_path / "cache"),
                      "-c", "release", *SWIFT6, "-Xswiftc", "-warnings-as-errors"], timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    binary = scratch / "release" / "App"
    references = {kind: Reference(boxed_decay_spec(kind)) for kind in ("sgd", "momentum", "adam")}
    tol = TOLERANCE["float64"]
    crossed = 0
    for case in make_cases(spec, count=3, samples=(13, 50, 65), seed=1):
        grad = references["sgd"].gradient_mp(case)
        out = swift_run([binary, *(repr(float(v)) for v in (*case.params, *grad))])
        assert out.returncode == 0, out.stderr
        rows = [[float(v) for v in line.split()] for line in out.stdout.splitlines()]
        assert len(rows) == 4 and all(len(row) == 4 for row in rows), out.stdout
        for kind, got in zip(("sgd", "momentum", "adam", "sgd"), rows):
            want = [float(v) for v in references[kind].step_mp(case.params, grad)]
            raw = [float(v) for v in references[kind].step_mp(case.params, grad, project=False)]
            crossed += want != raw
            assert all(abs(g - w) <= tol * max(1.0, abs(w)) for g, w in zip(got, want)), \
                (kind, got, want)
            assert all(lo <= g <= hi for g, lo, hi in zip(got, program.lower, program.upper))
            assert got[0] == pytest.approx(raw[0], rel=tol)       # amplitude stays free
    assert crossed >= 6, "too few steps crossed a bound: the projection went untested"
    out = swift_run([binary, "0.5", "0.0", "0.05", "0.0", "nan", "1.0", "-1.0", "-1.0"])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4, out.stderr
    for line in out.stdout.splitlines():
        got = [float(v) for v in line.split()]
        assert got[0] != got[0] and got[1:] == [0.0, 0.05, 0.02], line
