"""Plugins: entry-point discovery, broken plugins, hook documentation, hook calls."""
from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gradforge
from gradforge import hookspecs
from gradforge.backend import Backend
from gradforge.errors import BackendError
from gradforge.plugins import load_registry

from conftest import EXAMPLES, example_path, require_tool

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


# ------------------------------------------------ the third-party example: examples/js-backend

JS_BACKEND = Path(__file__).resolve().parents[1] / "examples" / "js-backend"


@pytest.fixture(scope="module")
def js_plugin(tmp_path_factory):
    """examples/js-backend installed as a third party would (pip, entry point), into a folder
    of its own that only subprocesses see: never into the shared site-packages."""
    require_tool("node")
    root = tmp_path_factory.mktemp("js-plugin")
    source = root / "src"
    shutil.copytree(JS_BACKEND, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))          # pip builds in the tree it is given
    target = root / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                              "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    paths = [str(target)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _gradforge(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gradforge.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_js_example_is_discovered_through_its_entry_point(js_plugin):
    listing = _gradforge(js_plugin, "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["entry_point"]: row for row in json.loads(listing.stdout)}
    assert rows["js"]["distribution"] == "gradforge-js"
    assert rows["js"]["status"] == "ok"
    assert rows["numpy"]["distribution"] == "gradforge"
    source = (JS_BACKEND / "gradforge_js" / "plugin.py").read_text()
    imports = {line.split(" import")[0] for line in source.splitlines()
               if line.startswith(("from gradforge", "import gradforge"))}
    assert imports == {"from gradforge.plugin_api"}      # written against the public API only


@pytest.mark.parametrize("name", EXAMPLES)
def test_js_example_verifies_against_the_reference(js_plugin, name):
    """`gradforge verify` runs the generated module with node on seeded cases and compares
    objective, gradient, predictions and one optimizer step with the 50-digit reference."""
    run = _gradforge(js_plugin, "verify", str(example_path(name)), "--backend", "js",
                     "--strict")
    assert run.returncode == 0, run.stdout + run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("js "))
    assert row.split()[1] == "pass", run.stdout


def test_js_example_module_api_and_json_header(js_plugin, tmp_path):
    """The emitted module is usable as documented (predict needs inputs only), and the
    package.json it emits carries the header as a "//" key, so a second build may overwrite."""
    out = tmp_path / "out"
    for _ in range(2):
        build = _gradforge(js_plugin, "build", str(example_path("huber")), "--backend", "js",
                           "--out", str(out))
        assert build.returncode == 0, build.stderr
    folder = next(p.parent for p in out.rglob("huber.mjs"))
    package = json.loads((folder / "package.json").read_text())
    assert package["//"].startswith("Code generated by gradforge") and "DO NOT EDIT." in package["//"]
    script = folder / "check.mjs"
    script.write_text("""
import * as m from "./huber.mjs";
const p = m.initialParameters();
const data = { x: [[1, 2, 3, 4], [0.5, -1, 0, 2]], y: [1.5, -0.25] };
const vg = m.valueAndGradient(p, data);
const h = 1e-6, fd = [];
for (let k = 0; k < m.PARAMETER_COUNT; k++) {
  const up = p.slice(), down = p.slice();
  up[k] += h; down[k] -= h;
  fd.push((m.objective(up, data) - m.objective(down, data)) / (2 * h));
}
const state = m.newOptimizerState();
console.log(JSON.stringify({ value: vg.value, objective: m.objective(p, data),
  gradient: vg.gradient, fd, predict: m.predict(p, { x: data.x }),
  step: m.step(p, vg.gradient, state), constants: m.CONSTANTS }));
""")
    run = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["value"] == pytest.approx(got["objective"], rel=1e-15)
    assert got["gradient"] == pytest.approx(got["fd"], rel=1e-6, abs=1e-8)
    assert got["predict"] == pytest.approx([1.0, 0.15])     # w = 0.1 each, b = 0
    assert got["step"] != [0.1, 0.1, 0.1, 0.1, 0.0]
    assert got["constants"] == {"delta": 1.0, "l2": 0.001}
