"""Issue 7 item 4: a project name that would make a backend's output shadow a library.

A project named ``numpy`` used to generate ``numpy.py`` importing itself, one named ``math`` a
``math.h`` hiding ``<math.h>`` under ``-I build/c``. Every backend declares the names its
output must not take (``Backend.shadowed_names``); the core refuses them before emitting,
with one line naming the file, ``[project] name`` and the library hidden.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import gradforge
from gradforge.backend import check_output_names
from gradforge.errors import ProjectError

PROJECT = """\
[project]
name = "{name}"

[parameters]
a = 0.5

[inputs]
x = {{}}

[targets]
y = {{}}

[model]
prediction = "a*x"
loss = "(prediction - y)**2"

[backends.{backend}]
"""

#: (backend, project name) pairs whose output would hide a library.
SHADOWING = [
    ("numpy", "numpy"), ("numpy", "math"), ("numpy", "string"), ("numpy", "stat"),
    ("numpy", "random"),
    ("c", "math"), ("c", "stdlib"), ("c", "string"), ("c", "stdio"), ("c", "String"),
    ("swift", "Foundation"), ("swift", "foundation"), ("swift", "swift"), ("swift", "Metal"),
    ("swift", "metal"),
]
#: Names that hide nothing for that backend (so the check is not a blanket refusal).
HARMLESS = [("numpy", "trend"), ("numpy", "test"), ("numpy", "numpy_model"), ("c", "test"), ("c", "numpy"),
            ("swift", "test"), ("swift", "math"), ("metal", "metal"), ("metal", "foundation")]


def project(tmp_path, name: str, backend: str):
    path = tmp_path / name / "project.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    precision = '\nprecision = "float32"' if backend == "metal" else ""
    path.write_text(PROJECT.format(name=name, backend=backend).replace(
        f'name = "{name}"', f'name = "{name}"{precision}', 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("backend,name", SHADOWING)
def test_shadowing_name_is_a_project_error(tmp_path, backend, name):
    path = project(tmp_path, name, backend)
    program = gradforge.load_program(path)
    with pytest.raises(ProjectError) as err:
        gradforge.emit(program, backend)
    assert err.value.location.key == "project.name"
    assert "hides" in str(err.value) and "rename the project" in str(err.value)


def test_swift_module_option_is_checked_too(tmp_path):
    program = gradforge.load_program(project(tmp_path, "trend", "swift"))
    with pytest.raises(ProjectError) as err:
        gradforge.emit(program, "swift", {"module": "Foundation"})
    assert err.value.location.key == "backends.swift.module"
    assert "SwiftModule" not in str(err.value)
    gradforge.emit(program, "swift", {"module": "FoundationModel"})


@pytest.mark.parametrize("backend,name", HARMLESS)
def test_harmless_names_build(tmp_path, backend, name):
    program = gradforge.load_program(project(tmp_path, name, backend))
    assert gradforge.emit(program, backend)


def test_every_builtin_backend_declares_its_names(registry):
    for name in ("numpy", "c", "swift", "metal"):
        backend = registry.backend(name)
        assert backend.shadowed_names, name


def test_cli_build_fails_with_one_line_and_writes_nothing(tmp_path):
    path = project(tmp_path, "math", "c")
    proc = subprocess.run([sys.executable, "-m", "gradforge.cli", "build", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"{path}:2:" in lines[0] and "project.name" in lines[0]
    assert "<math.h>" in lines[0]
    assert not (path.parent / "build").exists()


def test_verify_reports_the_name_instead_of_running(tmp_path):
    from gradforge.verification import make_cases, verify
    path = project(tmp_path, "numpy", "numpy")
    spec = gradforge.load_project(path)
    program = gradforge.compile_project(spec)
    from gradforge.plugins import load_registry
    backend = load_registry().backend("numpy")
    _, reports = verify(spec, program, [backend], cases=make_cases(spec, count=1))
    assert reports[0].status == "error" and "hides" in reports[0].detail


def test_check_is_case_insensitive():
    class Fake(gradforge.backend.Backend):
        name = "fake"
        shadowed_names = {"math": "the system header <math.h>"}

    from conftest import example_path
    program = gradforge.load_program(example_path("trend"))
    check_output_names(Fake(), program, {})
    Fake.output_names = lambda self, program, options: {"MATH": "project.name"}
    with pytest.raises(ProjectError, match="<math.h>"):
        check_output_names(Fake(), program, {})
