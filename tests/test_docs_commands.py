"""Every fenced block in README.md and docs/ is executed or validated, as a new user would.

Each Markdown file gets a fresh copy of the repository (tracked and untracked-but-not-ignored
files, as on a fresh clone: no build folders) and its blocks run **in order** in that copy, so
a page may build something in one block and compile it in the next, exactly as a reader
following the page would. What happens to a block depends on its language tag:

* ``sh``, ``bash``, ``shell`` — run with ``bash -e -o pipefail`` from the repository root.
* ``console`` — the ``$ `` lines are run; every other line (except ``...``/``…``) is expected
  output and must appear in what the commands printed.
* ``python`` — run as a script from the repository root.
* ``toml`` — parsed; a block with ``[project]`` and ``[model]`` is loaded as a project.
* ``json`` — parsed.
* ``c``, ``swift`` — written to a file when preceded by ``<!-- docs-test: file PATH -->``
  (a later command compiles it); otherwise compiled on their own (``gcc -fsyntax-only``,
  ``swiftc -typecheck``).
* ``text`` — listings and output shown for reading; nothing to run.

A block without a tag, or with one not listed here, fails the test: tag it. A block that cannot
run on Linux (Xcode, Metal) or is a fragment is preceded by
``<!-- docs-test: skip (reason) -->`` (the reason is required).

The environment: ``gradforge``, ``python`` and ``python3`` on PATH run this checkout with the
interpreter running the tests (the copy's ``core/`` and ``plugins/`` come first on
PYTHONPATH). Two commands are not run literally, because they would change or recurse into the
environment the suite runs in:

* ``python3 -m pip install -e …`` (or ``pip install -e …``) would repoint the shared
  installation at the temporary copy. It is replaced by a check that the ``gradforge``
  distribution is installed (with the ``test`` extra's tools when it asks for ``[test]``); the
  rest of its ``&&`` chain runs as written.
* ``python -m pytest …`` would run the whole suite, this test included, inside itself. It runs
  with ``--collect-only`` appended: the command, its arguments and the test files it names
  must still be valid.

Commands that need ``swift``, ``gcc``, ``cc`` or ``g++`` skip without them (and fail with
``CI=true``, like every toolchain test). A failure names the Markdown file and the line of
the block.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import IN_CI, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"sh", "bash", "shell"}
KNOWN = SHELL | {"console", "python", "toml", "json", "c", "swift", "text"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)")
DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(?P<what>skip|file)\b\s*(?P<arg>.*?)\s*-->\s*$")
PIP_EDITABLE = re.compile(r"(?:python3?\s+-m\s+)?pip3?\s+install\s+(?:-e|--editable)\s+"
                          r"(?P<target>'[^']*'|\"[^\"]*\"|\S+)")
PYTEST = re.compile(r"(?:^|(?<=[\s;&|(]))(?:python3?\s+-m\s+pytest|pytest)(?=\s|$)[^\n&|;#]*",
                    re.M)
TOOLS = ("swift", "swiftc", "gcc", "g++", "cc")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its tag, its text and the directive before it."""

    doc: Path
    line: int                  # line of the opening fence (1-based)
    lang: str
    text: str
    skip: str | None = None    # the reason, when marked skip
    file: str | None = None    # where to write it, when marked file

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with the directive on the last non-blank line before each."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match.group("fence")
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        directive = DIRECTIVE.match(before)
        skip = file = None
        if directive and directive.group("what") == "skip":
            skip = directive.group("arg").strip("() ") or ""
        elif directive:
            file = directive.group("arg")
        indent = len(match.group("indent"))
        text = "\n".join(line[indent:] for line in lines[i + 1:end]) + "\n"
        found.append(Block(doc, i + 1, match.group("lang").lower(), text, skip, file))
        i = end + 1
    return found


# ------------------------------------------------------------------ the environment

def fresh_copy(target: Path) -> Path:
    """The repository as a fresh clone has it: tracked files and untracked ones git does not
    ignore (so a new doc page or test is included, build output is not)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
            ".git", "build", "__pycache__", ".pytest_cache", "*.egg-info"))
        return target
    for rel in filter(None, listed):
        source = ROOT / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    return target


def environment(root: Path, bin_dir: Path) -> dict[str, str]:
    """``gradforge``, ``python`` and ``python3`` run this checkout's code in the copy."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, args in (("python", ""), ("python3", ""), ("gradforge", " -m gradforge.cli")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(root / "core"), str(root / "plugins")])
    env.pop("PYTHONSTARTUP", None)
    return env


def replace_editable_install(command: str) -> str:
    """``pip install -e TARGET`` → a check that gradforge (and ``[test]``'s tools) is there."""
    def check(match: re.Match) -> str:
        target = match.group("target").strip("'\"")
        modules = ["gradforge"] + (["pytest", "numpy", "scipy"] if "test" in target else [])
        code = "; ".join(f"import importlib.util as u; assert u.find_spec({m!r}), {m!r}"
                         for m in modules)
        code = f"import importlib.metadata as m; m.distribution('gradforge'); {code}"
        return f"{sys.executable} -c \"{code}\""
    return PIP_EDITABLE.sub(check, command)


def collect_only(command: str) -> str:
    """``python -m pytest ARGS`` → the same with ``--collect-only`` (see the docstring)."""
    return PYTEST.sub(lambda m: m.group(0).rstrip() + " --collect-only -q ", command)


def needed_tools(command: str) -> list[str]:
    words = set(re.findall(r"(?:^|[\s;&|(])([\w+.-]+)", command))
    return [tool for tool in TOOLS if tool in words]


def require(tools: list[str], block: Block) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        message = f"{block.where}: {', '.join(missing)} not found on PATH"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: toolchains are required)")
        pytest.skip(message)


def run_shell(command: str, block: Block, root: Path, env: dict, literal: bool = False) -> str:
    """Run a block's commands (``literal``: one of ours, without the two substitutions)."""
    if not literal:
        command = collect_only(replace_editable_install(command))
    require(needed_tools(command), block)
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (f"{block.where}: exit {proc.returncode} from\n{command}\n"
                                  f"{output[-3000:]}")
    return output


# ------------------------------------------------------------------ one handler per tag

def check_block(block: Block, root: Path, env: dict) -> None:
    if block.file:
        target = root / block.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        return
    if block.lang in SHELL:
        run_shell(block.text, block, root, env)
    elif block.lang == "console":
        commands = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
        assert commands, f"{block.where}: a console block needs `$ ` command lines"
        output = run_shell("\n".join(commands), block, root, env)
        for line in block.text.splitlines():
            expected = line.strip()
            if expected and not line.startswith("$ ") and expected not in ("...", "…"):
                assert expected in output, (f"{block.where}: expected output line "
                                            f"{expected!r} not printed; got:\n{output[-3000:]}")
    elif block.lang == "python":
        script = root / f".docs-test-{block.doc.stem}-{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        proc = subprocess.run([sys.executable, str(script)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{block.where}:\n{(proc.stdout + proc.stderr)[-3000:]}"
    elif block.lang == "toml":
        try:
            table = tomllib.loads(block.text)
        except tomllib.TOMLDecodeError as err:
            pytest.fail(f"{block.where}: invalid TOML: {err}")
        if "project" in table and "model" in table:
            project = root / f".docs-test-{block.doc.stem}-{block.line}" / "project.toml"
            project.parent.mkdir()
            project.write_text(block.text, encoding="utf-8")
            proc = subprocess.run([sys.executable, "-c", "import sys, gradforge; "
                                   "gradforge.load_program(sys.argv[1])", str(project)],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{block.where}: {proc.stderr[-2000:]}"
    elif block.lang == "json":
        try:
            json.loads(block.text)
        except json.JSONDecodeError as err:
            pytest.fail(f"{block.where}: invalid JSON: {err}")
    elif block.lang == "c":
        require(["gcc"], block)
        run_shell(f"gcc -std=c99 -fsyntax-only -x c - <<'GRADFORGE_DOC'\n{block.text}"
                  "GRADFORGE_DOC", block, root, env, literal=True)
    elif block.lang == "swift":
        require(["swiftc"], block)
        source = root / f".docs-test-{block.doc.stem}-{block.line}.swift"
        source.write_text(block.text, encoding="utf-8")
        run_shell(f"swiftc -typecheck {source}", block, root, env, literal=True)


# ------------------------------------------------------------------------- the tests

def _id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_block_is_tagged(doc):
    """Each block says what it is, so none is silently left out of the run below."""
    problems = []
    for block in blocks(doc):
        if block.skip is not None and not block.skip:
            problems.append(f"{block.where}: `docs-test: skip` needs a reason in parentheses")
        if block.skip is None and block.lang not in KNOWN:
            problems.append(f"{block.where}: block tagged {block.lang or 'nothing'!r}; use one "
                            f"of {', '.join(sorted(KNOWN))}, or mark it "
                            "<!-- docs-test: skip (reason) -->")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", [d for d in DOCS
                                 if any(b.skip is None and b.lang != "text" for b in blocks(d))],
                         ids=_id)
def test_blocks_run(doc, tmp_path):
    """The page's blocks, in order, in a fresh copy of the repository."""
    root = fresh_copy(tmp_path / "repo")
    env = environment(root, tmp_path / "bin")
    for block in blocks(doc):
        if block.skip is None and block.lang in KNOWN and block.lang != "text":
            check_block(block, root, env)


def test_replacements_keep_the_rest_of_the_chain():
    """The two substitutions touch only what they must."""
    line = "python3 -m pip install -e '.[test]' && python3 -m pytest -q"
    replaced = collect_only(replace_editable_install(line))
    assert "pip" not in replaced and "&& python3 -m pytest -q --collect-only -q " in replaced
    assert "'pytest'" in replaced
    plain = replace_editable_install("python3 -m pip install -e . && gradforge build x.toml")
    assert plain.endswith("&& gradforge build x.toml") and "'pytest'" not in plain
    assert collect_only("python -m pytest -q tests/test_a.py      # ~1 min") \
        .startswith("python -m pytest -q tests/test_a.py --collect-only -q ")
    assert collect_only("swiftc -typecheck /tmp/pytest-of-root/x.swift") \
        == "swiftc -typecheck /tmp/pytest-of-root/x.swift"
