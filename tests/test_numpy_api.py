"""The NumPy module's public API, as the issue fixes it, and the library API without TOML."""
from __future__ import annotations

import numpy as np
import pytest

import gradforge
from gradforge_numpy.plugin import load_module

from conftest import example_path


def load(tmp_path, project):
    program = gradforge.load_program(project) if not isinstance(project, gradforge.ProjectSpec) \
        else gradforge.compile_project(project)
    files = gradforge.emit(program, "numpy")
    (name, text), = files.items()
    (tmp_path / name).write_text(text)
    return load_module(tmp_path / name, f"api_{name[:-3]}_{id(tmp_path)}")


def read_csv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    columns = {}
    for i, name in enumerate(header):
        base = name.split("[")[0]
        columns.setdefault(base, []).append(rows[:, i])
    return {k: (v[0] if len(v) == 1 and "[" not in header[[h.split("[")[0] for h in header].index(k)]
                else np.stack(v, axis=1)) for k, v in columns.items()}


def test_numpy_api_shapes_and_training(tmp_path):
    m = load(tmp_path, example_path("huber"))
    assert m.PARAMETER_SHAPES == {"w": (4,), "b": ()}
    params = m.init_params()
    assert params["w"].shape == (4,) and np.ndim(params["b"]) == 0
    data = read_csv(example_path("huber").parent / "data.csv")
    assert data["x"].shape == (80, 4) and data["y"].shape == (80,)
    value, grads = m.value_and_grad(params, data)
    assert isinstance(value, float)
    assert grads["w"].shape == (4,) and np.ndim(grads["b"]) == 0
    assert abs(value - m.objective(params, data)) <= 1e-12 * abs(value)
    assert m.predict(params, data).shape == (80,)
    report = m.train(params, data)
    trained = report.params
    assert m.objective(trained, data) < 0.5 * value
    assert report.reason == "max_iterations" and report.iterations == m.TRAINING["epochs"]
    assert abs(report.objective - m.objective(trained, data)) <= 1e-12 * report.objective
    again = m.train(params, data).params              # seeded: identical
    assert all(np.array_equal(trained[k], again[k]) for k in trained)
    other = m.train(params, data, seed=99, epochs=3, batch_size=0, learning_rate=0.01).params
    assert not np.array_equal(other["w"], trained["w"])
    assert m.objective(params, data, {"delta": 0.5}) != value


def test_every_example_trains_to_a_lower_objective(tmp_path):
    for name in ("trend", "logistic", "mlp"):
        m = load(tmp_path, example_path(name))
        data = read_csv(example_path(name).parent / "data.csv")
        start = m.objective(m.init_params(), data)
        assert m.objective(m.train(m.init_params(), data).params, data) < 0.7 * start, name


def test_library_api_without_toml(tmp_path):
    spec = gradforge.ProjectSpec.create(
        name="line", parameters={"k": 0.0, "d": 0.0}, inputs={"t": {}}, targets={"s": {}},
        prediction="k*t + d", loss="(prediction - s)**2", training={"optimizer": "sgd",
                                                                   "learning_rate": 0.1,
                                                                   "epochs": 200,
                                                                   "batch_size": 0})
    m = load(tmp_path, spec)
    t = np.linspace(-1, 1, 21)
    trained = m.train(m.init_params(), {"t": t, "s": 3 * t - 1}).params
    assert abs(trained["k"] - 3) < 1e-3 and abs(trained["d"] + 1) < 1e-3


def test_predict_takes_inputs_only(tmp_path):
    """Issue 7 item 5: ``predict(p, {"x": …})`` without targets (it raised KeyError 'y')."""
    m = load(tmp_path, example_path("huber"))
    assert m.INPUTS == ("x",)
    data = read_csv(example_path("huber").parent / "data.csv")
    params = m.init_params()
    inputs_only = m.predict(params, {"x": data["x"]})
    np.testing.assert_array_equal(inputs_only, m.predict(params, data))
    assert inputs_only.shape == (80,)
    with pytest.raises(KeyError, match="'x'"):
        m.predict(params, {"y": data["y"]})
    with pytest.raises(KeyError, match="'y'"):          # the loss still needs the targets
        m.objective(params, {"x": data["x"]})


def _boxed(optimizer):
    """A line fit y ≈ a·x + w[0] + w[1] in a box (w per element, both sides)."""
    return gradforge.ProjectSpec.create(
        name="boxed_line", parameters={"a": {"init": 0.5, "lower": 0.0},
                                       "w": {"shape": [2], "init": [0.0, 0.0],
                                             "lower": [-1.0, -0.1], "upper": [0.1, 1.0]}},
        inputs={"x": {}}, targets={"y": {}}, prediction="a*x + w[0] + w[1]",
        loss="(prediction - y)**2", reduction="mean",
        training={"optimizer": optimizer, "learning_rate": 0.5})


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_optimizer_step_projects_onto_the_bounds(tmp_path, optimizer):
    """optimizer_step, the step a user's own loop calls, lands inside LOWER/UPPER (clipped
    element-wise, NaN kept), while minimize() with wider bounds of its own still takes the
    unprojected step: the trainers clip onto the bounds they are given, once."""
    m = load(tmp_path, _boxed(optimizer))
    theta = np.array([0.05, 0.05, -0.05])
    grad = np.array([1.0, -1.0, 1.0])            # a down, w[0] up, w[1] down: all cross
    raw = m._optimizer_update(theta, grad, m.init_optimizer_state())
    assert raw[0] < 0.0 and raw[1] > 0.1 and raw[2] < -0.1
    stepped = m.optimizer_step(theta, grad, m.init_optimizer_state())
    assert stepped.tolist() == [0.0, 0.1, -0.1]
    small = {"learning_rate": 1e-3}                # a step that stays inside is untouched
    inside = m.optimizer_step(theta, grad, m.init_optimizer_state(), small)
    assert np.array_equal(inside, m._optimizer_update(theta, grad, m.init_optimizer_state(), small))
    assert np.all(inside > m.LOWER) and np.all(inside < m.UPPER)
    with np.errstate(invalid="ignore"):
        nan = m.optimizer_step(theta, np.array([np.nan, -1.0, 1.0]), m.init_optimizer_state())
    assert np.isnan(nan[0]) and nan[1] == 0.1 and nan[2] == -0.1
    evaluate = lambda t: (0.0, grad)             # noqa: E731
    options = {"max_iterations": 1}
    wide = m.minimize(evaluate, theta, options, lower=np.full(3, -np.inf), upper=np.full(3, np.inf))
    assert np.array_equal(m.flatten(wide.params), raw)
    boxed = m.minimize(evaluate, theta, options)
    assert m.flatten(boxed.params).tolist() == [0.0, 0.1, -0.1]


def test_unbounded_module_has_no_projection_in_its_step(tmp_path):
    """Without bounds optimizer_step is the plain update (nothing extra is printed)."""
    text = gradforge.emit(gradforge.load_program(example_path("huber")), "numpy")["huber.py"]
    assert "_optimizer_update" not in text
    bounded = gradforge.emit(gradforge.compile_project(_boxed("adam")), "numpy")["boxed_line.py"]
    assert "return _clip(_optimizer_update(theta, grad, state, hyperparameters), LOWER, UPPER)" \
        in bounded
