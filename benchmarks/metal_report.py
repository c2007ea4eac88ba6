"""Analytic cost report of the Metal gradient kernel (figures, not a timed test).

For each model — the four examples (as float32) and a 577-parameter tanh MLP — it counts, per
sample, what ``<name>_loss_and_gradient_partials`` reads from device memory and the floating-
point work it does, so the expected GPU time on a given machine can be read off:

    time ≈ n × max(bytes/sample ÷ bandwidth, flops/sample ÷ FP32 rate)

Counting rules (on the IR the kernel is printed from, after dead-code elimination):

* bytes: the sample's field values (4 bytes each) and its index in ``order`` (4 bytes).
  Parameters and constants are read once per thread, not per sample (reported separately);
  the partial-sums rows (groups × columns × 4 bytes) are written once per threadgroup.
* flops: + − × ÷ (an n-ary sum or product counts n − 1; x**k with |k| ≤ 8 counts |k| − 1
  multiplications), fabs, comparisons, selects of ``?:``, one add per accumulated column;
  both sides of every ``?:`` are counted (a GPU often evaluates both).
* special: exp, log, sin, cos, tan, tanh, sqrt, pow calls — each weighted as
  ``--special-weight`` flops (default 4: Apple GPUs run transcendentals at about a quarter of
  the FMA rate).
* accumulators: floats each thread keeps across samples (1 + gradient entries). Above roughly
  a hundred they cannot stay in registers and spill to thread memory; ``spill B/sample`` is
  then the worst-case extra traffic (read + write every accumulator per sample), mostly served
  by the GPU's caches.

Usage: python benchmarks/metal_report.py [--bandwidth GB/s] [--tflops TFLOP/s] [--samples N]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import sympy as sp

import gradforge
from gradforge.ir import Program

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("trend", "huber", "logistic", "mlp")
SPECIAL = (sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.tanh)
REGISTER_BUDGET = 100      # floats a thread can keep in registers at useful occupancy (approx.)


@dataclasses.dataclass
class Cost:
    name: str
    params: int
    columns: int               # accumulated outputs per sample: loss + gradient entries
    bytes_per_sample: int
    flops: int
    special: int
    bytes_per_thread: int      # parameters and constants, loaded once per thread

    def weighted_flops(self, special_weight: float) -> float:
        return self.flops + special_weight * self.special

    @property
    def spill_bytes(self) -> int:
        return 8 * self.columns if self.columns > REGISTER_BUDGET else 0


def count(expr) -> tuple[int, int]:
    """(arithmetic flops, special-function calls) of one expression as the printer writes it."""
    flops = special = 0
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, (sp.Symbol, sp.Number, sp.NumberSymbol)) or node in (sp.true,
                                                                                 sp.false):
            continue
        if isinstance(node, sp.Add):
            flops += len(node.args) - 1
        elif isinstance(node, sp.Mul):
            flops += len(node.args) - 1
        elif isinstance(node, sp.Pow):
            base, exponent = node.args
            if exponent.is_Integer and 0 < abs(int(exponent)) <= 8:
                flops += abs(int(exponent)) - 1 + (1 if exponent < 0 else 0)
                stack.append(base)
                continue
            special += 1
            flops += 1 if exponent == -sp.Rational(1, 2) else 0
        elif isinstance(node, SPECIAL):
            special += 1
        elif isinstance(node, (sp.Abs, sp.sign, sp.core.relational.Relational, sp.And,
                               sp.Or, sp.Not)):
            flops += 1
        elif isinstance(node, sp.Piecewise):
            flops += len(node.args) - 1          # one select per ?:
            for value, condition in node.args:
                stack.append(value)
                if condition not in (sp.true, sp.false):
                    stack.append(condition)
            continue
        stack.extend(node.args)
    return flops, special


def gradient_kernel_cost(name: str, program: Program) -> Cost:
    from gradforge_metal.plugin import live_assignments
    kernel = program.loss_and_gradient
    outputs = [kernel.output("loss")] + [g for _, g in kernel.gradient]
    kept, needed = live_assignments(kernel.body,
                                    set().union(*(e.free_symbols for e in outputs)))
    flops = special = 0
    for expr in [a.expr for a in kept] + outputs:
        f, s = count(expr)
        flops += f
        special += s
    flops += len(outputs)                        # acc[k] += …
    field_symbols = {s for f in program.fields for s in f.symbols}
    used_fields = needed & field_symbols
    bytes_per_sample = 4 * len(used_fields) + (4 if used_fields else 0)
    leaves = needed - field_symbols
    return Cost(name, program.num_params, len(outputs), bytes_per_sample, flops, special,
                4 * len(leaves))


def models() -> list[tuple[str, Program]]:
    from gradforge_metal.ci import mlp577_spec
    out = []
    for name in EXAMPLES:
        spec = gradforge.load_project(ROOT / "examples" / name / "project.toml")
        out.append((name, gradforge.compile_project(
            dataclasses.replace(spec, precision="float32"))))
    out.append(("mlp577", gradforge.compile_project(mlp577_spec())))
    return out


def report(bandwidth_gbs: float, tflops: float, samples: int, special_weight: float,
           groups: int = 64) -> str:
    rows = [gradient_kernel_cost(name, program) for name, program in models()]
    head = (f"Metal gradient kernel, per sample (float32). Time for {samples:,} samples at "
            f"{bandwidth_gbs:g} GB/s and {tflops:g} TFLOP/s FP32; special functions count "
            f"{special_weight:g} flops.")
    columns = ("model", "params", "accum", "B/sample", "flops", "special", "flop/B",
               "mem ms", "ALU ms", "bound", "B/thread", "spill B/sample")
    table = [columns]
    for r in rows:
        weighted = r.weighted_flops(special_weight)
        mem_ms = r.bytes_per_sample * samples / (bandwidth_gbs * 1e9) * 1e3
        alu_ms = weighted * samples / (tflops * 1e12) * 1e3
        intensity = weighted / r.bytes_per_sample if r.bytes_per_sample else float("inf")
        values = (r.name, r.params, r.columns, r.bytes_per_sample, r.flops, r.special,
                  f"{intensity:.1f}", f"{mem_ms:.3f}", f"{alu_ms:.3f}",
                  "memory" if mem_ms >= alu_ms else "compute", r.bytes_per_thread,
                  r.spill_bytes or "-")
        table.append(tuple(str(v) for v in values))
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    lines = [head, ""] + ["  ".join(v.rjust(w) if i else v.ljust(w)
                                    for i, (v, w) in enumerate(zip(row, widths)))
                          for row in table]
    lines += ["", f"Second stage: {groups} partial rows × (1 + gradient entries) × 4 bytes, "
                  "written once per threadgroup and summed by one thread per column "
                  "(negligible next to the per-sample terms for n ≫ groups × threads).",
              "Reading: a kernel is memory-bound when 'mem ms' ≥ 'ALU ms'; models with "
              "more than ~100 accumulators also pay the spill traffic (worst case) through "
              "the caches."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bandwidth", type=float, default=100.0,
                        help="device memory bandwidth in GB/s (M1: 68, M2 Pro: 200)")
    parser.add_argument("--tflops", type=float, default=2.6,
                        help="FP32 rate in TFLOP/s (M1 8-core GPU: 2.6)")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--special-weight", type=float, default=4.0)
    args = parser.parse_args(argv)
    print(report(args.bandwidth, args.tflops, args.samples, args.special_weight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
