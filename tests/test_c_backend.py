"""The C backend: strict compilation, numbers against the independent reference, the training
loop against the NumPy backend's, determinism, and reserved-word escaping.

Every build goes through gcc with ``-std=c99 -Wall -Wextra -pedantic -Werror`` (plus
``-Wdouble-promotion -Wconversion`` for float32). Builds are shared per module so the whole file
stays within a few seconds per example.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
import subprocess
import sys

import pytest

import gradforge
from gradforge.lower import compile_project
from gradforge.verification import compare, make_cases

from conftest import examples_for, example_path, require_tool

from gradforge.reference import Reference

from gradforge_c.plugin import CBackend, compile_flags

PRECISIONS = ("float64", "float32")
BACKEND = CBackend()


@pytest.fixture(scope="module")
def gcc():
    return require_tool("gcc")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("c_backend")


def spec_for(example: str, precision: str):
    """The example's project, in ``precision`` (float32 variants of float64 examples too)."""
    return dataclasses.replace(gradforge.load_project(example_path(example)), precision=precision)


def load_csv(example: str, program) -> dict[str, list[tuple[float, ...]]]:
    """data.csv columns ``name`` or ``name[i]`` grouped per field, in the program's order."""
    with open(example_path(example).parent / "data.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    head, body = rows[0], rows[1:]
    data = {}
    for f in program.fields:
        columns = [i for i, h in enumerate(head) if h == f.name or h.startswith(f.name + "[")]
        assert len(columns) == f.size, (f.name, head)
        data[f.name] = [tuple(float(row[i]) for i in columns) for row in body]
    return data


_references: dict[str, Reference] = {}


def expected(spec, case):
    """Reference values for ``case``; one Reference per project (precision does not matter)."""
    key = repr((spec.name, spec.parameters, spec.fields, spec.constants, spec.model))
    if key not in _references:
        _references[key] = Reference(spec)
    return _references[key].expected(case)


def check_against_reference(spec, workdir, count=4):
    program = compile_project(spec)
    cases = make_cases(spec, count=count, samples=(1, 13, 50, 0)[:count], seed=11)
    results = BACKEND.run(program, {}, cases, workdir)
    problems = []
    for k, (result, case) in enumerate(zip(results, cases)):
        problems += [f"case {k} (n={case.n}): {p}"
                     for p in compare(result, expected(spec, case), spec.precision)]
    assert not problems, "\n".join(problems)
    return program


# ----------------------------------------------------------------- compilation and numbers

@pytest.mark.toolchain
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("example", examples_for("c"))
def test_example_compiles_strictly_and_matches_reference(gcc, scratch, example, precision):
    """run() builds under the strict flags (-Werror) and agrees with the reference,
    including a single-sample and an empty data set."""
    check_against_reference(spec_for(example, precision), scratch / f"{example}_{precision}")


@pytest.mark.toolchain
@pytest.mark.parametrize("precision", PRECISIONS)
def test_random_models_match_reference(gcc, scratch, precision):
    """Random models over the whole vocabulary (Piecewise, sign, pow, trig …), every optimizer."""
    from random_models import random_project
    for seed in (1, 3, 5, 8):
        spec = random_project(seed, precision=precision, depth=3)
        check_against_reference(spec, scratch / f"random_{seed}_{precision}", count=2)


@pytest.mark.toolchain
def test_header_compiles_as_cxx(gcc, scratch):
    """The header is usable from C++ (extern "C", no C++ keywords as names)."""
    gxx = require_tool("g++")
    program = gradforge.load_program(example_path("mlp"))
    folder = scratch / "cxx"
    folder.mkdir()
    (folder / "mlp.h").write_text(gradforge.emit(program, "c")["mlp.h"])
    (folder / "main.cpp").write_text(
        '#include "mlp.h"\nint main() { mlp_constants c = MLP_DEFAULT_CONSTANTS; (void)c;\n'
        '  return MLP_NUM_PARAMS == 41 ? 0 : 1; }\n')
    subprocess.run([gxx, "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o",
                    str(folder / "main"), str(folder / "main.cpp")], check=True)
    assert subprocess.run([str(folder / "main")]).returncode == 0


# ----------------------------------------------------------------------- training loop

def numpy_train(program, data, tmp_path, **settings):
    import numpy as np
    from gradforge_numpy.plugin import load_module
    path = tmp_path / f"np_{program.name}_{program.precision}.py"
    path.write_text(gradforge.emit(program, "numpy")[f"{program.name}.py"])
    module = load_module(path, f"_c_test_{program.name}_{program.precision}")
    arrays = {f.name: np.array(data[f.name]).reshape((-1,) + f.shape) for f in program.fields}
    return [float(v) for v in module.flatten(module.train(module.init_params(), arrays,
                                                          **settings).params)]


def assert_close(got, want, rtol, what):
    scale = max([abs(w) for w in want] + [1e-300])
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want))
           if abs(g - w) > rtol * max(abs(w), scale)]
    assert not bad, f"{what}: (index, C, NumPy) {bad[:5]}"


@pytest.mark.toolchain
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("example", examples_for("c"))
def test_training_matches_numpy_and_reduces_objective(gcc, scratch, example, precision):
    """<name>_train on data.csv with the project's epochs/batch size/seed: the same batches
    and steps as the NumPy backend's train(), and J goes down."""
    program = compile_project(spec_for(example, precision))
    data = load_csv(example, program)
    folder = scratch / f"train_{example}_{precision}"
    run = BACKEND.train(program, data, folder)
    assert run.reason in ("max_iterations", "gradient_tolerance", "objective_tolerance"), run
    assert run.objective_after < 0.8 * run.objective_before, run
    tol = 1e-10 if precision == "float64" else 1e-3
    assert run.value_before == pytest.approx(run.objective_before, rel=tol)
    assert_close(run.params, numpy_train(program, data, folder), tol, "trained parameters")


@pytest.mark.toolchain
def test_training_batch_settings(gcc, scratch):
    """Full batch (0 and ≥ n), a batch size that leaves a short last chunk, another seed —
    all equal to NumPy; a missing index buffer is refused when batches need shuffling."""
    program = compile_project(spec_for("huber", "float64"))
    data = load_csv("huber", program)
    folder = scratch / "batches"
    n = len(data["x"])
    for batch_size, seed in ((0, 0), (n, 5), (7, 123456789012345), (1, 2)):
        run = BACKEND.train(program, data, folder, epochs=3, batch_size=batch_size, seed=seed)
        want = numpy_train(program, data, folder, epochs=3, batch_size=batch_size, seed=seed)
        assert_close(run.params, want, 1e-10, f"batch_size={batch_size} seed={seed}")
    # index == NULL with shuffled batches → -1 and nothing touched
    driver = """#include "huber.h"
#include <stdio.h>
int main(void)
{
    static double x[12], y[3], params[HUBER_NUM_PARAMS];
    static huber_workspace work;
    huber_train_options options = HUBER_DEFAULT_TRAIN_OPTIONS;
    huber_report report;
    huber_data d;
    int full, refused;
    d.x = x; d.y = y; d.n = 3;
    huber_init_params(params);
    huber_workspace_init(&work);
    options.batch_size = 0;
    full = huber_train(params, &d, NULL, &options, &work, NULL, NULL, &report);
    options.batch_size = 2;
    refused = huber_train(params, &d, NULL, &options, &work, NULL, NULL, NULL);
    printf("%d %d %s %lu\\n", full, refused, huber_stop_name(full), report.iterations);
    return 0;
}
"""
    binary = BACKEND.build(program, scratch / "null_index", {"driver.c": driver})
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "-1", "max_iterations", str(program.training.epochs)]


@pytest.mark.toolchain
def test_single_loop_variant_for_large_kernels(gcc, scratch, monkeypatch):
    """Large kernels get one loop (index ternary) instead of two copies; same numbers."""
    import gradforge_c.plugin as plugin
    monkeypatch.setattr(plugin, "DUPLICATE_LOOP_MAX_OPS", 0)
    spec = spec_for("huber", "float32")
    program = check_against_reference(spec, scratch / "single_loop")
    assert "index != NULL ? index[i] : i" in gradforge.emit(program, "c")["huber.c"]
    data = load_csv("huber", program)
    run = BACKEND.train(program, data, scratch / "single_loop_train")
    assert_close(run.params, numpy_train(program, data, scratch / "single_loop_train"), 1e-3,
                 "trained parameters")


# -------------------------------------------------------------------- generated text

@pytest.mark.parametrize("example", examples_for("c"))
def test_emit_is_deterministic_and_marked(example):
    program = gradforge.load_program(example_path(example))
    first = gradforge.emit(program, "c")
    again = gradforge.emit(gradforge.load_program(example_path(example)), "c")
    assert first == again
    assert sorted(first) == [f"{program.name}.c", f"{program.name}.h",
                             f"{program.name}_params.c", f"{program.name}_params.h"]
    for text in first.values():
        assert text.splitlines()[0] == \
            "/* Code generated by gradforge from project.toml. DO NOT EDIT. */"
        assert text.endswith("}\n") or text.endswith("_H */\n")


def test_emit_is_independent_of_hash_seed():
    """Byte-identical output across interpreter runs (set iteration order must not leak)."""
    script = ("import hashlib, gradforge\n"
              "from random_models import random_project\n"
              "from gradforge.lower import compile_project\n"
              "h = hashlib.sha256()\n"
              "for p in (gradforge.load_program(%r), compile_project(random_project(5, depth=3))):\n"
              "    for name, text in sorted(gradforge.emit(p, 'c').items()):\n"
              "        h.update(name.encode() + text.encode())\n"
              "print(h.hexdigest())\n") % str(example_path("mlp"))
    tests = str(example_path("mlp").parents[2] / "tests")
    digests = {subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed,
                                              "PYTHONPATH": tests}).stdout
               for seed in ("1", "2")}
    assert len(digests) == 1, digests


@pytest.mark.parametrize("example", examples_for("c"))
def test_float32_output_has_no_double(example):
    program = compile_project(spec_for(example, "float32"))
    for name, text in gradforge.emit(program, "c").items():
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        assert not re.search(r"\bdouble\b", code), name
        assert not re.search(r"\b(exp|log|sin|cos|tan|tanh|sqrt|fabs|pow)\(", code), name
        literals = re.findall(r"(?<![\w.])\d+\.\d*(?:e[-+]?\d+)?f?", code)
        assert all(lit.endswith("f") for lit in literals), (name, literals)


def test_api_names_and_hoisting():
    """The documented API exists; parameter and constant loads sit before the sample loop."""
    program = gradforge.load_program(example_path("huber"))
    files = gradforge.emit(program, "c")
    header, source = files["huber.h"], files["huber.c"]
    for declaration in (
            "#define HUBER_NUM_PARAMS 5",
            "typedef struct {\n    const double *x;",
            "#define HUBER_DEFAULT_CONSTANTS { 1.0, 0.001 }",
            "void huber_init_params(double *params);",
            "double huber_objective(const double *params, const huber_data *d, "
            "const huber_constants *c);",
            "double huber_value_and_grad(const double *params, const huber_data *d, "
            "const huber_constants *c, double *grad);",
            "void huber_predict(const double *params, const huber_data *d, "
            "const huber_constants *c, double *out);",
            "void huber_optimizer_step(huber_optimizer *opt, double *params, const double *grad);",
            "int huber_train(double *params,"):
        assert declaration in header, declaration
    body = source[source.index("huber_block_loss_and_grad(const"):]
    body = body[:body.index("\n}\n")]
    loop = body.index("for (i = start")
    assert body.index("const double w_0 = params[0];") < loop
    assert body.index("const double delta = c->delta;") < loop
    assert body.index("const double x_0 = data_x[4 * s];") > loop
    # gradient accumulators are locals (registers), stored once per block of samples
    assert "gf_acc4 += d_prediction;" in body and "part[4] = gf_acc4;" in body
    # where() and sign() are branch-free (a data-dependent jump mispredicts half the time)
    assert "gf_select(" in body and " ? " not in body and "gf_sign(" in body
    assert "operations" in body or "operations" in source


def test_constants_never_use_math_macros(gcc, scratch):
    """SymPy's C printer would write 2/pi as M_2_PI, undefined under -std=c99."""
    spec = gradforge.ProjectSpec.create(
        name="macros", parameters={"a": 0.5}, inputs={"x": {}}, targets={"y": {}},
        prediction="a*x + 2/pi + sqrt(2)*a + log(2)*x", loss="(prediction - y)**2")
    for precision in PRECISIONS:
        spec = dataclasses.replace(spec, precision=precision)
        text = gradforge.emit(compile_project(spec), "c")["macros.c"]
        assert not re.search(r"\bM_[0-9A-Z_]+", text)
        check_against_reference(spec, scratch / f"macros_{precision}", count=2)


@pytest.mark.toolchain
def test_power_in_a_denominator(gcc, scratch):
    """x**2 prints as x*x, so a/(1 + w**2)**2 needs the parentheses SymPy leaves out."""
    spec = gradforge.ProjectSpec.create(
        name="denominator", parameters={"a": 0.5, "w": 0.7}, inputs={"x": {}}, targets={"y": {}},
        prediction="a*x/(1 + w**2)**2 - exp(-(x/(1 + w**2))**2) + 1/(1 + a**2)**3",
        loss="(prediction - y)**2")
    for precision in PRECISIONS:
        spec = dataclasses.replace(spec, precision=precision)
        check_against_reference(spec, scratch / f"denominator_{precision}", count=2)


@pytest.mark.toolchain
@pytest.mark.parametrize("precision", PRECISIONS)
def test_reserved_words_are_escaped(gcc, scratch, precision):
    """Names that are C/C++ keywords, library macros, or names the generated code uses itself
    (params, grad, c, d, n, i, s, index, count, total, data_x …) compile and compute right."""
    spec = gradforge.ProjectSpec.create(
        name="int", precision=precision,
        parameters={"double": 0.5, "params": {"shape": [2], "init": 0.1}, "grad": -0.2,
                    "i": 0.3, "data_x": 0.1, "tanhf": 0.2, "EOF": 0.1, "new": 0.3,
                    "INT_NUM_PARAMS": 0.2},
        inputs={"n": {"shape": [2]}, "index": {}, "x": {}}, targets={"s": {}},
        constants={"c": 1.5, "count": 0.5, "d": 0.1},
        definitions={"total": "double*x + dot(params, n) + grad*index + i*data_x"
                              " + tanhf*EOF*new + INT_NUM_PARAMS"},
        prediction="total", loss="c*abs(prediction - s) + count*(prediction - s)**2",
        regularization="d*double**2")
    program = check_against_reference(spec, scratch / f"reserved_{precision}")
    header = gradforge.emit(program, "c")["int.h"]
    assert "const double *n_;" in header.replace("float", "double")
    assert "#define INT_NUM_PARAMS 10" in header


def test_backend_is_registered(registry):
    backend = registry.backend("c")
    assert isinstance(backend, CBackend)
    assert [t.name for t in backend.toolchains()] == ["gcc"]
    assert backend.can_run
    assert compile_flags("float32")[-2:] == ["-Wdouble-promotion", "-Wconversion"]


@pytest.mark.toolchain
def test_predict_with_null_targets(gcc, scratch):
    """Issue 7 item 5: predict takes inputs only — the header says the target pointers may be
    NULL, and a program that passes NULL compiles strictly, runs, and prints the reference's
    predictions."""
    from gradforge.backend import Case
    spec = spec_for("huber", "float64")
    program = compile_project(spec)
    files = gradforge.emit(program, "c")
    assert "target pointers may be NULL" in files["huber.h"]
    rows = [(0.5, -1.0, 0.25, 2.0), (-0.3, 0.1, 1.5, -0.7), (1.2, 0.0, -0.4, 0.9)]
    folder = scratch / "predict_null"
    folder.mkdir()
    for rel, text in files.items():
        (folder / rel).write_text(text)
    values = ", ".join(repr(v) for row in rows for v in row)
    (folder / "main.c").write_text(
        '#include "huber.h"\n#include <stdio.h>\n\nint main(void)\n{\n'
        f'    static const double x[] = {{ {values} }};\n'
        '    double params[HUBER_NUM_PARAMS], out[3];\n'
        '    huber_data inputs = { x, NULL, 3 };   /* no targets */\n'
        '    size_t s;\n'
        '    huber_init_params(params);\n'
        '    huber_predict(params, &inputs, NULL, out);\n'
        '    for (s = 0; s < 3; s++)\n        printf("%.17g\\n", out[s]);\n'
        '    return 0;\n}\n')
    subprocess.run([gcc, *compile_flags("float64"), "-O2", "-I", str(folder), "-o",
                    str(folder / "main"), str(folder / "main.c"), str(folder / "huber.c"),
                    "-lm"], check=True, capture_output=True, text=True)
    got = [float(v) for v in subprocess.run([str(folder / "main")], check=True,
                                            capture_output=True, text=True).stdout.split()]
    theta = tuple(v for p in program.parameters for v in p.init)
    case = Case(theta, {"x": tuple(rows), "y": ((0.0,),) * 3}, {})
    want = Reference(spec).expected(case).predictions
    assert got == pytest.approx(list(want), rel=1e-12)


# ------------------------------------------------- bounds: the one step projects (issue 9)

def boxed_decay(optimizer: str, precision: str = "float64"):
    """decay with a box that holds its fit out (amplitude ≤ 3, baseline in [-0.5, 0.5]: the
    unconstrained fit is about 4.2 and 0.8; baseline reaches its bound within 30 epochs) and a
    first-order optimizer."""
    spec = spec_for("decay", precision)
    params = tuple(dataclasses.replace(p, upper=(3.0,)) if p.name == "amplitude" else
                   dataclasses.replace(p, lower=(-0.5,), upper=(0.5,)) if p.name == "baseline"
                   else p for p in spec.parameters)
    training = dataclasses.replace(spec.training, optimizer=optimizer, learning_rate=0.1,
                                   epochs=30, batch_size=8)
    return dataclasses.replace(spec, parameters=params, training=training)


@pytest.mark.toolchain
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_step_projects_and_training_is_unchanged(gcc, scratch, optimizer):
    """<name>_optimizer_step clips into the bounds itself (gf_clip printed once, before it);
    one step from the harness equals the reference's projected step and lies in the box, and
    <name>_train, which no longer clips a second time, still follows the NumPy trainer onto
    the active bounds (full batch and mini-batches)."""
    program = compile_project(boxed_decay(optimizer))
    source = gradforge.emit(program, "c")["decay.c"]
    assert source.count("static double gf_clip(") == 1
    assert "params[k] = gf_clip(param, k);" in source
    assert source.index("gf_clip(") < source.index("void decay_optimizer_step(")
    spec = boxed_decay(optimizer)
    data = load_csv("decay", program)
    cases = make_cases(spec, count=3, samples=(13, 50, 65), seed=4, data=data)
    cases = [dataclasses.replace(c, params=(c.params[0], c.params[1], 0.5)) for c in cases]
    reference = Reference(spec)
    results = BACKEND.run(program, {}, cases, scratch / f"boxed_step_{optimizer}")
    for case, result in zip(cases, results):
        want = reference.expected(case)
        assert compare(result, want, "float64") == []
        assert all(lo <= v <= hi for v, lo, hi in zip(result.stepped, program.lower,
                                                        program.upper)), result.stepped
    crossed = [reference.step_mp(c.params, reference.gradient_mp(c), project=False)[2] > 0.5
               for c in cases]
    assert all(crossed), "a step did not cross baseline's upper bound: the clip went untested"
    # float32 under -Wdouble-promotion -Wconversion as well
    spec32 = boxed_decay(optimizer, "float32")
    cases32 = make_cases(spec32, count=1, samples=(50,), seed=4, data=data)
    cases32 = [dataclasses.replace(c, params=(c.params[0], c.params[1], 0.5)) for c in cases32]
    result, = BACKEND.run(compile_project(spec32), {}, cases32, scratch / f"boxed32_{optimizer}")
    assert compare(result, Reference(spec32).expected(cases32[0]), "float32") == []
    assert result.stepped[2] == 0.5
    folder = scratch / f"boxed_train_{optimizer}"
    on_a_bound = []
    for batch_size in (0, 8):
        run = BACKEND.train(program, data, folder, epochs=30, batch_size=batch_size)
        want = numpy_train(program, data, folder, epochs=30, batch_size=batch_size)
        assert_close(run.params, want, 1e-10, f"batch_size={batch_size}")
        assert run.params[0] <= 3.0 and -0.5 <= run.params[2] <= 0.5, run.params
        on_a_bound.append(run.params[0] == 3.0 or run.params[2] == 0.5)
    assert any(on_a_bound), "training never reached a bound: the projection went untested"
