"""params.json / params.txt are loaded by every backend: NumPy, C (the plain-text twin), Swift."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest

import gradforge
from gradforge_c.plugin import compile_flags

ROOT = Path(__file__).resolve().parents[1]
TREND = ROOT / "examples" / "trend"
MLP = ROOT / "examples" / "mlp"

C_MAIN = """
#include <stdio.h>
#include "{name}_params.h"
int main(int argc, char **argv)
{{
    {T} params[{upper}_NUM_PARAMS];
    size_t k;
    int status;
    {name}_init_params(params);
    status = {name}_load_params(argv[1], params);
    printf("%d %s\\n", status, {name}_params_error(status));
    for (k = 0; k < {upper}_NUM_PARAMS; ++k) {{
        printf("%.17g\\n", (double)params[k]);
    }}
    (void)argc;
    return 0;
}}
"""


def need(tool):
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {tool} is required")
        pytest.skip(f"{tool} not installed")


def c_loader(program, folder: Path) -> Path:
    need("gcc")
    files = gradforge.emit(program, "c")
    for rel, text in files.items():
        (folder / rel).write_text(text)
    T = "float" if program.precision == "float32" else "double"
    (folder / "main.c").write_text(C_MAIN.format(name=program.name, upper=program.name.upper(),
                                                 T=T))
    sources = sorted(p.name for p in folder.glob("*.c"))
    subprocess.run(["gcc", "-O1", *compile_flags(program.precision), "-o", "loader", *sources,
                    "-lm"], cwd=folder, check=True, capture_output=True, text=True)
    return folder / "loader"


def run_loader(binary: Path, params_txt: Path) -> tuple[int, list[float]]:
    out = subprocess.run([str(binary), str(params_txt)], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return int(out[0].split()[0]), [float(v) for v in out[1:] if v]


@pytest.mark.toolchain
@pytest.mark.parametrize("example", [TREND, MLP], ids=["trend-float64", "mlp-float32"])
def test_c_loads_the_text_twin(tmp_path, example):
    program = gradforge.load_program(example / "project.toml")
    result = gradforge.train(example / "project.toml", example / "data.csv", max_iterations=3,
                             params_out=tmp_path / "params.json")
    binary = c_loader(program, tmp_path)
    status, values = run_loader(binary, tmp_path / "params.txt")
    assert status == 0
    doc = json.loads((tmp_path / "params.json").read_text())
    expected = [v for p in doc["parameters"] for v in p["values"]]
    dtype = numpy.float32 if program.precision == "float32" else numpy.float64
    numpy.testing.assert_array_equal(numpy.array(values, dtype=dtype),
                                     numpy.array(expected, dtype=dtype))
    numpy.testing.assert_array_equal(numpy.array(values, dtype=dtype), result.theta)


@pytest.mark.toolchain
def test_c_refuses_other_models_and_broken_files_without_writing(tmp_path):
    program = gradforge.load_program(TREND / "project.toml")
    binary = c_loader(program, tmp_path)
    init = [float(v) for p in program.parameters for v in p.init]
    gradforge.train(MLP / "project.toml", MLP / "data.csv", max_iterations=1,
                    params_out=tmp_path / "mlp.json")
    assert run_loader(binary, tmp_path / "mlp.txt") == (-3, init)
    good = ("gradforge-params 1\nmodel_hash " + program.model_hash + "\n"
            "a 1 1.5\nb 1 2.5\nc 1 3.5\n")
    cases = {"bad_number": (good.replace("2.5", "x"), -6),
             "wrong_count": (good.replace("b 1 2.5", "b 2 2.5 1"), -5),
             "unknown": (good + "d 1 0\n", -4),
             "missing": (good.replace("c 1 3.5\n", ""), -7),
             "not_params": ("hello\n", -2)}
    for label, (text, code) in cases.items():
        path = tmp_path / f"{label}.txt"
        path.write_text(text)
        assert run_loader(binary, path) == (code, init), label
    (tmp_path / "ok.txt").write_text(good)
    assert run_loader(binary, tmp_path / "ok.txt") == (0, [1.5, 2.5, 3.5])
    assert run_loader(binary, tmp_path / "absent.txt")[0] == -1


@pytest.mark.toolchain
def test_swift_package_loads_params_json_and_keeps_training(tmp_path):
    """Python trains → params.json → the Swift trainer (`--init`) reads it, writes it back
    unchanged with 0 epochs, continues training from it, and refuses another model's file."""
    need("swift")
    from gradforge_swift.plugin import swift_build_command
    program = gradforge.load_program(MLP / "project.toml")
    trained = gradforge.train(MLP / "project.toml", MLP / "data.csv", max_iterations=5,
                              params_out=tmp_path / "params.json")
    package = tmp_path / "package"
    for rel, text in gradforge.emit(program, "swift").items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    proc = subprocess.run(swift_build_command(package, tmp_path / "build", tmp_path / "cache")
                          + ["--product", f"{program.name}-train"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    trainer = tmp_path / "build" / "release" / f"{program.name}-train"

    def swift(*args):
        return subprocess.run([str(trainer), str(MLP / "data.csv"), *map(str, args)],
                              capture_output=True, text=True, timeout=600)

    same = swift("--init", tmp_path / "params.json", "--epochs", 0,
                 "--params-out", tmp_path / "again.json")
    assert same.returncode == 0, same.stderr
    before = json.loads((tmp_path / "params.json").read_text())
    after = json.loads((tmp_path / "again.json").read_text())
    assert after["model_hash"] == before["model_hash"] == program.model_hash
    for a, b in zip(after["parameters"], before["parameters"]):   # float32 model: same floats
        numpy.testing.assert_array_equal(numpy.float32(a["values"]), numpy.float32(b["values"]))
    assert [p["shape"] for p in after["parameters"]] == [p["shape"] for p in before["parameters"]]
    # the Swift objective at the loaded parameters is the Python one (float32)
    assert after["objective"] == pytest.approx(trained.objective, rel=1e-5)
    # keep training on-device from the loaded parameters; Python reads the result back
    more = swift("--init", tmp_path / "params.json", "--epochs", 20,
                 "--params-out", tmp_path / "more.json")
    assert more.returncode == 0, more.stderr
    resumed = json.loads((tmp_path / "more.json").read_text())
    assert resumed["objective"] < after["objective"]
    module = numpy_module_for(program)
    module.load_params(tmp_path / "more.json")
    # another model's file: one line, exit 2
    gradforge.train(TREND / "project.toml", TREND / "data.csv", max_iterations=1,
                    params_out=tmp_path / "trend.json")
    wrong = swift("--init", tmp_path / "trend.json", "--epochs", 0)
    assert wrong.returncode == 2 and "parameters of another model" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


def numpy_module_for(program):
    from gradforge.training import numpy_module
    return numpy_module(program)
