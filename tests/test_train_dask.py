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


DECAY = ROOT / "examples" / "decay" / "project.toml"


def write_parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq
    n = len(next(iter(columns.values())))
    pq.write_table(pa.table(columns), path, row_group_size=n // 8)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    return path


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """10⁶ rows of a noisy quadratic in one Parquet file of 8 row groups (8 partitions)."""
    need_dask()
    rng = numpy.random.default_rng(11)
    n = 1_000_000
    x = rng.uniform(-2.0, 2.0, n)
    y = 0.7 * x * x - 0.3 * x + 0.1 + rng.normal(0.0, 0.1, n)
    return write_parquet(tmp_path_factory.mktemp("dask") / "samples.parquet", {"x": x, "y": y})


@pytest.fixture(scope="module")
def decay_parquet(tmp_path_factory):
    """10⁶ rows of a noisy exponential decay (the decay example's model), 8 row groups."""
    need_dask()
    rng = numpy.random.default_rng(12)
    n = 1_000_000
    t = rng.uniform(0.0, 5.0, n)
    y = 2.0 * numpy.exp(-0.8 * t) + 0.3 + rng.normal(0.0, 0.05, n)
    return write_parquet(tmp_path_factory.mktemp("decay") / "decay.parquet", {"t": t, "y": y})


@pytest.fixture(scope="module")
def scheduler():
    """One LocalCluster with 2 worker processes for the module (started once: it is the slow
    part), passed to gradforge as a scheduler address like a real cluster's."""
    need_dask()
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


def same_iterates(memory, cluster):
    assert cluster.samples == memory.samples == 1_000_000
    assert len(cluster.trace) == len(memory.trace) and len(memory.trace) > 2
    for a, b in zip(memory.trace, cluster.trace):
        numpy.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert cluster.objective == pytest.approx(memory.objective, rel=1e-10)
    assert [h.objective for h in cluster.history] == pytest.approx(
        [h.objective for h in memory.history], rel=1e-10)
    assert (cluster.reason, cluster.iterations, cluster.evaluations) == \
        (memory.reason, memory.iterations, memory.evaluations)


@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_dask_iterates_equal_in_memory(parquet, scheduler, optimizer):
    kw = dict(optimizer=optimizer, max_iterations=4, trace=True)
    if optimizer == "sgd":
        kw.update(batch_size=0, learning_rate=0.2)
    memory = gradforge.train(TREND, parquet, **kw)
    cluster = gradforge.train(TREND, parquet, engine="dask", scheduler=scheduler, **kw)
    same_iterates(memory, cluster)


def test_dask_levenberg_marquardt_equals_in_memory(decay_parquet, scheduler):
    kw = dict(max_iterations=5, trace=True)
    memory = gradforge.train(DECAY, decay_parquet, **kw)
    assert memory.optimizer == "levenberg_marquardt"
    cluster = gradforge.train(DECAY, decay_parquet, engine="dask", scheduler=scheduler, **kw)
    same_iterates(memory, cluster)


def test_dask_validation_is_held_out_per_partition(parquet, scheduler):
    """--validation on Dask: each partition holds out its rows with a seeded generator; the
    validation objective is the mean loss over exactly those rows (checked by hand)."""
    import pyarrow.parquet as pq
    result = gradforge.train(TREND, parquet, engine="dask", scheduler=scheduler,
                             optimizer="lbfgs", max_iterations=2, validation=0.1, seed=5,
                             plot_dir=parquet.parent / "plots")
    assert [p.name for p in result.plots] == ["objective.png"]
    table = pq.ParquetFile(parquet)
    held_x, held_y = [], []
    for k in range(table.metadata.num_row_groups):
        group = table.read_row_group(k)
        x, y = group.column("x").to_numpy(), group.column("y").to_numpy()
        held = numpy.random.default_rng([5, k]).random(len(x)) < 0.1
        held_x.append(x[held])
        held_y.append(y[held])
    x, y = numpy.concatenate(held_x), numpy.concatenate(held_y)
    a, b, c = (float(result.params[name]) for name in "abc")
    expected = numpy.mean(numpy.abs(a * x * x + b * x + c - y))
    assert result.validation_samples == len(x) and result.samples == 1_000_000 - len(x)
    assert abs(len(x) - 100_000) < 2_000
    assert result.validation_objective == pytest.approx(expected, rel=1e-10)
    assert all(h.validation_objective is not None for h in result.history)


def test_dask_local_cluster_by_default(capsys, tmp_path):
    """Without --scheduler, `gradforge train --engine dask` starts (and closes) a LocalCluster
    of its own; a CSV file is one partition."""
    need_dask()
    code = main(["train", str(TREND), str(TREND.parent / "data.csv"), "--engine", "dask",
                 "--workers", "1", "--optimizer", "lbfgs", "--max-iterations", "3", "--quiet",
                 "--params-out", str(tmp_path / "params.json")])
    out = capsys.readouterr().out
    assert code == 0 and "lbfgs on numpy / dask" in out


def test_dask_refuses_mini_batches(parquet, capsys):
    code = main(["train", str(TREND), str(parquet), "--engine", "dask", "--optimizer", "adam",
                 "--batch-size", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "full-batch methods only" in err and len(err.splitlines()) == 1
