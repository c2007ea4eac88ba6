"""gradforge train / predict: data mapping, bad data, params.json, backends agree, library API."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy
import pytest

import gradforge
from gradforge.cli import main
from gradforge.data import read_dataset
from gradforge.training import numpy_module

ROOT = Path(__file__).resolve().parents[1]
TREND = ROOT / "examples" / "trend"
MLP = ROOT / "examples" / "mlp"


def need_cc():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        import os
        if os.environ.get("CI"):
            pytest.fail("CI: no C compiler for --backend c")
        pytest.skip("no C compiler")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ----------------------------------------------------------------------------- happy path

def test_train_writes_params_and_predict_reads_them(tmp_path, capsys):
    out = tmp_path / "params.json"
    code, stdout, err = run(["train", TREND / "project.toml", TREND / "data.csv",
                             "--params-out", out, "--validation", "0.2", "--quiet"], capsys)
    assert code == 0, err
    assert "stopped by objective_tolerance" in stdout and "samples/s" in stdout     # lbfgs
    doc = json.loads(out.read_text())
    program = gradforge.load_program(TREND / "project.toml")
    assert doc["model_hash"] == program.model_hash and doc["project"] == "trend"
    assert [p["name"] for p in doc["parameters"]] == ["a", "b", "c"]
    assert doc["stop_reason"] == "objective_tolerance" and doc["validation_objective"] > 0
    # the generated module loads the same file
    module = numpy_module(program)
    params = module.load_params(out)
    assert float(params["a"]) == doc["parameters"][0]["values"][0]
    # plain-text twin for C
    twin = out.with_suffix(".txt").read_text().splitlines()
    assert twin[0] == "gradforge-params 1" and twin[1] == f"model_hash {program.model_hash}"
    # predict: inputs only (a file without the target column)
    inputs = write_csv(tmp_path / "inputs.csv", "x", ["0.5", "1.5", "-2"])
    pred = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", TREND / "project.toml", "--params", out, inputs,
                             "--out", pred], capsys)
    assert code == 0, err
    lines = pred.read_text().splitlines()
    assert lines[0].replace('"', "") == "x,prediction" and len(lines) == 4
    a, b, c = (doc["parameters"][i]["values"][0] for i in range(3))
    x = 1.5
    assert float(lines[2].split(",")[1]) == pytest.approx(a * x * x + b * x + c, rel=1e-12)


def test_objective_matches_an_independent_evaluation(tmp_path):
    """The reported objective is the mean |a x² + b x + c − y| over the CSV, by hand."""
    result = gradforge.train(TREND / "project.toml", TREND / "data.csv", max_iterations=3)
    rows = [line.split(",") for line in (TREND / "data.csv").read_text().splitlines()[1:]]
    a, b, c = (float(result.params[k]) for k in "abc")
    expected = math.fsum(abs(a * float(x) ** 2 + b * float(x) + c - float(y))
                         for x, y in rows) / len(rows)
    assert result.objective == pytest.approx(expected, rel=1e-12)
    assert result.iterations == 3 and result.reason == "max_iterations"


def test_shuffle_is_the_shared_fisher_yates(tmp_path):
    """The vectorized permutation equals SplitMix64 + Fisher–Yates written out by hand."""
    module = numpy_module(gradforge.load_program(TREND / "project.toml"))
    mask = (1 << 64) - 1

    def reference(n, state, epochs):
        out = []
        for _ in range(epochs):
            order = list(range(n))
            for i in range(n - 1, 0, -1):
                state = (state + 0x9E3779B97F4A7C15) & mask
                z = state
                z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
                z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
                j = (z ^ (z >> 31)) % (i + 1)
                order[i], order[j] = order[j], order[i]
            out.append(order)
        return out

    for n, seed in ((1, 3), (2, 0), (17, 7), (1000, 2**63 + 5), (1025, 1), (4099, 11),
                    (60_000, 2**64 - 1)):
        rng = module.SplitMix64(seed)
        got = [module.permutation(n, rng).tolist() for _ in range(3)]
        assert got == reference(n, seed & mask, 3)


def test_c_shuffle_is_the_numpy_shuffle(cache):
    """--backend c shuffles in C (gradforge_permutation): the module's permutation, epoch
    after epoch (the generator's state carries over)."""
    need_cc()
    from gradforge.native import load_c_model
    program = gradforge.load_program(TREND / "project.toml")
    module, cmodel = numpy_module(program), load_c_model(program)
    for n, seed in ((0, 1), (1, 3), (2, 0), (257, 7), (10_000, 2**64 - 1)):
        a, b = module.SplitMix64(seed), module.SplitMix64(seed)
        for _ in range(3):
            assert cmodel.permutation(n, a).tolist() == module.permutation(n, b).tolist()
        assert a.state == b.state


def test_c_backend_follows_the_numpy_iterates(tmp_path, cache):
    need_cc()
    kw = dict(max_iterations=4, trace=True)
    for project, data in ((TREND, TREND / "data.csv"), (MLP, MLP / "data.csv")):
        a = gradforge.train(project / "project.toml", data, backend="numpy", **kw)
        b = gradforge.train(project / "project.toml", data, backend="c", **kw)
        tol = 1e-12 if project is TREND else 1e-4        # mlp is float32
        for x, y in zip(a.trace, b.trace):
            numpy.testing.assert_allclose(y, x, rtol=tol, atol=tol)
        assert b.objective == pytest.approx(a.objective, rel=tol)
    libraries = list(cache.glob("gradforge/c/*/lib*.so"))
    assert len(libraries) == 2
    # cached: a second run compiles nothing
    stamp = {p: p.stat().st_mtime_ns for p in libraries}
    gradforge.train(TREND / "project.toml", TREND / "data.csv", backend="c", max_iterations=1)
    assert {p: p.stat().st_mtime_ns for p in libraries} == stamp


def test_full_batch_gradient_descent_and_tolerances(tmp_path):
    result = gradforge.train(TREND / "project.toml", TREND / "data.csv", optimizer="sgd",
                             batch_size=0, learning_rate=0.01, max_iterations=50)
    # one full evaluation per iteration plus the initial one (the stopping rules need it)
    assert result.evaluations == 51 and result.passes == 51
    assert result.history[0].objective > result.history[-1].objective


def test_divergence_keeps_the_last_finite_parameters(tmp_path, capsys):
    out = tmp_path / "p.json"
    code, stdout, err = run(["train", MLP / "project.toml", MLP / "data.csv",
                             "--optimizer", "sgd", "--batch-size", "0", "--learning-rate",
                             "10", "--max-iterations", "50", "--params-out", out,
                             "--quiet"], capsys)
    assert code == 1, err
    assert "Warning" not in err
    assert "non_finite" in stdout and "last finite parameters" in stdout
    doc = json.loads(out.read_text())
    assert all(math.isfinite(v) for p in doc["parameters"] for v in p["values"])


def test_init_from_params_and_another_models_file_is_refused(tmp_path, capsys):
    first = gradforge.train(TREND / "project.toml", TREND / "data.csv", max_iterations=2,
                            params_out=tmp_path / "trend.json")
    again = gradforge.train(TREND / "project.toml", TREND / "data.csv", max_iterations=0,
                            init=tmp_path / "trend.json")
    numpy.testing.assert_array_equal(again.theta, first.theta)
    gradforge.train(MLP / "project.toml", MLP / "data.csv", max_iterations=1,
                    params_out=tmp_path / "mlp.json")
    code, stdout, err = run(["train", TREND / "project.toml", TREND / "data.csv", "--init",
                             tmp_path / "mlp.json", "--params-out", tmp_path / "x.json"],
                            capsys)
    assert code == 2 and "parameters of another model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
    module = numpy_module(gradforge.load_program(TREND / "project.toml"))
    with pytest.raises(ValueError, match="another model"):
        module.load_params(tmp_path / "mlp.json")


def test_validation_split_is_seeded(tmp_path):
    a = gradforge.train(TREND / "project.toml", TREND / "data.csv", validation=0.25,
                        max_iterations=2)
    b = gradforge.train(TREND / "project.toml", TREND / "data.csv", validation=0.25,
                        max_iterations=2)
    assert a.validation_samples == 16 and a.samples == 48
    assert a.validation_objective == b.validation_objective


def test_callback_stops_training():
    seen = []
    result = gradforge.train(TREND / "project.toml", TREND / "data.csv",
                             callback=lambda it: seen.append(it.iteration) or it.iteration == 3)
    assert result.reason == "callback" and result.iterations == 3 and seen == [1, 2, 3]


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    result = gradforge.train(TREND / "project.toml", TREND / "data.csv", max_iterations=5,
                             validation=0.2, plot_dir=tmp_path / "plots")
    assert sorted(p.name for p in result.plots) == ["fit.png", "objective.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.plots)


# ----------------------------------------------------------------------------- data mapping

def test_vector_columns_in_both_styles_and_parquet_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    program = gradforge.load_program(MLP / "project.toml")
    ref = read_dataset(MLP / "data.csv", program.fields, program.precision)
    folder = tmp_path / "parts"
    folder.mkdir()
    x, y = ref.columns["x"], ref.columns["y"]
    half = ref.n // 2
    pq.write_table(pa.table({"x_0": x[:half, 0], "x_1": x[:half, 1], "x_2": x[:half, 2],
                             "y": y[:half, 0], "other": numpy.zeros(half)}),
                   folder / "a.parquet")
    (folder / "b.csv").write_text("y,x[2],x[1],x[0]\n" + "".join(
        f"{float(y[i, 0])!r},{float(x[i, 2])!r},{float(x[i, 1])!r},{float(x[i, 0])!r}\n" for i in range(half, ref.n)))
    got = read_dataset(folder, program.fields, program.precision)
    numpy.testing.assert_array_equal(got.columns["x"], x)
    numpy.testing.assert_array_equal(got.columns["y"], y)
    globbed = read_dataset(str(folder / "*.csv"), program.fields, program.precision)
    assert globbed.n == ref.n - half


BAD = [
    ("missing", "x,yy\n1,2\n", "missing column 'y' for target y; did you mean 'yy'?"),
    ("text", "x,y\n1,2\n3,abc\n", "row 2, column 'y': 'abc' is not a number"),
    ("emptycell", "x,y\n1,2\n,4\n", "row 2, column 'x': empty cell"),
    ("empty", "", "empty file"),
    ("header", "x,y\n", "no rows"),
]


@pytest.mark.parametrize("label,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, label, text, message):
    data = tmp_path / f"{label}.csv"
    data.write_text(text)
    out = tmp_path / "params.json"
    code, stdout, err = run(["train", TREND / "project.toml", data, "--params-out", out,
                             "--quiet"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err and str(data) in err
    assert not out.exists() and not out.with_suffix(".txt").exists()


def test_vector_width_mismatch(tmp_path, capsys):
    data = write_csv(tmp_path / "wide.csv", "x[0],x[1],x[2],x[3],y", ["1,2,3,4,5"])
    code, stdout, err = run(["train", MLP / "project.toml", data, "--params-out",
                             tmp_path / "p.json"], capsys)
    assert code == 2 and "column 'x[3]' does not fit input x of shape [3]" in err
    narrow = write_csv(tmp_path / "narrow.csv", "x[0],x[1],y", ["1,2,5"])
    code, stdout, err = run(["train", MLP / "project.toml", narrow], capsys)
    assert code == 2 and "missing column 'x[2]' for input x of shape [3]" in err


def test_drop_invalid_skips_and_counts(tmp_path, capsys):
    rows = (TREND / "data.csv").read_text().splitlines()
    rows[3] = "oops," + rows[3].split(",")[1]
    rows[5] = rows[5].split(",")[0] + ","
    data = tmp_path / "dirty.csv"
    data.write_text("\n".join(rows) + "\n")
    code, stdout, err = run(["train", TREND / "project.toml", data, "--drop-invalid",
                             "--max-iterations", "1", "--params-out", tmp_path / "p.json",
                             "--quiet"], capsys)
    assert code == 0, err
    assert "dropped 2 invalid row(s)" in err and "62 samples (2 invalid rows dropped)" in stdout


DECAY = ROOT / "examples" / "decay"


@pytest.mark.parametrize("example,optimizer", [(TREND, None), (MLP, "lbfgs"), (DECAY, None)],
                         ids=["trend-adam", "mlp-lbfgs", "decay-lm"])
def test_numpy_backend_is_the_generated_train(example, optimizer):
    """gradforge.train on the NumPy backend runs the generated module's own optimizer: the
    same parameters and report as calling the module's train() by hand."""
    result = gradforge.train(example / "project.toml", example / "data.csv",
                             optimizer=optimizer, max_iterations=6)
    spec = gradforge.load_project(example / "project.toml")
    if optimizer:
        import dataclasses
        spec = dataclasses.replace(spec, training=dataclasses.replace(
            spec.training, optimizer=optimizer, hyper=(), batch_size=0))
    program = gradforge.compile_project(spec)
    module = numpy_module(program)
    data = read_dataset(example / "data.csv", program.fields, program.precision)
    # gradforge.train evaluates J every iteration (progress, validation), as the module's
    # train() does when it has a callback (without one, mini-batches skip that evaluation)
    report = module.train(module.init_params(), data.arrays(
        {f.name: f.shape for f in program.fields}), max_iterations=6, callback=lambda r: None)
    numpy.testing.assert_array_equal(result.theta, module.flatten(report.params))
    assert (result.reason, result.iterations, result.evaluations, result.passes) == \
        (report.reason, report.iterations, report.evaluations, report.passes)


def test_c_backend_lbfgs_with_bounds_follows_numpy(cache):
    """lbfgs on a bounded model: C evaluations, the generated driver; same iterates as NumPy."""
    need_cc()
    kw = dict(optimizer="lbfgs", max_iterations=8, trace=True)
    a = gradforge.train(DECAY / "project.toml", DECAY / "data.csv", backend="numpy", **kw)
    b = gradforge.train(DECAY / "project.toml", DECAY / "data.csv", backend="c", **kw)
    assert len(a.trace) == len(b.trace) > 3
    for x, y in zip(a.trace, b.trace):
        numpy.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12)
    assert (a.reason, a.iterations) == (b.reason, b.iterations)


def test_special_files_are_never_replaced(tmp_path, capsys):
    """Atomic writes rename a temporary file: never over a folder or a device."""
    folder = tmp_path / "taken"
    folder.mkdir()
    code, stdout, err = run(["train", TREND / "project.toml", TREND / "data.csv",
                             "--params-out", folder, "--quiet"], capsys)
    assert code == 2 and "not a regular file" in err and folder.is_dir()


def test_progress_plain_and_rich():
    import io
    from gradforge.progress import Progress
    plain = io.StringIO()
    bar = Progress(3, "trend lbfgs", "plain", plain)
    for i in range(1, 4):
        bar.update(i, 1.0 / i, 0.1, validation=2.0)
    bar.close()
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("trend lbfgs: iteration 1/3  objective 1  gradient norm 0.1")
    assert "validation 2" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("trend lbfgs: iteration 3/3  objective 0.333333")
    fancy = io.StringIO()
    bar = Progress(3, "trend lbfgs", "rich", fancy)
    bar.update(3, 0.25, 0.01)
    bar.close()
    assert "J 0.25" in fancy.getvalue() and "3/3" in fancy.getvalue()
    quiet = io.StringIO()
    bar = Progress(3, "x", "quiet", quiet)
    bar.update(1, 1.0, 1.0)
    bar.close()
    assert quiet.getvalue() == ""


def test_c_backend_runs_the_generated_c_trainer(cache):
    """With a C trainer for the project's optimizer, the whole run is <name>_train (callback
    per iteration through ctypes); Levenberg–Marquardt included."""
    need_cc()
    from gradforge.native import load_c_model
    assert load_c_model(gradforge.load_program(DECAY / "project.toml")).can_train
    kw = dict(max_iterations=10, trace=True)
    a = gradforge.train(DECAY / "project.toml", DECAY / "data.csv", backend="numpy", **kw)
    b = gradforge.train(DECAY / "project.toml", DECAY / "data.csv", backend="c", **kw)
    assert a.optimizer == b.optimizer == "levenberg_marquardt"
    assert (a.reason, a.iterations, a.evaluations, a.passes) == \
        (b.reason, b.iterations, b.evaluations, b.passes)
    for x, y in zip(a.trace, b.trace):
        numpy.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12)
    stop = gradforge.train(DECAY / "project.toml", DECAY / "data.csv", backend="c",
                           callback=lambda it: it.iteration == 2)
    assert stop.reason == "callback" and stop.iterations == 2


def test_predict_with_c_equals_numpy(tmp_path, cache):
    need_cc()
    gradforge.train(MLP / "project.toml", MLP / "data.csv", max_iterations=3,
                    params_out=tmp_path / "p.json")
    inputs = tmp_path / "inputs.csv"
    rows = (MLP / "data.csv").read_text().splitlines()
    inputs.write_text("\n".join(",".join(r.split(",")[:3]) for r in rows) + "\n")  # no y
    a = gradforge.predict(MLP / "project.toml", tmp_path / "p.json", inputs)
    b = gradforge.predict(MLP / "project.toml", tmp_path / "p.json", inputs, backend="c",
                          out=tmp_path / "pred.csv")
    numpy.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)         # float32 model
    assert len(a) == len(rows) - 1
    header = (tmp_path / "pred.csv").read_text().splitlines()[0].replace('"', "")
    assert header == "x[0],x[1],x[2],prediction"


def test_bad_parquet_cells_name_file_row_and_column(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"x": ["1.0", "2.5", "oops"], "y": [1.0, 2.0, 3.0]}), text)
    code, stdout, err = run(["train", TREND / "project.toml", text, "--params-out",
                             tmp_path / "p.json"], capsys)
    assert code == 2 and f"{text}: row 3, column 'x': 'oops' is not a number" in err
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"x": [1.0, None, 3.0], "y": [1.0, 2.0, 3.0]}), nulls)
    code, stdout, err = run(["train", TREND / "project.toml", nulls, "--params-out",
                             tmp_path / "p.json"], capsys)
    assert code == 2 and f"{nulls}: row 2, column 'x': empty cell" in err
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "y": pa.array([], pa.float64())}),
                   empty)
    code, stdout, err = run(["train", TREND / "project.toml", empty, "--params-out",
                             tmp_path / "p.json"], capsys)
    assert code == 2 and "no rows" in err
    assert not (tmp_path / "p.json").exists()


def test_step_settings_are_refused_for_full_batch_methods(tmp_path, capsys):
    for flag in ("--learning-rate", "--batch-size"):
        code, _, err = run(["train", TREND / "project.toml", TREND / "data.csv", "--optimizer",
                            "lbfgs", flag, "16", "--params-out", tmp_path / "p.json"], capsys)
        assert code == 2 and err.startswith(f"error: {flag} applies to sgd, momentum and adam"), err
        assert len(err.splitlines()) == 1 and not (tmp_path / "p.json").exists()


def test_optimizer_override_errors_name_the_option(tmp_path, capsys):
    code, _, err = run(["train", TREND / "project.toml", TREND / "data.csv", "--optimizer",
                        "lm", "--params-out", tmp_path / "p.json"], capsys)
    assert code == 2 and err.startswith("error: --optimizer lm: levenberg_marquardt needs a "
                                        "least-squares loss")
    code, _, err = run(["train", TREND / "project.toml", TREND / "data.csv", "--optimizer",
                        "lbgfs"], capsys)
    assert code == 2 and "did you mean 'lbfgs'?" in err and len(err.splitlines()) == 1
