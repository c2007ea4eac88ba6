"""Sanitizers: the generated C under ``-fsanitize=address,undefined`` (every API function,
train included) on the examples and on random models, and the Swift package of one model
built with ``-sanitize=address`` with its tests run.

Each C model is driven twice: through the verification harness and trainer of the suite
(objective, gradient, predictions, optimizer step, train — see tests/fuzzing.py), and through
an API driver written here that calls every function of ``<name>.h`` and ``<name>_params.h``
on 0, 1 and 5 samples, with index lists, NULL constants for predict, mini-batches, a callback
that stops training, and params files good and bad. Buffers are allocated to their exact size,
so a read or write one element past the end is an AddressSanitizer error.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

import gradforge

from conftest import EXAMPLES, IN_CI, example_path, require_tool
from fuzzing import prepare, run_c, subject_for
from random_models import fuzz_project_text

SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g")
FUZZ_SEEDS = (3, 8, 13)


def api_driver(program) -> str:
    """A C ``main`` that calls every function the model's headers declare."""
    from gradforge_c.plugin import _harness_context
    ctx = _harness_context(program)
    p, P, T = ctx["prefix"], ctx["upper"], ctx["T"]
    lines = [f'#include "{p}.h"', f'#include "{p}_params.h"', "#include <stdio.h>",
             "#include <stdlib.h>", "#include <string.h>", "",
             f"static {T} *values(size_t count, double start)", "{",
             f"    {T} *v = ({T} *)malloc((count ? count : 1) * sizeof *v);",
             "    size_t i;",
             "    if (v == NULL) exit(3);",
             f"    for (i = 0; i < count; ++i) v[i] = ({T})(start + 0.37 * (double)(i % 7) - 1.0);",
             "    return v;", "}", "",
             f"static int stop_after_two(const {p}_report *so_far, void *ctx)", "{",
             "    (void)ctx;", "    return so_far->iterations >= 2;", "}", "",
             "int main(void)", "{",
             f"    {p}_constants c = {p}_default_constants();",
             f"    {T} *params = values({P}_NUM_PARAMS, 0.0);",
             f"    {T} *grad = values({P}_NUM_PARAMS, 0.0);",
             f"    {p}_optimizer *opt = ({p}_optimizer *)malloc(sizeof *opt);",
             f"    {p}_workspace *work = ({p}_workspace *)malloc({P}_WORKSPACE_SIZE);",
             f"    {p}_train_options options = {p}_default_train_options();",
             f"    {p}_report report;",
             "    size_t sizes[3] = {0, 1, 5}, index[3] = {4, 0, 2}, k, s;",
             "    double total = 0.0;",
             "    int code;",
             "    FILE *file;",
             "    if (opt == NULL || work == NULL) return 3;",
             f"    {p}_init_params(params);",
             "    for (s = 0; s < 3; ++s) {",
             f"        {p}_data d;",
             f"        {T} *out = values(sizes[s], 0.0);",
             f"        size_t *scratch = (size_t *)malloc((sizes[s] ? sizes[s] : 1) * sizeof(size_t));",
             "        d.n = sizes[s];"]
    for f in ctx["fields"]:
        lines.append(f"        d.{f['member']} = values(d.n * {f['size']}, 0.5);")
    lines += [
        f"        total += (double){p}_objective(params, &d, &c);",
        f"        total += (double){p}_value_and_grad(params, &d, &c, grad);",
        "        if (d.n == 5) {",
        f"            total += (double){p}_value_and_grad_indexed(params, &d, &c, index, 3, grad);",
        "        }",
        f"        total += (double){p}_value_and_grad_indexed(params, &d, &c, index, 0, grad);",
        f"        {p}_predict(params, &d, &c, out);",
        f"        {p}_predict(params, &d, NULL, out);",
        "        for (k = 0; k < d.n; ++k) total += (double)out[k];",
        f"        {p}_workspace_init(work);",
        "        options.max_iterations = 3;"]
    if ctx["first_order"]:               # mini-batches (L-BFGS and LM are full batch)
        lines += ["        options.batch_size = 2;", "        options.index = scratch;"]
    lines += [
        f"        code = {p}_train(params, &d, &c, &options, work, NULL, NULL, &report);",
        f"        total += (double)code + (double)strlen({p}_stop_name(code));"]
    if ctx["first_order"]:
        lines += ["        options.batch_size = 0;", "        options.index = NULL;"]
    lines += [
        "        options.max_iterations = 10;",
        f"        code = {p}_train(params, &d, &c, &options, work, stop_after_two, NULL, &report);",
        f"        total += (double)code + (double)report.iterations;",
        f"        code = {p}_train(params, &d, NULL, NULL, work, NULL, NULL, NULL);",
        "        total += (double)code;",
        "        free(out);", "        free(scratch);"]
    for f in ctx["fields"]:
        lines.append(f"        free((void *)d.{f['member']});")
    lines += [
        "    }",
        f"    {p}_optimizer_init(opt);",
        f"    {p}_optimizer_step(opt, params, grad);",
        f"    {p}_optimizer_reset(opt);",
        f"    {p}_optimizer_step(opt, params, grad);",
        "    for (code = -1; code <= 8; ++code) {",
        f"        total += (double)strlen({p}_stop_name(code));",
        "    }",
        "    /* params files: a good one, a truncated one, another model's, a missing path */",
        "    file = tmpfile();",
        "    if (file == NULL) return 3;",
        f'    fprintf(file, "gradforge-params 1\\nmodel_hash %s\\n", {P}_MODEL_HASH);']
    for param in program.parameters:
        values = " ".join(["0.25"] * param.size)
        lines.append(f'    fprintf(file, "{param.name} {param.size} {values}\\n");')
    lines += [
        "    rewind(file);",
        f"    code = {p}_read_params(file, params);",
        '    if (code != 0) { fprintf(stderr, "good params file refused: %d\\n", code); return 4; }',
        "    fclose(file);",
        "    file = tmpfile();",
        "    if (file == NULL) return 3;",
        '    fputs("gradforge-params 1\\nmodel_hash 0000\\n", file);',
        "    rewind(file);",
        f"    total += (double){p}_read_params(file, params);",
        "    fclose(file);",
        "    file = tmpfile();",
        "    if (file == NULL) return 3;",
        f'    fprintf(file, "gradforge-params 1\\nmodel_hash %s\\n{program.parameters[0].name} 1", {P}_MODEL_HASH);',
        "    rewind(file);",
        f"    total += (double){p}_read_params(file, params);",
        "    fclose(file);",
        f'    total += (double){p}_load_params("/nonexistent/params.txt", params);',
        "    for (code = -8; code <= 0; ++code) {",
        f"        total += (double)strlen({p}_params_error(code));",
        "    }",
        '    printf("%g\\n", total);',
        "    free(params);", "    free(grad);", "    free(opt);", "    free(work);",
        "    return 0;", "}", ""]
    return "\n".join(lines)


def subjects():
    out = []
    for name in EXAMPLES:
        spec = gradforge.load_project(example_path(name))
        from gradforge.verification import make_cases
        out.append(subject_for(spec, make_cases(spec, count=2, samples=(9, 1), seed=4),
                               name=spec.name))
    out += [prepare(fuzz_project_text(seed), seed) for seed in FUZZ_SEEDS]
    return out


def test_c_under_address_and_undefined_sanitizers(tmp_path):
    require_tool("gcc")
    from gradforge_c.plugin import compile_flags, emit_files
    models = subjects()
    # 1. the suite's harness and trainer (protocol, train vs NumPy) built with sanitizers
    run_c(models, tmp_path / "harness", train=True, extra_flags=SANITIZE, label="sanitize")
    problems = {s.name: s.failures for s in models if s.failures}
    assert not problems, problems
    # 2. every API function through the driver
    for s in models:
        folder = tmp_path / f"api_{s.name}"
        folder.mkdir()
        files = {**emit_files(s.program), "driver.c": api_driver(s.program)}
        for rel, text in files.items():
            (folder / rel).write_text(text, encoding="utf-8")
        sources = sorted(rel for rel in files if rel.endswith(".c"))
        proc = subprocess.run(["gcc", "-O1", *compile_flags(s.precision), *SANITIZE,
                               "-o", "driver", *sources, "-lm"], cwd=folder,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (s.name, proc.stderr[-3000:])
        proc = subprocess.run(["./driver"], cwd=folder, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (s.name, proc.stdout[-500:] + proc.stderr[-3000:])
        assert "runtime error" not in proc.stderr, (s.name, proc.stderr[-3000:])


def test_swift_package_under_address_sanitizer(tmp_path, registry):
    """One model's package (trend): built with -sanitize=address, its XCTests run."""
    tools = registry.backend("swift").toolchains()
    if not all(t.available for t in tools):
        (pytest.fail if IN_CI else pytest.skip)(f"swift missing: {tools}")
    from gradforge_swift.plugin import swiftpm_options
    program = gradforge.load_program(example_path("trend"))
    files = gradforge.emit(program, "swift")
    package = tmp_path / "package"
    for rel, text in files.items():
        target = package / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    # LeakSanitizer is off: XCTest and the Swift runtime keep objects alive until exit
    # (reported from libXCTest/libswiftCore, none from the package); every other ASan check
    # (out-of-bounds, use-after-free, …) stays on and fails the run
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0"}
    proc = subprocess.run(["swift", "test", *swiftpm_options(package, tmp_path / "scratch",
                                                             tmp_path / "cache"),
                           "--sanitize=address", "-Xswiftc", "-warnings-as-errors"],
                          capture_output=True, text=True, timeout=1800, env=env)
    log = proc.stdout + proc.stderr
    relevant = "\n".join(l for l in log.splitlines() if "Cannot export local symbol" not in l)
    assert proc.returncode == 0, relevant[-4000:]
    assert "ERROR: AddressSanitizer" not in log, relevant[-4000:]
    assert re.search(r"Executed [1-9]\d* tests?, with 0 failures", log), relevant[-2000:]
