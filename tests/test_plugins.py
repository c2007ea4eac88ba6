"""Plugins: entry-point discovery, broken plugins, hook documentation, hook calls."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

import gradforge
from gradforge import hookspecs
from gradforge.backend import Backend
from gradforge.errors import BackendError
from gradforge.plugins import load_registry

from conftest import example_path

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
         if name.startswith("gradforge_")]


BUILTIN = {"numpy", "c", "swift", "metal"}


def _fake_distribution(root, name, version, module, entry_point, source):
    """An installed distribution (dist-info + module) under ``root``, as pip would lay it out."""
    dist = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[gradforge]\n{entry_point} = {module}\n")
    (root / f"{module}.py").write_text(source)


def test_builtin_backends_come_from_entry_points(tmp_path, monkeypatch):
    """The built-ins are entry points of the gradforge distribution, and an installed
    third-party plugin next to them changes nothing about that (it used to fail this test)."""
    _fake_distribution(tmp_path, "gradforge-echo", "0.3", "gradforge_echo_mod", "echo",
                       "from gradforge.plugin_api import Backend, hookimpl\n"
                       "class Echo(Backend):\n    name = 'echo'\n"
                       "@hookimpl\ndef gradforge_backends():\n    return [Echo()]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert BUILTIN | {"echo"} <= set(registry.backends)
    by_name = {info.name: info for info in registry.plugins}
    for name in BUILTIN:
        assert by_name[name].status == "ok", (name, by_name[name].status)
        assert by_name[name].distribution == "gradforge"
        assert by_name[name].backends == [name]
    assert by_name["echo"].distribution == "gradforge-echo"
    assert by_name["echo"].status == "ok"


def test_builtin_backends_import_only_the_plugin_api():
    """The built-in backends use the public surface a third party has, nothing internal."""
    import ast
    from pathlib import Path
    from gradforge import plugin_api
    files = sorted(Path(__file__).resolve().parents[1].glob("plugins/gradforge_*/*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                    node.module.split(".")[0] == "gradforge":
                assert node.module == "gradforge.plugin_api", (path.name, node.module)
                missing = {a.name for a in node.names} - set(plugin_api.__all__)
                assert not missing, (path.name, missing)
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "gradforge" for a in node.names), \
                    (path.name, "import gradforge")


def test_the_plugin_api_is_complete_and_documented():
    """Every public name resolves and is named in docs/plugins.md (one documented surface)."""
    from pathlib import Path
    from gradforge import plugin_api
    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    for name in plugin_api.__all__:
        assert getattr(plugin_api, name, None) is not None, name
        assert f"`{name}" in doc, f"docs/plugins.md does not document plugin_api.{name}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    """A docstring in hookspecs.py and a row in the hook table of docs/plugins.md."""
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.split()) >= 20, f"{hook} needs a real docstring"
    from pathlib import Path
    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    table = guide.split("## Hooks", 1)[1].split("\n## ", 1)[0]
    signature = inspect.signature(getattr(hookspecs, hook))
    assert f"| `{hook}{signature}` |" in table, f"docs/plugins.md has no row for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_called_by_the_core(hook):
    """A documented hook nobody calls would be a lie; the plugin below records calls."""
    calls = []

    class Recorder:
        __name__ = "recorder"

        @gradforge.hookimpl
        def gradforge_backends(self):
            calls.append("gradforge_backends")
            return []

        @gradforge.hookimpl
        def gradforge_check_program(self, program, backend_name):
            calls.append("gradforge_check_program")

        @gradforge.hookimpl
        def gradforge_postprocess_files(self, program, backend_name, files):
            calls.append("gradforge_postprocess_files")

    registry = load_registry(extra=[Recorder()])
    program = gradforge.load_program(example_path("trend"))
    gradforge.emit(program, "numpy", registry=registry)
    assert hook in calls


def test_a_plugin_can_refuse_a_program_and_edit_files():
    class Policy:
        __name__ = "policy"

        @gradforge.hookimpl
        def gradforge_check_program(self, program, backend_name):
            if program.num_params > 2:
                raise BackendError("too many parameters for this device")

        @gradforge.hookimpl
        def gradforge_postprocess_files(self, program, backend_name, files):
            files["NOTICE.txt"] = "# Code generated by gradforge. DO NOT EDIT.\n"

    registry = load_registry(extra=[Policy()])
    with pytest.raises(BackendError, match="too many parameters"):
        gradforge.emit(gradforge.load_program(example_path("trend")), "numpy",
                       registry=registry)


def test_a_third_party_backend_registered_in_code():
    class Echo(Backend):
        name = "echo"
        description = "writes the parameter names"
        comment_prefix = "#"

        def emit(self, program, options):
            return {"names.txt": "# Code generated by gradforge. DO NOT EDIT.\n"
                    + "\n".join(p.name for p in program.parameters) + "\n"}

    class Plugin:
        __name__ = "echo-plugin"

        @gradforge.hookimpl
        def gradforge_backends(self):
            return [Echo()]

    registry = load_registry(extra=[Plugin()])
    files = gradforge.emit(gradforge.load_program(example_path("trend")), "echo",
                           registry=registry)
    assert files["names.txt"].endswith("a\nb\nc\n")


def test_a_broken_plugin_is_reported_and_does_not_break_the_cli(tmp_path):
    """An installed plugin whose import fails (llm #875): listed with its error, other
    commands still work, and only a project that needs it fails (exit 2)."""
    dist = tmp_path / "gradforge_broken-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gradforge-broken\n"
                                   "Version: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[gradforge]\nbroken = gradforge_broken_mod\n")
    (tmp_path / "gradforge_broken_mod.py").write_text("raise ImportError('boom')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    run = lambda *a: subprocess.run([sys.executable, "-m", "gradforge.cli", *a], env=env,
                                    capture_output=True, text=True, timeout=300)
    listing = run("plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["entry_point"]: row for row in json.loads(listing.stdout)}
    assert rows["broken"]["status"].startswith("error: ImportError: boom")
    assert rows["broken"]["distribution"] == "gradforge-broken"
    assert rows["broken"]["version"] == "1.2.3"
    assert rows["numpy"]["status"] == "ok"
    out = tmp_path / "out"
    ok = run("build", str(example_path("trend")), "--backend", "numpy", "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    project = tmp_path / "p.toml"
    project.write_text(example_path("trend").read_text() + "\n[backends.broken]\n")
    failed = run("build", str(project), "--backend", "broken", "--out", str(out))
    assert failed.returncode == 2
    assert "failed to load" in failed.stderr and "Traceback" not in failed.stderr
