"""--engine dask: per-partition sums on a 2-worker LocalCluster give the in-memory iterates."""
from __future__ import annotations

import os
from pathlib import Path

import numpy
import pytest

import gradforge
from gradforge.cli import main

ROOT = Path(__file__).resolve().parents[1]
TREND = ROOT / "examples" / "trend" / "project.toml"


def need_dask():
    try:
        import distributed  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI: dask[distributed] and pyarrow are test dependencies")
        pytest.skip("dask.distributed not installed")


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """10⁶ rows of a noisy quadratic in one Parquet file of 8 row groups (8 partitions)."""
    need_dask()
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = numpy.random.default_rng(11)
    n = 1_000_000
    x = rng.uniform(-2.0, 2.0, n)
    y = 0.7 * x * x - 0.3 * x + 0.1 + rng.normal(0.0, 0.1, n)
    path = tmp_path_factory.mktemp("dask") / "samples.parquet"
    pq.write_table(pa.table({"x": x, "y": y}), path, row_group_size=n // 8)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    return path


def test_dask_iterates_equal_in_memory(parquet):
    kw = dict(optimizer="sgd", batch_size=0, learning_rate=0.2, max_iterations=4, trace=True)
    memory = gradforge.train(TREND, parquet, **kw)
    cluster = gradforge.train(TREND, parquet, engine="dask", workers=2, **kw)
    assert cluster.samples == memory.samples == 1_000_000
    assert len(cluster.trace) == len(memory.trace) == 5
    for a, b in zip(memory.trace, cluster.trace):
        numpy.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert cluster.objective == pytest.approx(memory.objective, rel=1e-10)
    assert [h.objective for h in cluster.history] == pytest.approx(
        [h.objective for h in memory.history], rel=1e-10)


def test_dask_refuses_mini_batches(parquet, capsys):
    code = main(["train", str(TREND), str(parquet), "--engine", "dask", "--batch-size", "16",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "full-batch methods only" in err and len(err.splitlines()) == 1
