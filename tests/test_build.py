"""The build command: deterministic output, headers, --check, manifests, --out, init."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradforge import cli
from gradforge.writer import MARKER

from conftest import ROOT, copy_example, example_path


def build(project: Path, *extra: str) -> int:
    return cli.main(["build", str(project), "--backend", "numpy", *extra])


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_output_is_byte_identical_across_processes(tmp_path):
    """Same input → same bytes, whatever Python's hash seed (no set-order leaks)."""
    project = copy_example("mlp", tmp_path)
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "gradforge.cli", "build", str(project),
                        "--backend", "numpy", "--out", str(out)], check=True, env=env,
                       capture_output=True)
        outputs.append(tree(out))
    assert outputs[0] == outputs[1]


def test_every_file_has_the_generated_header(tmp_path):
    project = copy_example("trend", tmp_path)
    assert build(project) == 0
    files = list((project.parent / "build").rglob("*"))
    assert files
    for path in files:
        if path.is_file():
            head = path.read_text().splitlines()[:5]
            assert any(MARKER.search(line) for line in head), path


def test_check_mode_reports_changes_and_writes_nothing(tmp_path, capsys):
    project = copy_example("trend", tmp_path)
    assert build(project, "--check") == 1            # nothing built yet
    assert not (project.parent / "build").exists()
    assert build(project) == 0
    assert build(project, "--check") == 0
    generated = project.parent / "build" / "numpy" / "trend.py"
    generated.write_text(generated.read_text() + "# edited\n")
    capsys.readouterr()
    assert build(project, "--check") == 1
    assert "trend.py" in capsys.readouterr().out


def test_stale_files_are_removed_via_the_manifest(tmp_path):
    project = copy_example("trend", tmp_path)
    assert build(project) == 0
    text = project.read_text().replace('name = "trend"', 'name = "curve"')
    project.write_text(text)
    assert build(project) == 0
    folder = project.parent / "build" / "numpy"
    assert (folder / "curve.py").exists()
    assert not (folder / "trend.py").exists()


def test_out_on_the_command_line_may_point_anywhere(tmp_path):
    project = copy_example("trend", tmp_path)
    out = tmp_path / "elsewhere" / "gen"
    assert build(project, "--out", str(out)) == 0
    assert (out / "trend.py").exists()


def test_init_writes_a_project_that_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "starter"]) == 0
    project = tmp_path / "starter" / "project.toml"
    assert project.exists()
    assert cli.main(["build", str(project), "--backend", "numpy"]) == 0
    assert cli.main(["init", "starter"]) == 2        # never overwrites


def test_explain_prints_short_formulas_and_op_counts(capsys):
    assert cli.main(["explain", str(example_path("trend"))]) == 0
    out = capsys.readouterr().out
    assert "∂ℓ/∂a = x**2*sign(prediction - y)" in out
    assert "re(" not in out and "im(" not in out and "Derivative" not in out
    assert "loss+gradient" in out
    assert cli.main(["explain", str(example_path("huber"))]) == 0
    out = capsys.readouterr().out
    assert "∂ℓ/∂b    = Piecewise((r, Abs(r) <= delta), (delta*sign(r), True))" in out
    assert "Eq(" not in out


def test_verify_passes_for_numpy(capsys):
    assert cli.main(["verify", str(example_path("huber")), "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "pass" in out


@pytest.mark.parametrize("name", ["trend", "huber", "logistic", "mlp"])
def test_examples_build_with_all_their_backends(name, tmp_path):
    project = copy_example(name, tmp_path)
    assert cli.main(["build", str(project)]) == 0


def _fresh_clone(tmp_path: Path) -> Path:
    """What a fresh clone holds that the README's two commands read: tests and examples
    (project files only) and pyproject.toml (pytest's settings)."""
    from conftest import EXAMPLES
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "tests", clone / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    for name in EXAMPLES:
        copy_example(name, clone / "examples")
    shutil.copy2(ROOT / "pyproject.toml", clone / "pyproject.toml")
    return clone


@pytest.mark.parametrize("order", ["build, then test", "test, then build"])
def test_readme_commands_work_in_either_order(tmp_path, order):
    """README: `gradforge build examples/trend/project.toml`, then `python3 -m pytest -q`.
    The build leaves examples/trend/build/ behind; the tests must not care, and must not
    leave anything in examples/ that would trouble the build. (This file's tests stand for
    the suite: they are the ones that copy examples.)"""
    clone = _fresh_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    first = [sys.executable, "-m", "gradforge.cli", "build", "examples/trend/project.toml"]
    second = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
              "tests/test_build.py", "-k", "not readme_commands"]
    steps = [first, second] if order.startswith("build") else [second, first]
    before = tree(clone / "examples")
    for step in steps:
        done = subprocess.run(step, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, (step, done.stdout[-3000:], done.stderr[-3000:])
        if step is second:
            after = {k: v for k, v in tree(clone / "examples").items()
                     if not k.startswith("trend/build/")}
            assert after == before, "the tests changed examples/"
    assert (clone / "examples" / "trend" / "build" / "numpy" / "trend.py").exists()
