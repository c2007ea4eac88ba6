"""Shared fixtures: example projects, toolchain requirements, the plugin registry."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/project.toml"))
IN_CI = os.environ.get("CI") == "true"


def require_tool(tool: str) -> str:
    """Path of ``tool``; a missing tool fails the test in CI and skips it elsewhere."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not found on PATH"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: toolchains are required)")
        pytest.skip(message)
    return path


def example_path(name: str) -> Path:
    return ROOT / "examples" / name / "project.toml"


def examples_for(backend: str) -> list[str]:
    """The examples whose optimizer and bounds ``backend``'s trainer implements (the others
    are refused at build time; tests/test_convergence.py checks that refusal)."""
    import gradforge
    from gradforge.plugins import load_registry
    plugin = load_registry().backend(backend)
    return [name for name in EXAMPLES
            if plugin.trains(gradforge.load_program(example_path(name)))]


#: What an example folder holds in git; anything else there (a `build/` folder made by the
#: README's first command, SwiftPM's `.build/`) belongs to the user and must not reach a test.
PROJECT_FILES = ("project.toml", "*.csv")


def copy_example(name: str, dest: Path, examples: Path | None = None) -> Path:
    """Copy an example's project file and data (nothing generated) to ``dest/name``; returns
    the copied project file. Tests never depend on what a user built in examples/."""
    source = (examples or ROOT / "examples") / name
    folder = dest / name
    folder.mkdir(parents=True)
    for pattern in PROJECT_FILES:
        for path in sorted(source.glob(pattern)):
            shutil.copy2(path, folder / path.name)
    return folder / "project.toml"


@pytest.fixture(scope="session")
def registry():
    from gradforge.plugins import load_registry
    return load_registry()


def pytest_collection_modifyitems(config, items):
    """Slow sweeps run only with GRADFORGE_SLOW=1 (or when selected with -m slow)."""
    if os.environ.get("GRADFORGE_SLOW") == "1" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow sweep: set GRADFORGE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _examples_state() -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(ROOT)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted((ROOT / "examples").rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def pytest_sessionstart(session):
    session.config.stash[_EXAMPLES_KEY] = _examples_state()


def pytest_sessionfinish(session, exitstatus):
    """The README's commands work in either order only if no test writes into examples/:
    a run that changed it fails, naming what changed."""
    before = session.config.stash.get(_EXAMPLES_KEY, None)
    if before is None:
        return
    after = _examples_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"tests changed examples/ ({len(changed)} file(s), e.g. "
                   f"{', '.join(changed[:3])}): a test must copy an example, never write there")
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_EXAMPLES_KEY = pytest.StashKey[dict]()
