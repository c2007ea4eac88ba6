"""The Swift backend's `threads` option: DispatchQueue.concurrentPerform over fixed blocks of
1024 samples whose partials are added in block order, so the objective, the gradient and the
predictions are bit-identical for every thread count (1 — no Dispatch at all — included), and
agree with the independent reference."""
from __future__ import annotations

import dataclasses

import pytest

import gradforge
from gradforge.lower import compile_project
from gradforge.reference import Reference
from gradforge.verification import compare, make_cases

from conftest import example_path, require_tool

from gradforge_swift.plugin import SwiftBackend

BACKEND = SwiftBackend()


@pytest.mark.toolchain
@pytest.mark.parametrize("example, precision", [("huber", "float64"), ("logistic", "float32")])
def test_threads_give_bit_identical_results(tmp_path, example, precision):
    require_tool("swift")
    spec = dataclasses.replace(gradforge.load_project(example_path(example)),
                               precision=precision)
    program = compile_project(spec)
    # 3 blocks and a short fourth: 2 and 3 threads split them differently
    cases = make_cases(spec, count=2, samples=(3 * 1024 + 77, 1500), seed=7)
    runs = {threads: BACKEND.run(program, {"threads": threads}, cases, tmp_path / f"t{threads}")
            for threads in (1, 2, 3, 0)}
    for threads, results in runs.items():
        assert results == runs[1], f"threads = {threads} differs from the serial sums"
    reference = Reference(spec)
    for case, result in zip(cases, runs[1]):
        assert not compare(result, reference.expected(case), program.precision)


def test_threads_option_is_checked():
    program = gradforge.load_program(example_path("trend"))
    with pytest.raises(gradforge.plugin_api.BackendError, match="threads"):
        BACKEND.emit(program, {"threads": -1})
    text = BACKEND.emit(program, {"threads": 0})["Sources/Trend/TrendKernels.swift"]
    assert "DispatchQueue.concurrentPerform" in text and "import Dispatch" in text
    assert "Dispatch" not in BACKEND.emit(program, {})["Sources/Trend/TrendKernels.swift"]
