"""Every class of bad input: exit status 2, one line naming file/key/position and the fix,
no traceback, nothing written, and never code execution from a project file."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradforge import cli

GOOD = textwrap.dedent('''\
    [project]
    name = "demo"
    precision = "float64"

    [parameters]
    a = 0.5
    w = { shape = [3], init = 0.1 }

    [inputs]
    x = { shape = [3] }

    [targets]
    y = {}

    [constants]
    delta = 1.0

    [model]
    prediction = "a + dot(w, x)"
    loss = "abs(prediction - y)"
    reduction = "mean"

    [training]
    optimizer = "adam"

    [backends.numpy]
    ''')


def run_cli(*args, cwd: Path, subprocess_: bool = False):
    """Run the CLI in-process (fast) or, for end-to-end checks, as a real subprocess."""
    if subprocess_:
        return subprocess.run([sys.executable, "-m", "gradforge.cli", *map(str, args)],
                              cwd=cwd, capture_output=True, text=True, timeout=120)
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in args])
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def build_with(tmp_path: Path, text: str, subprocess_: bool = False):
    project = tmp_path / "project.toml"
    project.write_text(text)
    result = run_cli("build", project, cwd=tmp_path, subprocess_=subprocess_)
    return result, project


def assert_user_error(result, tmp_path: Path, *fragments: str):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "build").exists(), "nothing may be written on error"


CASES = {
    # name: (replace old → new in GOOD, expected fragments)
    "toml syntax": (('name = "demo"', 'name = "demo'), ["project.toml:", "invalid TOML"]),
    "unknown table": (("[inputs]", "[input]"), ["unknown key 'input'", "did you mean 'inputs'"]),
    "unknown model key": (('loss = "abs', 'los = "abs'),
                          ["model.los", "did you mean 'loss'", "project.toml:20:1"]),
    "bad precision": (('precision = "float64"', 'precision = "float16"'),
                      ["project.precision", "float32"]),
    "bool as number": (("a = 0.5", "a = true"), ["parameters.a", "expected a number"]),
    "bad shape": (("shape = [3], init = 0.1", "shape = [0], init = 0.1"),
                  ["parameters.w.shape", "at least 1"]),
    "init mismatch": (("init = 0.1 }", "init = [1.0, 2.0] }"), ["parameters.w.init", "3"]),
    "duplicate name": (("delta = 1.0", "a = 1.0"), ["constants.a", "already declared"]),
    "reserved name": (("delta = 1.0", "exp = 1.0"), ["constants.exp", "reserved"]),
    "bad identifier": (("delta = 1.0", '"2x" = 1.0'), ["constants.2x", "not a valid name"]),
    "expression syntax": (('"a + dot(w, x)"', '"a + * x"'), ["model.prediction", "syntax"]),
    "attribute access": (('"a + dot(w, x)"', '"a.real + dot(w, x)"'),
                         ["model.prediction", "attribute access", "a.real"]),
    "lambda": (('"a + dot(w, x)"', '"(lambda: 1)() + a"'), ["model.prediction", "lambda"]),
    "prediction reads a target": (('"a + dot(w, x)"', '"a*y + dot(w, x)"'),
                                  ["model.prediction", "may not use the target(s) y"]),
    "unknown name": (('"a + dot(w, x)"', '"aa + dot(w, x)"'),
                     ["unknown name 'aa'", "did you mean 'a'"]),
    "unknown function": (('"a + dot(w, x)"', '"a + dott(w, x)"'),
                         ["unknown function 'dott'", "did you mean 'dot'"]),
    "index out of bounds": (('"a + dot(w, x)"', '"a + w[3]*x[0]"'),
                            ["model.prediction", "out of bounds", "w[3]"]),
    "array where scalar": (('"a + dot(w, x)"', '"a + w"'), ["model.prediction", "scalar"]),
    "shape mismatch": (('"a + dot(w, x)"', '"a + dot(w, [1, 2])"'), ["dot() takes two arrays"]),
    "condition as number": (('"abs(prediction - y)"', '"(prediction > y) + a"'),
                            ["model.loss", "condition"]),
    "regularization uses data": (('reduction = "mean"', 'reduction = "mean"\nregularization = "x[0]*a"'),
                                 ["model.regularization", "parameters and constants only"]),
    "cycle": (('[training]', '[model.definitions]\nu = "v + 1"\nv = "u*a"\n\n[training]'),
              ["cycle", "u -> v -> u"]),
    "no parameter dependence": (('"abs(prediction - y)"', '"abs(y)"'),
                                ["model.loss", "does not depend on any parameter"]),
    "optimizer key for other optimizer": (('optimizer = "adam"', 'optimizer = "sgd"\nbeta1 = 0.9'),
                                          ["training.beta1", "belongs to optimizer 'adam'"]),
    "unknown optimizer": (('optimizer = "adam"', 'optimizer = "adamw"'),
                          ["training.optimizer", "did you mean 'adam'"]),
    "negative epochs": (('optimizer = "adam"', 'optimizer = "adam"\nepochs = -1'),
                        ["training.epochs", "at least 0"]),
    "unknown backend": (("[backends.numpy]", "[backends.numpyy]"),
                        ["backends.numpyy", "did you mean 'numpy'"]),
    "unknown backend option": (("[backends.numpy]", "[backends.numpy]\nfast = true"),
                               ["backends.numpy.fast", "unknown option"]),
    "out escapes project": (("[backends.numpy]", '[backends.numpy]\nout = "../elsewhere"'),
                            ["backends.numpy.out", "outside the project folder"]),
    # singularities found at build time: file, line, column of the key, the key, the column
    # in the expression, and the offending text
    "division by x - x": (('"a + dot(w, x)"', '"a + delta/(x[0] - x[0])"'),
                          ["project.toml:19:1: model.prediction", "division by zero",
                           "`delta/(x[0] - x[0])` at column 5"]),
    "log of zero": (('"abs(prediction - y)"', '"abs(prediction - y) + log(0)"'),
                    ["project.toml:20:1: model.loss", "log(0) is infinite", "`log(0)` at column 23"]),
    "zero over zero": (('"abs(prediction - y)"', '"(y - y)/(y - y)*a"'),
                       ["model.loss", "undefined (0/0)", "at column 1"]),
    "sqrt of a negative constant": (('"a + dot(w, x)"', '"a + sqrt(-2)*x[0]"'),
                                    ["model.prediction", "not a real number", "`sqrt(-2)`"]),
    "singular definition": (('[training]', '[model.definitions]\nu = "[w[k]/0 for k in range(3)]"'
                             '\n\n[training]'),
                            ["project.toml:24:1: model.definitions.u", "division by zero",
                             "`w[k]/0`"]),
    "division by a definition that is zero": (
        ('prediction = "a + dot(w, x)"',
         'definitions.u = "x[1] - x[1]"\nprediction = "a/u + dot(w, x)"'),
        ["project.toml:20:1: model.prediction", "division by zero", "`a/u` at column 1"]),
    "log of a constant definition": (
        ('prediction = "a + dot(w, x)"',
         'definitions.u = "[0, 1, 2]"\nprediction = "a + dot(w, x) + log(u[0])"'),
        ["model.prediction", "log(0) is infinite", "`log(u[0])` at column 17"]),
    # field ranges (for verify's random data)
    "range not a pair": (("x = { shape = [3] }", "x = { shape = [3], range = [1] }"),
                         ["project.toml:10:20: inputs.x.range", "two numbers"]),
    "range empty": (("y = {}", "y = { range = [2, 1] }"),
                    ["project.toml:13:7: targets.y.range", "empty"]),
    "range not numbers": (("y = {}", 'y = { range = [0, "10"] }'),
                          ["targets.y.range", "expected a number"]),
    "range misspelt": (("y = {}", "y = { rang = [0, 1] }"),
                       ["targets.y.rang", "did you mean 'range'"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_project_is_one_clear_line(name, tmp_path):
    (old, new), fragments = CASES[name]
    assert old in GOOD, old
    result, _ = build_with(tmp_path, GOOD.replace(old, new, 1))
    assert_user_error(result, tmp_path, *fragments)
    assert not (tmp_path.parent / "elsewhere").exists()


def test_good_project_builds(tmp_path):
    result, _ = build_with(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "build" / "numpy" / "demo.py").exists()


def test_missing_file(tmp_path):
    result = run_cli("build", tmp_path / "nope.toml", cwd=tmp_path)
    assert_user_error(result, tmp_path, "nope.toml", "file not found")


def test_project_text_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    text = GOOD.replace('"a + dot(w, x)"', f'"{payload} + a"')
    result, _ = build_with(tmp_path, text, subprocess_=True)   # the real CLI, end to end
    assert_user_error(result, tmp_path, "model.prediction")
    assert not marker.exists()


def test_refuses_to_overwrite_a_users_file(tmp_path):
    mine = tmp_path / "build" / "numpy" / "demo.py"
    mine.parent.mkdir(parents=True)
    mine.write_text("# my own code\n")
    result, _ = build_with(tmp_path, GOOD.replace("[backends.numpy]", "[backends.numpy]\n[backends.c]"))
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    assert mine.read_text() == "# my own code\n"
    assert not (tmp_path / "build" / "c").exists(), "no backend may be half-written"
