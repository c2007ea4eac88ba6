"""`gradforge verify` as a user meets it: models with a restricted domain (log, sqrt), field
ranges, real rows (--data), --strict for CI, progress on a terminal, nothing left in TMPDIR."""
from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradforge import cli
from gradforge.project import load_project
from gradforge.reference import Reference
from gradforge.verification import make_cases

from conftest import ROOT, copy_example, require_tool

LOG_MODEL = textwrap.dedent('''\
    [project]
    name = "ratio"

    [parameters]
    a = 1.5
    b = 0.2

    [inputs]
    x = {}

    [targets]
    y = {}

    [model]
    prediction = "a*x + b"
    loss = "(log(prediction) - log(y))**2 + sqrt(x)*b**2"

    [backends.numpy]
    ''')
RANGES = ('x = {}', 'x = { range = [0.1, 10] }'), ('y = {}', 'y = { range = [0.5, 20] }')


def write(tmp_path: Path, text: str, name: str = "project.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_ranges(text: str = LOG_MODEL) -> str:
    for old, new in RANGES:
        text = text.replace(old, new)
    return text


def gradforge(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (as a user or CI runs it)."""
    return subprocess.run([sys.executable, "-m", "gradforge", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env=env if env is not None else dict(os.environ))


def assert_one_line_error(done, *fragments: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ the model's domain

def test_a_case_outside_the_domain_is_one_line_not_a_traceback(tmp_path):
    """N(0, 1) data makes log(prediction) complex: say so, name the sample and the fix."""
    project = write(tmp_path, LOG_MODEL)
    done = gradforge("verify", project, cwd=tmp_path)
    line = assert_one_line_error(done, "case 1 of 3 is outside the model's domain",
                                 "not a finite real number at sample", "range = [0.1, 10]",
                                 "--data", "fields without a range: x, y")
    assert "mpc" not in line


def test_verify_draws_fields_inside_their_ranges(tmp_path, capsys):
    project = write(tmp_path, with_ranges())
    spec = load_project(project)
    cases = make_cases(spec, count=4, seed=3)
    for case in cases:
        assert all(0.1 <= row[0] <= 10 for row in case.data["x"])
        assert all(0.5 <= row[0] <= 20 for row in case.data["y"])
    assert cli.main(["verify", str(project)]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "pass" in out


def test_random_parameters_stay_inside_the_domain(tmp_path, capsys):
    """b = 0.2 ± 0.5 would often make sqrt(b) complex: the draw moves closer to b's initial
    value until the case is defined, instead of failing."""
    text = with_ranges().replace("sqrt(x)*b**2", "sqrt(b)*x")
    project = write(tmp_path, text)
    spec = load_project(project)
    reference = Reference(spec)
    plain = make_cases(spec, count=6, seed=1)
    assert any(case.params[1] < 0 for case in plain), "the seed should provoke the problem"
    cases = make_cases(spec, count=6, seed=1,
                       in_domain=lambda case: reference.domain_problem(case) is None)
    assert all(case.params[1] >= 0 for case in cases)
    assert [c.data for c in cases] == [c.data for c in plain]   # only θ is drawn again
    assert cli.main(["verify", str(project), "--cases", "6", "--seed", "1"]) == 0
    assert "pass" in capsys.readouterr().out


def test_random_parameters_stay_inside_their_bounds(tmp_path):
    text = with_ranges().replace("b = 0.2", "b = { init = 0.2, lower = 0.0, upper = 0.5 }")
    spec = load_project(write(tmp_path, text))
    cases = make_cases(spec, count=12, seed=1)
    assert all(0.0 <= case.params[1] <= 0.5 for case in cases)
    assert any(case.params[1] == 0.0 for case in cases)      # the draw did go below
    assert cli.main(["verify", str(tmp_path / "project.toml"), "--cases", "4"]) == 0


def test_verify_data_uses_real_rows(tmp_path, capsys):
    project = write(tmp_path, LOG_MODEL)           # no ranges: the rows decide
    data = write(tmp_path, "y,x,comment\n" + "".join(
        f"{1.5 * (k + 1) / 7 + 0.3:.6f},{(k + 1) / 7:.6f},row{k}\n" for k in range(20)), "data.csv")
    assert cli.main(["verify", str(project), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "3 cases from" in out and "data.csv" in out and "pass" in out


def test_verify_data_with_vector_columns(tmp_path, capsys):
    project = copy_example("logistic", tmp_path)
    data = project.parent / "data.csv"
    assert cli.main(["verify", str(project), "--backend", "numpy", "--data", str(data),
                     "--cases", "2"]) == 0
    assert "2 cases from" in capsys.readouterr().out


@pytest.mark.parametrize("content, fragments", [
    ("x,y\n1,2\n-1,3\n", ["case 1 of 3 is outside the model's domain", "sample 1",
                          "x=-1", "every row of", "data.csv"]),
    ("x,z\n1,2\n", ["data.csv", "missing column 'y'"]),
    ("x,y\n1,2\n1,abc\n", ["data.csv", "row 2, column 'y'", "'abc' is not a number"]),
    ("x,y\n", ["data.csv", "no rows"]),
    ("", ["data.csv", "empty"]),
])
def test_bad_data_file_is_one_line(tmp_path, content, fragments):
    project = write(tmp_path, LOG_MODEL)
    data = write(tmp_path, content, "data.csv")
    done = gradforge("verify", project, "--data", data, cwd=tmp_path)
    assert_one_line_error(done, *fragments)


def test_drop_invalid_skips_bad_rows(tmp_path, capsys):
    project = write(tmp_path, LOG_MODEL)
    data = write(tmp_path, "x,y\n1,2\n2,oops\n3,4.5\n0.5,1\n", "data.csv")
    assert cli.main(["verify", str(project), "--data", str(data), "--drop-invalid"]) == 0
    assert "pass" in capsys.readouterr().out


def test_missing_data_file(tmp_path):
    project = write(tmp_path, LOG_MODEL)
    assert_one_line_error(gradforge("verify", project, "--data", "nope.csv", cwd=tmp_path),
                          "nope.csv", "no such file")


# ------------------------------------------------------------------ --strict, as CI runs it

def _without(tools: list[str], tmp_path: Path) -> str:
    """A PATH with python but without ``tools`` (symlinks to everything else we need)."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for name in ("uname", "sh", "env"):
        found = shutil.which(name)
        if found:
            (shadow / name).symlink_to(found)
    (shadow / "python3").symlink_to(sys.executable)
    assert not any(shutil.which(t, path=str(shadow)) for t in tools)
    return str(shadow)


def test_strict_fails_when_a_backend_was_skipped(tmp_path):
    """What .ci/run does: `gradforge verify --strict` with CI=true. Without gcc the C backend
    is skipped: exit 0 without --strict (the table says so), exit 1 with it."""
    project = copy_example("trend", tmp_path)
    env = dict(os.environ, CI="true", PATH=_without(["gcc", "swift", "cc"], tmp_path))
    relaxed = gradforge("verify", project, "--backend", "numpy", "--backend", "c",
                        cwd=tmp_path, env=env)
    assert relaxed.returncode == 0, relaxed.stderr
    assert "skipped" in relaxed.stdout
    strict = gradforge("verify", project, "--backend", "numpy", "--backend", "c", "--strict",
                       cwd=tmp_path, env=env)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "--strict: 1 backend(s) skipped (c)" in strict.stderr
    assert "Traceback" not in strict.stderr
    complete = gradforge("verify", project, "--backend", "numpy", "--strict", cwd=tmp_path,
                         env=env)
    assert complete.returncode == 0, complete.stderr


def test_ci_script_verifies_strictly():
    script = (ROOT / ".ci" / "run").read_text()
    assert "verify --strict" in script


# ------------------------------------------------------------------ progress on a terminal

def _on_a_tty(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe): (status, out, err)."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gradforge", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=child, text=True)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:          # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = proc.stdout.read()
    proc.wait(timeout=600)
    os.close(main)
    return proc.returncode, out, b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_a_terminal_and_silence_otherwise(tmp_path):
    project = copy_example("huber", tmp_path)
    code, out, err = _on_a_tty(["verify", str(project), "--backend", "numpy"], tmp_path)
    assert code == 0, out + err
    for stage in ("differentiating", "preparing the 50-digit reference",
                  "reference: derivative check, finite differences for parameter 1/5",
                  "parameter 5/5", "reference: case 1/3", "reference: case 3/3",
                  "numpy (1/1): building and running 3 cases"):
        assert stage in err, err
    assert "\r" in err                                     # one line, rewritten in place
    assert "pass" in out and "reference:" not in out       # results stay on stdout
    piped = gradforge("verify", project, "--backend", "numpy", cwd=tmp_path)
    assert piped.returncode == 0
    assert piped.stderr == ""                              # no noise in logs and pipes
    assert piped.stdout == out


def test_explain_shows_progress_only_on_a_terminal(tmp_path):
    project = copy_example("mlp", tmp_path)
    code, out, err = _on_a_tty(["explain", str(project)], tmp_path)
    assert code == 0, out + err
    assert "differentiating" in err and "gradient entries as formulas" in err, err
    assert "∂ℓ/∂" in out and "differentiating" not in out
    piped = gradforge("explain", project, cwd=tmp_path)
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout == out


def test_a_long_stage_keeps_ticking():
    import io
    import time
    from gradforge import status_line

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        with status_line.StatusLine(stream) as progress:
            progress("simplifying")
            time.sleep(3 * status_line.TICK)
    text = terminal.getvalue()
    assert text.count("simplifying") >= 3 and text.endswith("\r\033[K")
    assert pipe.getvalue() == ""


# ------------------------------------------------------------------ no debris in TMPDIR

def test_swift_verify_leaves_no_temporary_folders(tmp_path):
    require_tool("swift")
    project = copy_example("trend", tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    done = gradforge("verify", project, "--backend", "swift", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "swift    pass" in done.stdout
    assert sorted(p.name for p in scratch.iterdir()) == []
