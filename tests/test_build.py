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

from conftest import ROOT, example_path


def copy_example(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(ROOT / "examples" / name, folder)
    return folder / "project.toml"


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
