"""The text protocol between gradforge and a compiled verification harness.

Backends that run native code (C, Swift, Metal-through-the-shim) build a small harness
program that reads cases on standard input and writes results on standard output, so one build
serves many checks. Both directions are whitespace-separated numbers; floats are written with
17 significant digits (``repr``) and the harness prints with at least that precision.

Input::

    <number of cases>
    for each case:
        <n samples>
        <P parameter values, flat θ order>
        for each field in program.fields order (inputs, then targets):
            <n × field size values, sample-major, row-major within a sample>
        for each constant in program.constants order: <value>

Output, for each case in order::

    <objective> <P gradient values> <n predictions> <P values of θ after one optimizer step>

The optimizer step starts from a fresh state (zeros, step counter 0), uses the default
hyper-parameters and the full-batch gradient of the objective at θ.
"""
from __future__ import annotations

from typing import Sequence

from .backend import Case, Result
from .errors import ToolchainError
from .ir import Program


def encode_cases(program: Program, cases: Sequence[Case]) -> str:
    """Serialize ``cases`` for a harness's standard input."""
    out = [str(len(cases))]
    for case in cases:
        out.append(str(case.n))
        out.append(" ".join(repr(float(v)) for v in case.params))
        for f in program.fields:
            out.append(" ".join(repr(float(v)) for row in case.data[f.name] for v in row))
        out.append(" ".join(repr(float(case.constants.get(c.name, c.default)))
                            for c in program.constants))
    return "\n".join(out) + "\n"


def decode_results(program: Program, cases: Sequence[Case], text: str) -> list[Result]:
    """Parse a harness's standard output back into :class:`Result` objects."""
    try:
        values = [float(tok) for tok in text.split()]
    except ValueError as exc:
        raise ToolchainError(f"harness printed something that is not a number: {exc}")
    results = []
    pos = 0
    p = program.num_params
    for case in cases:
        need = 1 + p + case.n + p
        if pos + need > len(values):
            raise ToolchainError(f"harness output too short ({len(values)} numbers)")
        chunk = values[pos:pos + need]
        pos += need
        results.append(Result(chunk[0], tuple(chunk[1:1 + p]),
                              tuple(chunk[1 + p:1 + p + case.n]), tuple(chunk[1 + p + case.n:])))
    if pos != len(values):
        raise ToolchainError(f"harness printed {len(values) - pos} numbers too many")
    return results
