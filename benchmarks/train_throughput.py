#!/usr/bin/env python3
"""Throughput of ``gradforge train``: samples per second over 10⁷ rows.

For the story's model (examples/trend, 3 parameters, float64) on a Parquet file of
``--rows`` samples (default 10⁷, written once into a temporary folder), this script measures

* ``gradforge train --backend numpy`` and ``--backend c`` with full-batch L-BFGS
  (``--iterations`` iterations): samples/s = passes × rows / training seconds;
* ``--engine dask`` with a LocalCluster of 1 and 2 workers (same run; partitions are the
  Parquet row groups, 16 of them);
* one epoch of mini-batch Adam (batch 256) with numpy and c: the shuffle and the per-batch calls;
* the overhead of the CLI path over calling the generated C directly: a C program built from
  the same generated files that reads the same columns (raw float64) and calls
  ``trend_train`` with the same L-BFGS settings, timed with ``clock_gettime`` (best of three
  runs, like the library run it is compared with); compared per pass with
  ``gradforge train --backend c`` (training loop) and end to end (the whole ``gradforge train``
  process, Python start-up and Parquet reading included, against the C program's whole run).

Figures, not a test. Run by hand (a few minutes on two cores)::

    python benchmarks/train_throughput.py [--rows 10000000] [--iterations 5] [--skip-dask]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy

import gradforge
from gradforge.native import FLAGS, compiler

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "trend" / "project.toml"

DIRECT_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "trend.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t n = (size_t)strtoull(argv[2], NULL, 10);
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    double params[TREND_NUM_PARAMS], start, seconds;
    trend_workspace *work = malloc(sizeof *work);
    trend_train_options options = trend_default_train_options();
    trend_report report;
    int status;
    FILE *f = fopen(argv[1], "rb");
    trend_data d;
    if (f == NULL || work == NULL || fread(x, sizeof *x, n, f) != n || fread(y, sizeof *y, n, f) != n) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    d.x = x;
    d.y = y;
    d.n = n;
    trend_init_params(params);
    trend_workspace_init(work);
    start = now();
    status = trend_train(params, &d, NULL, &options, work, NULL, NULL, &report);
    seconds = now() - start;
    printf("%.9f %lu %s %.17g\n", seconds, report.passes, trend_stop_name(status), report.objective);
    free(x);
    free(y);
    free(work);
    (void)argc;
    return 0;
}
"""


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = numpy.random.default_rng(2024)
    x = rng.uniform(-2.0, 3.0, rows)
    y = 0.7 * x * x - 3.0 * x + 1.2 + rng.laplace(0.0, 0.3, rows)
    parquet = folder / "samples.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), parquet, row_group_size=max(rows // 16, 1))
    raw = folder / "samples.bin"
    with open(raw, "wb") as handle:
        handle.write(x.tobytes())
        handle.write(y.tobytes())
    return parquet, raw


def row(label: str, result, wall: float | None = None) -> tuple:
    return (label, result.iterations, f"{result.passes:g}", f"{result.seconds:.2f}",
            f"{result.samples_per_second / 1e6:.1f}", "-" if wall is None else f"{wall:.1f}")


def timed_train(**kw):
    start = time.perf_counter()
    result = gradforge.train(PROJECT, **kw)
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the data and builds in this folder")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="gradforge-throughput-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{args.rows:,} rows, trend model (3 parameters, float64), {os.cpu_count()} cores; "
          f"data in {folder}", flush=True)
    parquet, raw = write_data(folder, args.rows)
    full = dict(data=parquet, optimizer="lbfgs", max_iterations=args.iterations,
                gradient_tolerance=0.0, objective_tolerance=0.0)
    rows = [("run", "iterations", "passes", "train s", "Msamples/s", "wall s")]

    results = {}
    for backend in ("numpy", "c"):
        result, wall = timed_train(backend=backend, **full)
        if backend == "c":               # best of three: the figure compared with direct C
            for _ in range(2):
                again, again_wall = timed_train(backend=backend, **full)
                if again.seconds < result.seconds:
                    result, wall = again, again_wall
        results[backend] = result
        rows.append(row(f"lbfgs, {backend}", result, wall))
        print(*rows[-1], flush=True)
    if not args.skip_dask:
        for workers in (1, 2):
            result, wall = timed_train(engine="dask", workers=workers, **full)
            rows.append(row(f"lbfgs, numpy on dask ({workers} worker{'s' * (workers > 1)})",
                            result, wall))
            print(*rows[-1], flush=True)
    for backend in ("numpy", "c"):
        result, wall = timed_train(data=parquet, backend=backend, optimizer="adam",
                                   batch_size=256, max_iterations=1, gradient_tolerance=0.0,
                                   objective_tolerance=0.0)
        rows.append(row(f"adam batch 256, 1 epoch, {backend}", result, wall))
        print(*rows[-1], flush=True)

    # the generated C trainer called directly (the same lbfgs settings, from its defaults)
    import dataclasses
    spec = gradforge.load_project(PROJECT)
    spec = dataclasses.replace(spec, training=dataclasses.replace(
        spec.training, optimizer="lbfgs", hyper=(), batch_size=0,
        max_iterations=args.iterations, gradient_tolerance=0.0, objective_tolerance=0.0))
    program = gradforge.compile_project(spec)
    build = folder / "direct"
    build.mkdir(exist_ok=True)
    for rel, text in gradforge.emit(program, "c").items():
        (build / rel).write_text(text)
    (build / "direct.c").write_text(DIRECT_C)
    flags = [f for f in FLAGS if f not in ("-fPIC", "-shared")]
    subprocess.run([compiler(), *flags, "-D_POSIX_C_SOURCE=199309L", "-o", "direct",
                    "direct.c", "trend.c", "-lm"], cwd=build, check=True)
    c = results["c"]
    direct_seconds = direct_wall = float("inf")
    for _ in range(3):                   # best of three, like the library run
        start = time.perf_counter()
        out = subprocess.run([str(build / "direct"), str(raw), str(args.rows)],
                             capture_output=True, text=True, check=True).stdout.split()
        direct_wall = min(direct_wall, time.perf_counter() - start)
        direct_seconds = min(direct_seconds, float(out[0]))
    passes = int(out[1])
    assert passes == c.passes and out[2] == c.reason, (out, c.passes, c.reason)
    direct_pass = direct_seconds / passes
    train_pass = c.seconds / c.passes
    rows.append(("generated C trainer called directly", args.iterations, passes,
                 f"{direct_seconds:.2f}", f"{args.rows / direct_pass / 1e6:.1f}",
                 f"{direct_wall:.1f}"))
    print(*rows[-1], flush=True)

    # the same library through ctypes in this process, no driver: isolates the driver's cost
    from gradforge.data import read_dataset
    from gradforge.native import load_c_model
    cmodel = load_c_model(gradforge.load_program(PROJECT))
    dataset = read_dataset(parquet, program.fields, program.precision)
    data = cmodel.data(dataset.columns, dataset.n)
    theta = numpy.array([0.5, 0.0, 0.0])
    ctypes_pass = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(passes):
            cmodel.value_and_grad(theta, data)
        ctypes_pass = min(ctypes_pass, (time.perf_counter() - start) / passes)
    rows.append(("value_and_grad via ctypes, no optimizer", passes, passes,
                 f"{ctypes_pass * passes:.2f}", f"{args.rows / ctypes_pass / 1e6:.1f}", "-"))
    print(*rows[-1], flush=True)
    del data, dataset

    # the whole CLI process, Python start-up and Parquet reading included
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradforge.cli", "train", str(PROJECT), str(parquet),
                    "--backend", "c", "--optimizer", "lbfgs", "--max-iterations",
                    str(args.iterations), "--gradient-tolerance", "0", "--objective-tolerance",
                    "0", "--quiet", "--params-out", str(folder / "params.json")],
                   check=True, capture_output=True, env={**os.environ})
    cli_wall = time.perf_counter() - start

    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    print()
    print(f"gradforge train --backend c over the generated C trainer called directly, per pass: "
          f"{(train_pass / direct_pass - 1) * 100:+.1f}% "
          f"({train_pass * 1e3:.1f} ms vs {direct_pass * 1e3:.1f} ms); over bare value_and_grad "
          f"calls through ctypes: {(train_pass / ctypes_pass - 1) * 100:+.1f}%")
    print(f"whole `gradforge train --backend c` process: {cli_wall:.1f} s vs the C program "
          f"{direct_wall:.1f} s (reading raw doubles) — {(cli_wall / direct_wall - 1) * 100:+.0f}%")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
