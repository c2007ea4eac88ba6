"""Training from data files through the generated code: ``gradforge.train`` and ``gradforge.predict``.

The same generated code a user ships does the work: the NumPy module (``backend="numpy"``) or
the C library compiled once and called through ctypes (``backend="c"``, see native.py); with
``engine="dask"`` the per-sample sums run on a Dask cluster (dask_engine.py). Python only
drives the loop, so NumPy, C and Dask follow the same iterates to rounding:

* first-order optimizers (sgd, momentum, adam): the generated module's loop (``_first_order``:
  one full evaluation per iteration for the stopping rules, then one epoch of steps);
  mini-batches come from gradforge's shared SplitMix64 Fisher–Yates shuffle (computed in C for
  ``backend="c"``), the update is the generated ``optimizer_step``;
* full-batch methods (lbfgs, levenberg_marquardt) run the generated ``minimize`` with value
  and gradient (or JᵀJ and Jᵀr) from the chosen backend/engine.

A non-finite objective or gradient is never accepted: training stops with reason
``non_finite`` and the last finite parameters are kept.
"""
from __future__ import annotations

import hashlib
import math
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy

from . import params_file
from .data import DataError, Dataset, read_dataset, split
from .writer import file_mode
from .errors import GradforgeError, ProjectError
from .project import ProjectSpec, load_project

ENGINES = ("local", "dask")
BACKENDS = ("numpy", "c")

#: Why a run stopped (the names issue 9's reports use in every language).
REASONS = ("gradient_tolerance", "objective_tolerance", "max_iterations",
           "line_search_failed", "non_finite", "callback")


@dataclass
class Iteration:
    """One row of the history (what a callback receives)."""

    iteration: int
    objective: float
    gradient_norm: float
    validation_objective: float | None = None


@dataclass
class TrainResult:
    """What ``train`` returns: parameters, the report, and the history."""

    params: dict[str, Any]
    theta: numpy.ndarray
    objective: float
    validation_objective: float | None
    gradient_norm: float
    iterations: int
    evaluations: int
    passes: float
    reason: str
    seconds: float
    samples: int
    validation_samples: int
    dropped: int
    optimizer: str
    backend: str
    engine: str
    history: list[Iteration] = field(default_factory=list)
    model_hash: str = ""
    project: str = ""

    @property
    def converged(self) -> bool:
        return self.reason in ("gradient_tolerance", "objective_tolerance")

    @property
    def samples_per_second(self) -> float:
        return self.passes * self.samples / self.seconds if self.seconds > 0 else math.inf

    def summary(self) -> str:
        """The final summary the CLI prints (a few lines)."""
        val = ("-" if self.validation_objective is None
               else f"{self.validation_objective:.10g} ({self.validation_samples} samples)")
        why = self.reason + (" (diverged: the last finite parameters are kept)"
                             if self.reason == "non_finite" else "")
        return (f"{self.project}: {self.optimizer} on {self.backend}"
                f"{'' if self.engine == 'local' else ' / ' + self.engine}: stopped by {why}\n"
                f"  iterations {self.iterations}, passes {self.passes:.6g}, evaluations "
                f"{self.evaluations}\n"
                f"  objective {self.objective:.10g}, validation objective {val}, "
                f"gradient norm {self.gradient_norm:.3g}\n"
                f"  {self.samples} samples"
                + (f" ({self.dropped} invalid rows dropped)" if self.dropped else "")
                + f", {self.seconds:.3f} s, {self.samples_per_second:,.0f} samples/s")

    def __str__(self) -> str:
        return (f"{self.optimizer}: {self.reason} after {self.iterations} iterations, "
                f"{self.passes:.6g} passes, J = {self.objective:.10g}")

    def params_file(self, precision: str = "float64") -> params_file.ParamsFile:
        shapes, values = {}, {}
        for name, value in self.params.items():
            array = numpy.asarray(value, dtype=float)
            shapes[name] = array.shape
            values[name] = array.reshape(-1).tolist()
        return params_file.ParamsFile(
            project=self.project, model_hash=self.model_hash, shapes=shapes, values=values,
            precision=precision,
            info={"objective": float(self.objective),
                  "validation_objective": None if self.validation_objective is None
                  else float(self.validation_objective),
                  "stop_reason": self.reason, "optimizer": self.optimizer,
                  "iterations": self.iterations, "passes": float(self.passes),
                  "gradient_norm": float(self.gradient_norm)})


# ----------------------------------------------------------------------------- the model

_MODULES: dict[str, types.ModuleType] = {}


def numpy_module(program) -> types.ModuleType:
    """The generated NumPy module for ``program``, imported from its text (cached)."""
    from .api import emit
    text = next(iter(emit(program, "numpy").values()))
    key = hashlib.sha256(text.encode()).hexdigest()
    module = _MODULES.get(key)
    if module is None:
        module = types.ModuleType(f"gradforge_generated_{program.name}")
        module.__file__ = f"<gradforge {program.name}.py>"
        exec(compile(text, module.__file__, "exec"), module.__dict__)
        _MODULES[key] = module
    return module


def _spec_and_program(project):
    from .lower import compile_project
    spec = project if isinstance(project, ProjectSpec) else load_project(project)
    return spec, compile_project(spec)


# ----------------------------------------------------------------------------- evaluators

class NumpyEvaluator:
    """Value and gradient over a Dataset with the generated NumPy module."""

    name = "numpy"

    def __init__(self, module, dataset: Dataset, constants):
        self.m, self.d, self.n = module, dataset.columns, dataset.n
        self.c = module._constants(constants)

    def value_and_grad(self, theta):
        return self.m._value_and_grad_flat(theta, self.d, self.n, self.c)

    def batch_value_and_grad(self, theta, index):
        batch = {name: column[index] for name, column in self.d.items()}
        return self.m._value_and_grad_flat(theta, batch, len(index), self.c)

    def objective(self, theta):
        return self.m._objective_flat(theta, self.d, self.n, self.c)

    def normal_equations(self, theta):
        return self.m._normal_flat(theta, self.d, self.n, self.c)


class CEvaluator:
    """The same through the compiled C library (ctypes, columns by pointer)."""

    name = "c"

    def __init__(self, cmodel, dataset: Dataset, constants):
        self.cm = cmodel
        self.n = dataset.n
        self.data = cmodel.data(dataset.columns, dataset.n)
        self.c = cmodel.constants(constants)
        self.grad = numpy.empty(cmodel.program.num_params, dtype=cmodel.dtype)

    def value_and_grad(self, theta):
        value, grad = self.cm.value_and_grad(theta, self.data, self.c, self.grad)
        return value, grad.copy()

    def batch_value_and_grad(self, theta, index):
        value, grad = self.cm.value_and_grad_indexed(theta, self.data, index, self.c, self.grad)
        return value, grad.copy()

    def objective(self, theta):
        return self.cm.objective(theta, self.data, self.c)

    def normal_equations(self, theta):
        return self.cm.normal_equations(theta, self.data, self.c)


# ----------------------------------------------------------------------------- the loops

@dataclass
class _Settings:
    optimizer: str
    max_iterations: int
    batch_size: int
    seed: int
    gradient_tolerance: float
    objective_tolerance: float
    hyper: dict[str, float]
    history: int = 10

    @property
    def first_order(self) -> bool:
        return self.optimizer in FIRST_ORDER

    def options(self) -> dict[str, Any]:
        return {"max_iterations": self.max_iterations,
                "gradient_tolerance": self.gradient_tolerance,
                "objective_tolerance": self.objective_tolerance, "history": self.history}


FIRST_ORDER = ("sgd", "momentum", "adam")


def _run_generated(module, evaluator, theta, s: _Settings, n: int, callback):
    """Run the generated module's own optimizer code with ``evaluator``'s sums; returns the
    module's Report. Mirrors the generated ``train``: first-order methods evaluate J and g on
    all samples once per iteration (the stopping rules), then run one epoch of steps."""
    if not s.first_order:
        if s.optimizer == "levenberg_marquardt":
            evaluate = evaluator.normal_equations
        else:
            evaluate = evaluator.value_and_grad
        return module.minimize(evaluate, theta, s.options(), callback)
    run = module._Run(s.optimizer, s.options(), callback, module.LOWER, module.UPPER)
    rng = module.SplitMix64(s.seed)
    lower, upper = module.LOWER, module.UPPER
    full = s.batch_size == 0 or s.batch_size >= n

    def epoch(theta, grad, state, hyper):
        if full:
            return module._clip(module.optimizer_step(theta, grad, state, hyper), lower, upper)
        run.passes += 1.0
        order = (evaluator.cm.permutation(n, rng) if evaluator.name == "c"
                 else module.permutation(n, rng))
        for start in range(0, n, s.batch_size):
            _, batch_grad = evaluator.batch_value_and_grad(theta, order[start:start + s.batch_size])
            theta = module._clip(module.optimizer_step(theta, batch_grad, state, hyper),
                                 lower, upper)
        return theta

    if numpy.any(theta < lower) or numpy.any(theta > upper):
        raise GradforgeError("the initial parameters are outside the project's bounds")
    theta, value, grad, reason = module._first_order(evaluator.value_and_grad, theta, run,
                                                     epoch, s.hyper)
    return run.report(theta, value, run.projected_norm(theta, grad), reason)


class _DaskValidation:
    """The validation objective of a Dask run (rows held out on the workers)."""

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.n = evaluator.validation_n

    def objective(self, theta):
        return self.evaluator.validation_objective(theta)


def _run_c_train(module, evaluator, theta, s: _Settings, on_iteration):
    """The whole run inside the generated C ``<name>_train`` (the optimizer, shuffle and
    mini-batches in C; Python only sees the per-iteration callback)."""
    if numpy.any(theta < module.LOWER) or numpy.any(theta > module.UPPER):
        raise GradforgeError("the initial parameters are outside the project's bounds")

    def report(theta_now, r, reason=None):
        return module.Report(module.unflatten(theta_now), s.optimizer, reason, r["iterations"],
                             r["evaluations"], float(r["passes"]), r["objective"],
                             r["gradient_norm"])

    theta, r = evaluator.cm.train(
        theta, evaluator.data, evaluator.c, max_iterations=s.max_iterations,
        gradient_tolerance=s.gradient_tolerance, objective_tolerance=s.objective_tolerance,
        on_iteration=lambda theta_now, r: on_iteration(report(theta_now, r)))
    return report(theta, r, r["reason"])


# ----------------------------------------------------------------------------- train

def _resolve_settings(spec: ProjectSpec, optimizer, max_iterations, epochs, batch_size,
                      learning_rate, seed, gradient_tolerance, objective_tolerance,
                      hyper) -> tuple[ProjectSpec, _Settings]:
    """Apply overrides to the project's [training] (a new optimizer rebuilds the program)."""
    import dataclasses
    t = spec.training
    changes: dict[str, Any] = {}
    if optimizer is not None and optimizer != t.optimizer:
        from .project import parse_project   # validate the optimizer name like the TOML does
        try:
            probe = parse_project({"project": {"name": "probe"}, "parameters": {"p": 0.0},
                                   "model": {"prediction": "p", "loss": "p"},
                                   "training": {"optimizer": optimizer}})
        except ProjectError as err:
            raise GradforgeError(f"--optimizer: {err.message}"
                                 + (f" ({err.hint})" if err.hint else "")) from None
        changes["optimizer"] = probe.training.optimizer
        changes["hyper"] = ()
    if learning_rate is not None:
        if learning_rate <= 0:
            raise GradforgeError("--learning-rate must be positive")
        changes["learning_rate"] = float(learning_rate)
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if batch_size is not None:
        changes["batch_size"] = int(batch_size)
    if seed is not None:
        changes["seed"] = int(seed)
    for key, value in (("max_iterations", max_iterations),
                       ("gradient_tolerance", gradient_tolerance),
                       ("objective_tolerance", objective_tolerance)):
        if value is not None and hasattr(t, key):
            changes[key] = value
    if changes:
        t = dataclasses.replace(t, **changes)
        spec = dataclasses.replace(spec, training=t)
    first_order = t.optimizer in ("sgd", "momentum", "adam")
    if not first_order:
        # Full-batch methods choose their own step: an ignored knob would mislead.
        for flag, value in (("--learning-rate", learning_rate),
                            ("--batch-size", batch_size or None)):   # 0 = full batch: fine
            if value is not None:
                raise GradforgeError(f"{flag} applies to sgd, momentum and adam only; "
                                     f"{t.optimizer} is full-batch and chooses its own step "
                                     f"(drop {flag}, or pass --optimizer adam)")
    stopping = getattr(t, "stopping", None)
    if stopping is not None:
        max_it, gtol, otol = stopping()
    else:
        max_it, gtol, otol = t.epochs, 0.0, 0.0
    if max_iterations is not None:
        max_it = int(max_iterations)
    if gradient_tolerance is not None:
        gtol = float(gradient_tolerance)
    if objective_tolerance is not None:
        otol = float(objective_tolerance)
    settings = _Settings(t.optimizer, max_it, t.batch_size if first_order else 0, t.seed,
                         gtol, otol, {**t.hyperparameters(), **dict(hyper or {})},
                         getattr(t, "history", 10))
    return spec, settings


def _initial_theta(module, program, init) -> numpy.ndarray:
    if init is None:
        return module.flatten(module.init_params())
    if isinstance(init, (str, Path)):
        pf = params_file.read(init, expect_hash=program.model_hash,
                              shapes={p.name: p.shape for p in program.parameters})
        return numpy.array(pf.flat([p.name for p in program.parameters]), dtype=module.DTYPE)
    if isinstance(init, Mapping):
        return module.flatten(init)
    return numpy.asarray(init, dtype=module.DTYPE).copy()


def load_data(program, data, drop_invalid: bool = False, need_targets: bool = True) -> Dataset:
    """A Dataset from a path/glob/folder, a Dataset, or a {field: array} mapping."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Mapping):
        dtype = numpy.float32 if program.precision == "float32" else numpy.float64
        columns = {}
        n = None
        for f in program.fields:
            if f.name not in data:
                if f.role == "target" and not need_targets:
                    continue
                raise DataError(f"data: missing field {f.name!r}")
            col = numpy.ascontiguousarray(numpy.asarray(data[f.name], dtype=dtype)
                                          .reshape(-1, f.size))
            if n is not None and col.shape[0] != n:
                raise DataError(f"data: field {f.name!r} has {col.shape[0]} samples, "
                                f"expected {n}")
            n = col.shape[0]
            columns[f.name] = col
        return Dataset(columns, n or 0, [])
    return read_dataset(data, program.fields, program.precision, drop_invalid, need_targets)


def train(project, data, *, backend: str = "numpy", engine: str = "local",
          scheduler: str | None = None, workers: int | None = None,
          optimizer: str | None = None, max_iterations: int | None = None,
          epochs: int | None = None, batch_size: int | None = None,
          learning_rate: float | None = None, seed: int | None = None,
          gradient_tolerance: float | None = None, objective_tolerance: float | None = None,
          hyperparameters: Mapping[str, float] | None = None,
          init=None, validation: float = 0.0, validation_seed: int | None = None,
          drop_invalid: bool = False, constants: Mapping[str, float] | None = None,
          callback: Callable[[Iteration], Any] | None = None,
          progress: str = "quiet", params_out: str | Path | None = None,
          plot_dir: str | Path | None = None, trace: bool = False) -> TrainResult:
    """Train ``project`` (path or ProjectSpec) on ``data`` (CSV/Parquet file, folder, glob, or
    {field: array}); returns a :class:`TrainResult`.

    ``callback(Iteration)`` runs after every iteration; a truthy answer stops training
    (reason ``callback``). ``progress``: 'quiet' (library default), 'auto', 'rich', 'plain'.
    ``params_out`` writes params.json (and params.txt) only after training succeeded;
    ``plot_dir`` writes the plots (needs matplotlib). ``trace`` keeps every iterate in
    ``result.trace`` (tests)."""
    from .progress import Progress
    if backend not in BACKENDS:
        raise GradforgeError(f"unknown backend {backend!r} for training; choose numpy or c")
    if engine not in ENGINES:
        raise GradforgeError(f"unknown engine {engine!r}; choose local or dask")
    spec, _ = (project, None) if isinstance(project, ProjectSpec) else (load_project(project), None)
    spec, settings = _resolve_settings(spec, optimizer, max_iterations, epochs, batch_size,
                                       learning_rate, seed, gradient_tolerance,
                                       objective_tolerance, hyperparameters)
    from .lower import compile_project
    try:
        program = compile_project(spec)
    except ProjectError as err:
        if optimizer is None or err.location.key != "training.optimizer":
            raise
        raise GradforgeError(f"--optimizer {optimizer}: {err.message}"
                             + (f" ({err.hint})" if err.hint else "")) from None
    module = numpy_module(program)
    theta = _initial_theta(module, program, init)
    first_order = settings.optimizer in ("sgd", "momentum", "adam")
    if params_out is not None:                   # refuse before spending the training time
        params_file.refuse_special(Path(params_out))
        params_file.refuse_special(params_file.text_twin(params_out))
    if plot_dir is not None:
        from .plots import require_matplotlib
        require_matplotlib()

    # data and evaluators
    valid = valid_eval = None
    cluster = None
    if engine == "dask":
        if backend != "numpy":
            raise GradforgeError("--engine dask runs the generated NumPy kernels on the workers; "
                                 "drop --backend c")
        if first_order and settings.batch_size != 0:
            raise GradforgeError(
                f"--engine dask runs full-batch methods only (mini-batches would need a global "
                f"shuffle across partitions); use --batch-size 0, or --optimizer lbfgs / lm")
        if validation and not 0 < validation < 1:
            raise DataError(f"--validation {validation}: expected a fraction between 0 and 1")
        from .dask_engine import DaskEvaluator
        evaluator = DaskEvaluator(program, module, data, constants=constants,
                                  scheduler=scheduler, workers=workers,
                                  drop_invalid=drop_invalid, validation=validation,
                                  seed=settings.seed if validation_seed is None
                                  else validation_seed)
        cluster = evaluator
        n, dropped, train_set = evaluator.n, evaluator.dropped, None
        if validation:
            valid_eval = _DaskValidation(evaluator)
    else:
        dataset = load_data(program, data, drop_invalid)
        dropped = dataset.dropped
        train_set, valid = split(dataset, validation,
                                 settings.seed if validation_seed is None else validation_seed)
        n = train_set.n
        if backend == "c":
            from .native import load_c_model
            cmodel = load_c_model(program)
            if settings.optimizer == "levenberg_marquardt" and not cmodel.can_normal_equations:
                raise GradforgeError("this C backend has no normal-equation kernels for "
                                     "levenberg_marquardt; use --backend numpy (or "
                                     "--optimizer lbfgs with --backend c)")
            evaluator = CEvaluator(cmodel, train_set, constants)
            valid_eval = CEvaluator(cmodel, valid, constants) if valid is not None else None
        else:
            evaluator = NumpyEvaluator(module, train_set, constants)
            valid_eval = NumpyEvaluator(module, valid, constants) if valid is not None else None

    history: list[Iteration] = []
    trace_list: list[numpy.ndarray] = [theta.copy()] if trace else []
    bar = Progress(settings.max_iterations, f"{program.name} {settings.optimizer}", progress)

    def on_iteration(report):
        current = module.flatten(report.params)
        val = float(valid_eval.objective(current)) if valid_eval is not None else None
        row = Iteration(report.iterations, float(report.objective),
                        float(report.gradient_norm), val)
        history.append(row)
        if trace:
            trace_list.append(numpy.array(current, copy=True))
        bar.update(row.iteration, row.objective, row.gradient_norm, val)
        return bool(callback(row)) if callback is not None else False

    started = time.perf_counter()
    # overflow is detected and reported (reason non_finite), not warned about
    quiet_overflow = numpy.errstate(over="ignore", invalid="ignore", divide="ignore")
    quiet_overflow.__enter__()
    try:
        if (evaluator.name == "c" and evaluator.cm.can_train and not hyperparameters):
            report = _run_c_train(module, evaluator, theta, settings, on_iteration)
        else:
            report = _run_generated(module, evaluator, theta, settings, n, on_iteration)
        final_validation = (float(valid_eval.objective(module.flatten(report.params)))
                            if valid_eval is not None else None)
    finally:
        quiet_overflow.__exit__(None, None, None)
        bar.close()
        if cluster is not None:
            cluster.close()
    seconds = time.perf_counter() - started
    theta = module.flatten(report.params)
    val_obj = final_validation
    result = TrainResult(
        params=report.params, theta=numpy.array(theta), objective=float(report.objective),
        validation_objective=val_obj, gradient_norm=float(report.gradient_norm),
        iterations=report.iterations, evaluations=report.evaluations, passes=report.passes,
        reason=report.reason, seconds=seconds, samples=n,
        validation_samples=valid_eval.n if valid_eval is not None else 0, dropped=dropped,
        optimizer=settings.optimizer, backend=backend, engine=engine, history=history,
        model_hash=program.model_hash, project=program.name)
    if trace:
        result.trace = trace_list
    if params_out is not None:
        params_file.write(params_out, result.params_file(program.precision))
    if plot_dir is not None:            # with Dask the data stays on the workers: curves only
        from .plots import write_plots
        result.plots = write_plots(plot_dir, result, program, module, train_set)
    return result


# ----------------------------------------------------------------------------- predict

def predict(project, params, data, *, backend: str = "numpy",
            constants: Mapping[str, float] | None = None, drop_invalid: bool = False,
            out: str | Path | None = None) -> numpy.ndarray:
    """Predictions for the inputs in ``data`` (targets not needed) with ``params`` (a
    params.json path, a TrainResult, or {name: value}); ``out`` writes a CSV of the input
    columns plus ``prediction`` (atomically)."""
    spec, program = _spec_and_program(project)
    module = numpy_module(program)
    if isinstance(params, TrainResult):
        params = params.params
    theta = _initial_theta(module, program, params)
    dataset = load_data(program, data, drop_invalid, need_targets=False)
    if backend == "c":
        from .native import load_c_model
        cmodel = load_c_model(program)
        values = cmodel.predict(theta, cmodel.data(dataset.columns, dataset.n),
                                cmodel.constants(constants))
    elif backend == "numpy":
        values = predict_numpy(module, program, theta, dataset.columns, dataset.n, constants)
    else:
        raise GradforgeError(f"unknown backend {backend!r} for predict; choose numpy or c")
    if out is not None:
        write_predictions(out, program, dataset, values)
    return values


def predict_numpy(module, program, theta, columns, n, constants=None) -> numpy.ndarray:
    """The generated module's per-sample prediction on {field: (n, size)} columns."""
    d = dict(columns)
    for f in program.fields:                     # targets are not read by the prediction
        if f.name not in d:
            d[f.name] = numpy.zeros((n, f.size), dtype=module.DTYPE)
    value = module._predict(theta, d, module._constants(constants), n)
    return numpy.broadcast_to(value, (n,)).astype(module.DTYPE)


def write_predictions(out: str | Path, program, dataset: Dataset, values) -> Path:
    """CSV with the input columns (as named in the data) and ``prediction``, atomically."""
    import os
    import tempfile
    import pyarrow as pa
    import pyarrow.csv as pacsv
    out = Path(out)
    params_file.refuse_special(out)
    names, arrays = [], []
    for f in program.inputs:
        col = dataset.columns[f.name]
        labels = dataset.mapping.get(f.name) or (
            (f.name,) if f.size == 1 else tuple(f"{f.name}[{i}]" for i in range(f.size)))
        for i, label in enumerate(labels):
            names.append(label)
            arrays.append(pa.array(col[:, i]))
    names.append("prediction")
    arrays.append(pa.array(numpy.asarray(values)))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    os.fchmod(fd, file_mode())           # the umask's mode, not mkstemp's 0600
    os.close(fd)
    try:
        pacsv.write_csv(pa.table(arrays, names=names), tmp)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return out
