"""Differential fuzzing: random project files over the whole vocabulary, every backend against
the 50-digit reference, and C training runs against NumPy's on the same seed.

Default run (fast): 20 models through NumPy and C (one gcc call per precision), the float32
ones through Metal, three of them through Swift (one package, one build), a short training
run of each in C and NumPy. ``GRADFORGE_SLOW=1`` runs 2,000 models in 40 blocks of 50 (all in
NumPy and C, training compared on every fourth, Metal on every fourth float32 model, Swift on
every twentieth). A failure is shrunk to a small
project file, printed in the assertion message, to paste into a regression test.
"""
from __future__ import annotations

import os
import tomllib

import pytest

from conftest import IN_CI, require_tool
from fuzzing import (prepare, report, run_c, run_metal, run_numpy, run_swift, shrink,
                     still_fails)
from random_models import fuzz_project_text

FAST_SEEDS = range(20)
SLOW_BLOCKS, SLOW_BLOCK_SIZE = 40, 50
SLOW_FIRST_SEED = 100_000


def _toolchains(registry) -> dict[str, bool]:
    """Which runners are here; in CI a missing one fails the test."""
    available = {}
    for name in ("c", "swift", "metal"):
        tools = registry.backend(name).toolchains()
        available[name] = all(t.available for t in tools)
        if not available[name] and IN_CI:
            pytest.fail(f"{name} toolchain missing: {tools}")
    return available


def fuzz(seeds, registry, workdir, swift_every: int, metal_every: int, train_every: int = 1,
         samples=(7, 1)):
    require_tool("gcc")
    available = _toolchains(registry)
    subjects, broken = [], []
    for seed in seeds:
        text = fuzz_project_text(seed)
        try:
            subjects.append(prepare(text, seed, samples))
        except Exception as exc:        # the generator only writes valid, buildable models
            broken.append(f"seed {seed}: {type(exc).__name__}: {exc}\n{text}")
    assert not broken, "\n\n".join(broken[:2])
    run_numpy(registry, subjects, workdir)
    run_c(subjects, workdir, train=train_every)
    if available["metal"]:
        float32 = [s for s in subjects if s.precision == "float32"]
        run_metal(registry, float32[::metal_every], workdir)
    if available["swift"]:
        run_swift(registry, subjects[::swift_every], workdir)
    failing = [s for s in subjects if s.failures]
    if failing:
        first = failing[0]
        backend = next(iter(first.failures))
        shrunk = shrink(first.text, still_fails(registry, backend, workdir / "shrink"))
        others = "".join(f"\n{s.name}: {', '.join(s.failures)}" for s in failing[1:])
        pytest.fail(f"{len(failing)} of {len(subjects)} random models disagree with the "
                    f"reference{others}\n{report(first, shrunk)}", pytrace=False)
    return len(subjects)


def test_fuzz_fast(registry, tmp_path):
    assert fuzz(FAST_SEEDS, registry, tmp_path, swift_every=7, metal_every=1) == len(FAST_SEEDS)


@pytest.mark.slow
@pytest.mark.parametrize("block", range(SLOW_BLOCKS))
def test_fuzz_slow(block, registry, tmp_path):
    first = SLOW_FIRST_SEED + block * SLOW_BLOCK_SIZE
    seeds = range(first, first + SLOW_BLOCK_SIZE)
    assert fuzz(seeds, registry, tmp_path, swift_every=20, metal_every=4, train_every=4,
                samples=(5, 1)) == SLOW_BLOCK_SIZE


def test_shrinker_reduces_a_failure():
    """The shrinker keeps what makes a predicate fail and drops the rest."""
    def prediction(text):
        return tomllib.loads(text)["model"]["prediction"]

    text = next(t for t in map(fuzz_project_text, range(100)) if "sigmoid(" in prediction(t))
    def fails(t):          # stands for "a backend still disagrees": valid and has sigmoid
        prepare(t)
        return "sigmoid(" in prediction(t)

    shrunk = shrink(text, fails, budget=300)
    assert "sigmoid(" in prediction(shrunk)
    assert len(prediction(shrunk)) < len(prediction(text)) / 2
    assert "regularization" not in shrunk
    prepare(shrunk)                      # still a valid project


if os.environ.get("GRADFORGE_FUZZ_SEEDS"):
    # GRADFORGE_FUZZ_SEEDS=17,42 replays particular seeds (e.g. from a slow-mode failure)
    @pytest.mark.parametrize("seed", [int(s) for s in os.environ["GRADFORGE_FUZZ_SEEDS"].split(",")])
    def test_fuzz_replay(seed, registry, tmp_path):
        fuzz([seed], registry, tmp_path, swift_every=1, metal_every=1)
