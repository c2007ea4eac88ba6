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
