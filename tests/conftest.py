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
