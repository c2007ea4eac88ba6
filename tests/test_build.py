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
    assert (out / "numpy" / "trend.py").exists()


def test_out_layout_is_the_same_for_one_backend_and_for_several(tmp_path):
    """--out DIR always means DIR/<backend>; the number of backends changes nothing."""
    project = copy_example("trend", tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert build(project, "--out", str(one)) == 0
    assert cli.main(["build", str(project), "--backend", "numpy", "--backend", "c",
                     "--out", str(two)]) == 0
    assert tree(one / "numpy") == tree(two / "numpy")
    assert sorted(p.name for p in one.iterdir()) == ["numpy"]
    assert sorted(p.name for p in two.iterdir()) == ["c", "numpy"]


def test_out_removes_what_the_old_single_backend_layout_left(tmp_path):
    """Files an earlier build put straight into DIR (the old one-backend layout) go, via the
    manifest, when DIR/<backend> takes over; a user's own file there stays."""
    from gradforge import writer
    project = copy_example("trend", tmp_path)
    out = tmp_path / "gen"
    files = gradforge_emit(project, "numpy")
    writer.write([writer.Output("numpy", out, files)])       # the old layout: DIR/trend.py
    (out / "notes.txt").write_text("mine\n")
    assert (out / "trend.py").exists()
    assert build(project, "--out", str(out), "--check") == 1
    assert build(project, "--out", str(out)) == 0
    assert (out / "numpy" / "trend.py").exists()
    assert not (out / "trend.py").exists()
    assert not (out / ".gradforge-numpy.manifest").exists()
    assert (out / "notes.txt").read_text() == "mine\n"
    assert build(project, "--out", str(out), "--check") == 0


def test_a_moved_default_folder_is_cleaned_up(tmp_path):
    """The Swift package used to be build/swift; now each model has build/swift/<Module>.
    Rebuilding removes the old layout's files and emptied folders (not a user's file)."""
    from gradforge import writer
    project = copy_example("trend", tmp_path)
    old = project.parent / "build" / "swift"
    writer.write([writer.Output("swift", old, gradforge_emit(project, "swift"))])
    assert (old / "Package.swift").exists()
    (old / "Sources" / "notes.md").write_text("mine\n")
    assert cli.main(["build", str(project), "--backend", "swift"]) == 0
    assert (old / "Trend" / "Package.swift").exists()
    assert not (old / "Package.swift").exists() and not (old / "Tests").exists()
    assert not (old / ".gradforge-swift.manifest").exists()
    assert sorted(p.name for p in (old / "Sources").iterdir()) == ["notes.md"]


def gradforge_emit(project: Path, backend: str) -> dict[str, str]:
    import gradforge
    return gradforge.emit(gradforge.load_program(project), backend)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_generated_files_honour_the_umask(tmp_path, umask):
    project = copy_example("trend", tmp_path)
    previous = os.umask(umask)
    try:
        assert build(project) == 0
    finally:
        os.umask(previous)
    folder = project.parent / "build" / "numpy"
    for path in (folder / "trend.py", folder / ".gradforge-numpy.manifest"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, oct(path.stat().st_mode)


def test_train_and_predict_outputs_honour_the_umask(tmp_path, monkeypatch):
    project = copy_example("trend", tmp_path)
    monkeypatch.chdir(project.parent)
    previous = os.umask(0o022)
    try:
        assert cli.main(["train", ".", "data.csv", "--quiet", "--params-out", "p.json"]) == 0
        assert cli.main(["predict", ".", "data.csv", "--params", "p.json", "--out",
                         "q.csv"]) == 0
    finally:
        os.umask(previous)
    for name in ("p.json", "q.csv"):
        assert (project.parent / name).stat().st_mode & 0o777 == 0o644, name


def test_numpy_output_imports_with_the_base_dependencies(tmp_path):
    """What the NumPy backend's module imports must come with `pip install gradforge`
    (the README's first command), not only with the [test] extra."""
    import ast
    import tomllib
    project = copy_example("trend", tmp_path)
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    base_names = {dep.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                  for dep in base}
    source = gradforge_emit(project, "numpy")["trend.py"]
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names}
    assert "numpy" in third_party
    assert third_party <= base_names, f"not in [project] dependencies: {third_party - base_names}"


def test_init_writes_a_project_that_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "starter"]) == 0
    project = tmp_path / "starter" / "project.toml"
    assert project.exists()
    assert cli.main(["build", str(project), "--backend", "numpy"]) == 0
    assert cli.main(["init", "starter"]) == 2        # never overwrites


@pytest.mark.parametrize("folder, name", [("my model", "my_model"), ("3d", "model_3d"),
                                          ("curve-fit", "curve_fit"), ("été", "t"),
                                          ("__", "model"), ("numpy", "numpy_model")])
def test_init_names_a_project_after_its_folder_as_documented(tmp_path, folder, name, capsys):
    assert cli.main(["init", str(tmp_path / folder)]) == 0
    text = (tmp_path / folder / "project.toml").read_text()
    assert f'name = "{name}"' in text
    assert f"project '{name}'" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["my model", "3d", "a-b", ""])
def test_init_refuses_an_invalid_name_instead_of_renaming_it(tmp_path, name, capsys):
    assert cli.main(["init", str(tmp_path / "p"), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name" in err and "not a valid project name" in err
    assert cli.main(["init", str(tmp_path / "p"), "--name", "math"]) == 2   # hides <math.h>
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'math' cannot be used" in err and "math_model" in err
    assert not (tmp_path / "p" / "project.toml").exists()
    assert cli.main(["init", str(tmp_path / "q"), "--name", "my_model"]) == 0
    assert 'name = "my_model"' in (tmp_path / "q" / "project.toml").read_text()


@pytest.mark.parametrize("command", ["build", "verify", "explain"])
def test_every_command_accepts_a_folder_holding_project_toml(tmp_path, monkeypatch, command,
                                                             capsys):
    project = copy_example("trend", tmp_path)
    monkeypatch.chdir(project.parent)
    extra = ["--backend", "numpy"] if command != "explain" else []
    assert cli.main([command, ".", *extra]) == 0, capsys.readouterr().err
    assert cli.main([command, str(project.parent), *extra]) == 0
    if command == "build":
        assert (project.parent / "build" / "numpy" / "trend.py").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert cli.main([command, str(empty), *extra]) == 2
    err = capsys.readouterr().err
    assert "has no project.toml" in err and "Traceback" not in err and err.count("\n") == 1


def test_train_and_predict_accept_a_folder_holding_project_toml(tmp_path, monkeypatch):
    project = copy_example("trend", tmp_path)
    monkeypatch.chdir(project.parent)
    assert cli.main(["train", ".", "data.csv", "--quiet", "--params-out", "p.json"]) == 0
    assert cli.main(["predict", ".", "data.csv", "--params", "p.json", "--out", "q.csv"]) == 0
    assert (project.parent / "q.csv").exists()


def test_python_dash_m_gradforge_runs_the_cli(tmp_path):
    project = copy_example("trend", tmp_path)
    done = subprocess.run([sys.executable, "-m", "gradforge", "build", str(project),
                           "--backend", "numpy"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (project.parent / "build" / "numpy" / "trend.py").exists()
    version = subprocess.run([sys.executable, "-m", "gradforge", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("gradforge ")


def _arguments(parser, path=()):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arguments(sub, path + (name,))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_cli_argument_has_help_text():
    missing = [f"{' '.join(path) or 'gradforge'} {action.dest}"
               for path, action in _arguments(cli._parser()) if not (action.help or "").strip()]
    assert not missing, f"arguments without help: {missing}"


def test_plugins_table_aligns_long_names(monkeypatch, capsys):
    from gradforge import plugins
    from gradforge.plugins import PluginInfo
    real = plugins.load_registry

    def fake_registry(*args, **kwargs):
        registry = real(*args, **kwargs)
        registry.plugins.append(PluginInfo("gradforge_a_very_long_plugin_entry_point", "m",
                                           "gradforge-javascript-backend", "10.20.300"))
        return registry

    monkeypatch.setattr(plugins, "load_registry", fake_registry)
    assert cli.main(["plugins"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if not line.startswith("  ")]
    header, rows = lines[0], lines[1:]
    assert len(rows) >= 5
    for column in ("distribution", "version", "backends", "status"):
        start = header.index(column)
        for row in rows:
            assert row[start - 2:start] == "  " and row[start] != " ", (column, row)


def test_explain_prints_short_formulas_and_op_counts(capsys):
    assert cli.main(["explain", str(example_path("trend"))]) == 0
    out = capsys.readouterr().out
    assert "∂ℓ/∂a = x**2*sign(prediction - y)" in out
    assert "re(" not in out and "im(" not in out and "Derivative" not in out
    assert "loss+gradient" in out
    assert cli.main(["explain", str(example_path("huber"))]) == 0
    out = capsys.readouterr().out
    assert "∂ℓ/∂b    = where(abs(r) <= delta, r, delta*sign(r))" in out
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
