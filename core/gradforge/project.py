"""Stage 1: the project file. TOML → validated :class:`ProjectSpec`, before anything else runs.

The spec is plain typed data; the library API builds the same dataclasses in Python (see
``ProjectSpec.create``). Validation is strict: unknown keys are errors with a did-you-mean, and
every error names the file, the dotted key and — re-scanned from the text, since ``tomllib``
keeps no positions — the line and column.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

try:  # pragma: no cover - depends on the interpreter
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import ProjectError, did_you_mean

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
PRECISIONS = ("float32", "float64")
REDUCTIONS = ("mean", "sum")
MAX_ELEMENTS = 1_000_000

#: Optimizers with their hyper-parameters and defaults (besides learning_rate).
OPTIMIZER_KEYS: dict[str, dict[str, float]] = {
    "sgd": {},
    "momentum": {"momentum": 0.9},
    "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}

#: Full-batch methods that choose their own steps (no learning rate, no mini-batches).
SECOND_ORDER = ("lbfgs", "levenberg_marquardt")
OPTIMIZERS = tuple(OPTIMIZER_KEYS) + SECOND_ORDER
OPTIMIZER_ALIASES = {"lm": "levenberg_marquardt"}

#: Stopping-rule defaults (gradient_tolerance, objective_tolerance): first-order methods run
#: their epochs; the others stop on tolerances a little above the precision's rounding floor.
STOPPING_DEFAULTS = {"first_order": (0.0, 0.0), "float64": (1e-8, 1e-12),
                     "float32": (1e-4, 1e-6)}
DEFAULT_MAX_ITERATIONS = 1000
DEFAULT_HISTORY = 10

#: Names the expression language gives a meaning of its own; user names may not shadow them.
RESERVED_NAMES = frozenset({
    "abs", "sign", "exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "softplus",
    "relu", "max", "min", "clip", "where", "sum", "dot", "range", "prediction", "pi",
    "and", "or", "not", "for", "in", "if", "True", "False", "None", "lambda",
})


@dataclass(frozen=True)
class ParameterSpec:
    """A learned parameter: scalar (shape ``()``) or fixed-shape array, initial values flat."""

    name: str
    shape: tuple[int, ...] = ()
    init: tuple[float, ...] = (0.0,)
    #: per-element bounds (flat); None = unbounded on that side
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class FieldSpec:
    """A per-sample field (input or target): scalar or fixed-shape array. ``range`` is the
    interval its values live in (e.g. positive for a model taking ``log(x)``); ``verify``
    draws its random samples there, otherwise from N(0, 1)."""

    name: str
    shape: tuple[int, ...] = ()
    range: tuple[float, float] | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ConstantSpec:
    """A runtime hyper-parameter with its default; changeable without regenerating code."""

    name: str
    default: float


@dataclass(frozen=True)
class ModelSpec:
    """The model's expressions, as source text in gradforge's expression language."""

    prediction: str
    loss: str
    regularization: str | None = None
    reduction: str = "mean"
    definitions: tuple[tuple[str, str], ...] = ()
    #: declared residuals (an array expression) for Levenberg–Marquardt; None = from the loss
    residuals: str | None = None


@dataclass(frozen=True)
class TrainingSpec:
    """Optimizer and loop settings; the generated code takes these as overridable defaults."""

    optimizer: str = "adam"
    learning_rate: float = 0.01
    epochs: int = 100
    batch_size: int = 32
    seed: int = 0
    hyper: tuple[tuple[str, float], ...] = ()
    #: stopping rules (see docs/semantics.md, "Training"); None = the optimizer's default
    max_iterations: int | None = None
    gradient_tolerance: float | None = None
    objective_tolerance: float | None = None
    history: int = DEFAULT_HISTORY      # L-BFGS correction pairs

    @property
    def first_order(self) -> bool:
        return self.optimizer in OPTIMIZER_KEYS

    def stopping(self, precision: str = "float64") -> tuple[int, float, float]:
        """(max_iterations, gradient_tolerance, objective_tolerance) with defaults filled in:
        first-order methods run ``epochs`` iterations unless a tolerance is set."""
        grad_tol, obj_tol = STOPPING_DEFAULTS["first_order" if self.first_order else precision]
        return (self.max_iterations if self.max_iterations is not None
                else (self.epochs if self.first_order else DEFAULT_MAX_ITERATIONS),
                grad_tol if self.gradient_tolerance is None else self.gradient_tolerance,
                obj_tol if self.objective_tolerance is None else self.objective_tolerance)

    def hyperparameters(self) -> dict[str, float]:
        """All optimizer hyper-parameters, defaults filled in, learning_rate first
        (none for L-BFGS and Levenberg–Marquardt, which choose their own steps)."""
        if not self.first_order:
            return {}
        values = {"learning_rate": self.learning_rate}
        values.update(OPTIMIZER_KEYS[self.optimizer])
        values.update(dict(self.hyper))
        return values


@dataclass(frozen=True)
class BackendRequest:
    """One ``[backends.NAME]`` table: which backend to build, where, with which options."""

    name: str
    out: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ProjectSpec:
    """A whole validated project. ``path`` is the project file (None when built in Python)."""

    name: str
    parameters: tuple[ParameterSpec, ...]
    model: ModelSpec
    inputs: tuple[FieldSpec, ...] = ()
    targets: tuple[FieldSpec, ...] = ()
    constants: tuple[ConstantSpec, ...] = ()
    precision: str = "float64"
    training: TrainingSpec = field(default_factory=TrainingSpec)
    backends: tuple[BackendRequest, ...] = ()
    path: Path | None = None

    @property
    def root(self) -> Path:
        """Folder that relative output paths are resolved against."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        return self.inputs + self.targets

    @property
    def num_params(self) -> int:
        return sum(p.size for p in self.parameters)

    @classmethod
    def create(cls, *, name: str, parameters: Mapping[str, Any], prediction: str, loss: str,
               inputs: Mapping[str, Any] = (), targets: Mapping[str, Any] = (),
               constants: Mapping[str, float] = (), definitions: Mapping[str, str] = (),
               regularization: str | None = None, reduction: str = "mean",
               residuals: str | None = None, precision: str = "float64", training: Mapping[str, Any] | None = None,
               backends: Mapping[str, Mapping[str, Any]] | None = None) -> "ProjectSpec":
        """Build and validate a project from Python values shaped like the TOML tables."""
        data: dict[str, Any] = {
            "project": {"name": name, "precision": precision},
            "parameters": dict(parameters),
            "inputs": dict(inputs),
            "targets": dict(targets),
            "constants": dict(constants),
            "model": {"prediction": prediction, "loss": loss, "reduction": reduction,
                      "definitions": dict(definitions)},
        }
        if regularization is not None:
            data["model"]["regularization"] = regularization
        if residuals is not None:
            data["model"]["residuals"] = residuals
        if training:
            data["training"] = dict(training)
        if backends:
            data["backends"] = {k: dict(v) for k, v in backends.items()}
        return parse_project(data)


# --------------------------------------------------------------------------- positions

class KeyLocator:
    """Finds the line/column of a dotted key in TOML text (``tomllib`` keeps none)."""

    _header = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    _assign = re.compile(r"^\s*(\"[^\"]*\"|[A-Za-z0-9_\-]+)\s*=")

    def __init__(self, text: str):
        self.positions: dict[str, tuple[int, int]] = {}
        self.lines = text.splitlines()
        table = ""
        for number, line in enumerate(self.lines, start=1):
            header = self._header.match(line)
            if header:
                table = ".".join(part.strip().strip('"') for part in header.group(1).split("."))
                self.positions.setdefault(table, (number, line.index("[") + 1))
                continue
            assign = self._assign.match(line)
            if assign:
                key = assign.group(1).strip('"')
                dotted = f"{table}.{key}" if table else key
                self.positions.setdefault(dotted, (number, line.index(assign.group(1)) + 1))

    def find(self, dotted: str) -> tuple[int | None, int | None]:
        """Best known position of ``dotted``: exact, inside an inline table, or a parent's."""
        if dotted in self.positions:
            return self.positions[dotted]
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:cut])
            if parent in self.positions:
                line, column = self.positions[parent]
                text = self.lines[line - 1]
                match = re.search(rf"\b{re.escape(parts[cut])}\s*=", text[column - 1:])
                if match:
                    return line, column + match.start()
                return line, column
        return None, None


# --------------------------------------------------------------------------- loading

PROJECT_FILE = "project.toml"


def project_file(path: str | Path) -> Path:
    """The project file ``path`` names: the file itself, or ``project.toml`` in a folder."""
    path = Path(path)
    if path.is_dir():
        found = path / PROJECT_FILE
        if not found.is_file():
            raise ProjectError(f"folder has no {PROJECT_FILE}", file=str(path),
                               hint="pass the path of a project .toml, or run "
                                    f"`gradforge init {path}`")
        return found
    return path


def load_project(path: str | Path) -> ProjectSpec:
    """Read and validate a project file (or a folder's ``project.toml``); every problem is a
    :class:`ProjectError`."""
    path = project_file(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError("file not found", file=shown,
                           hint="pass the path of a project .toml, or run `gradforge init`")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read the file: {exc}", file=shown)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        line, column = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        raise ProjectError(f"invalid TOML: {message}", file=shown, line=line, column=column,
                           hint="fix the TOML syntax")
    locator = KeyLocator(text)
    try:
        return parse_project(data, path=path)
    except ProjectError as err:
        line, column = locator.find(err.location.key) if err.location.key else (None, None)
        raise err.with_location(file=shown, line=line, column=column)


def locate(err: ProjectError, path: Path) -> ProjectError:
    """Fill in the file and, from its text, the line/column of an error's key."""
    line = column = None
    path = Path(path)
    if path.is_dir():
        path = path / PROJECT_FILE
    if err.location.key:
        try:
            line, column = KeyLocator(Path(path).read_text(encoding="utf-8")).find(
                err.location.key)
        except (OSError, UnicodeDecodeError):
            pass
    return err.with_location(file=str(path), line=line, column=column)


def parse_project(data: Mapping[str, Any], path: Path | None = None) -> ProjectSpec:
    """Validate the decoded TOML tables (or the same shape built in Python)."""
    _check_keys(data, ("project", "parameters", "inputs", "targets", "constants", "model",
                       "training", "backends"), "")
    project = _table(data, "project", required=True)
    _check_keys(project, ("name", "precision", "description"), "project")
    name = _identifier(_require(project, "name", "project"), "project.name")
    precision = project.get("precision", "float64")
    if precision not in PRECISIONS:
        raise ProjectError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                           f"not {precision!r}", key="project.precision")

    seen: dict[str, str] = {}

    def claim(item: str, section: str) -> str:
        key = f"{section}.{item}"
        _identifier(item, key)
        if item in RESERVED_NAMES:
            raise ProjectError(f"'{item}' is a reserved word of the expression language",
                               key=key, hint="rename it")
        if item in seen:
            raise ProjectError(f"'{item}' is already declared in [{seen[item]}]", key=key,
                               hint="every name must be unique across the project")
        seen[item] = section
        return item

    parameters = tuple(_parameter(claim(k, "parameters"), v)
                       for k, v in _table(data, "parameters", required=True).items())
    if not parameters:
        raise ProjectError("at least one parameter is needed", key="parameters",
                           hint="declare e.g. `a = 0.5` under [parameters]")
    inputs = tuple(_field(claim(k, "inputs"), v, "inputs")
                   for k, v in _table(data, "inputs").items())
    targets = tuple(_field(claim(k, "targets"), v, "targets")
                    for k, v in _table(data, "targets").items())
    constants = tuple(ConstantSpec(claim(k, "constants"), _number(v, f"constants.{k}"))
                      for k, v in _table(data, "constants").items())

    model_t = _table(data, "model", required=True)
    _check_keys(model_t, ("prediction", "loss", "regularization", "reduction", "definitions",
                          "residuals"), "model")
    definitions = []
    for k, v in _table(model_t, "definitions", prefix="model").items():
        claim(k, "model.definitions")
        definitions.append((k, _string(v, f"model.definitions.{k}")))
    reduction = model_t.get("reduction", "mean")
    if reduction not in REDUCTIONS:
        raise ProjectError(f"reduction must be 'mean' or 'sum', not {reduction!r}",
                           key="model.reduction")
    regularization = model_t.get("regularization")
    model = ModelSpec(
        prediction=_string(_require(model_t, "prediction", "model"), "model.prediction"),
        loss=_string(_require(model_t, "loss", "model"), "model.loss"),
        regularization=None if regularization is None
        else _string(regularization, "model.regularization"),
        reduction=reduction,
        definitions=tuple(definitions),
        residuals=None if model_t.get("residuals") is None
        else _string(model_t["residuals"], "model.residuals"),
    )
    return ProjectSpec(name=name, parameters=parameters, model=model, inputs=inputs,
                       targets=targets, constants=constants, precision=precision,
                       training=_training(_table(data, "training")),
                       backends=_backends(_table(data, "backends")), path=path)


# --------------------------------------------------------------------------- helpers

def _check_keys(table: Mapping[str, Any], allowed, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            dotted = f"{prefix}.{key}" if prefix else key
            raise ProjectError(f"unknown key '{key}'", key=dotted,
                               hint=did_you_mean(key, allowed)
                               or f"allowed here: {', '.join(allowed)}")


def _table(data: Mapping[str, Any], key: str, required: bool = False,
           prefix: str = "") -> Mapping[str, Any]:
    dotted = f"{prefix}.{key}" if prefix else key
    if key not in data:
        if required:
            raise ProjectError(f"missing table [{dotted}]", key=dotted,
                               hint="see `gradforge init` for a complete example")
        return {}
    value = data[key]
    if not isinstance(value, Mapping):
        raise ProjectError(f"expected a table, got {_kind(value)}", key=dotted)
    return value


def _require(table: Mapping[str, Any], key: str, prefix: str) -> Any:
    if key not in table:
        raise ProjectError(f"missing key '{key}'", key=f"{prefix}.{key}" if prefix else key)
    return table[key]


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _identifier(value: Any, key: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ProjectError(f"{value!r} is not a valid name", key=key,
                           hint="use letters, digits and '_', starting with a letter")
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProjectError(f"expected an expression string, got {_kind(value)}", key=key)
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProjectError(f"expected a number, got {_kind(value)}", key=key)
    if not math.isfinite(value):
        raise ProjectError("expected a finite number", key=key)
    return float(value)


def _integer(value: Any, key: str, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProjectError(f"expected an integer, got {_kind(value)}", key=key)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ProjectError(f"must be {bound}, got {value}", key=key)
    return value


def _shape(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ProjectError("shape must be a non-empty array of positive integers, e.g. [4]",
                           key=key, hint="omit `shape` for a scalar")
    shape = tuple(_integer(n, key, low=1) for n in value)
    if math.prod(shape) > MAX_ELEMENTS:
        raise ProjectError(f"shape {list(shape)} has more than {MAX_ELEMENTS} elements", key=key)
    return shape


def _flatten_init(value: Any, shape: tuple[int, ...], key: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        return (_number(value, key),) * math.prod(shape)
    if not shape or len(value) != shape[0]:
        expect = shape[0] if shape else "no"
        raise ProjectError(f"init has {len(value)} entries where the shape needs {expect}",
                           key=key, hint="give a number (broadcast) or a nested list of the shape")
    out: list[float] = []
    for item in value:
        if not isinstance(item, list) and len(shape) > 1:
            raise ProjectError("init nesting does not match the shape", key=key)
        out.extend(_flatten_init(item, shape[1:], key) if len(shape) > 1
                   else (_number(item, key),))
    return tuple(out)


def _parameter(name: str, value: Any) -> ParameterSpec:
    key = f"parameters.{name}"
    if not isinstance(value, Mapping):
        return ParameterSpec(name, (), (_number(value, key),))
    _check_keys(value, ("shape", "init", "lower", "upper"), key)
    shape = _shape(value["shape"], f"{key}.shape") if "shape" in value else ()
    init = _flatten_init(value.get("init", 0.0), shape, f"{key}.init")
    lower = _flatten_init(value["lower"], shape, f"{key}.lower") if "lower" in value else None
    upper = _flatten_init(value["upper"], shape, f"{key}.upper") if "upper" in value else None
    for i, x in enumerate(init):
        at = f" (element {i})" if shape else ""
        if lower is not None and upper is not None and lower[i] > upper[i]:
            raise ProjectError(f"lower bound {lower[i]} is above upper bound {upper[i]}{at}",
                               key=f"{key}.lower", hint="swap or fix the bounds")
        if lower is not None and x < lower[i]:
            raise ProjectError(f"init {x} is below the lower bound {lower[i]}{at}",
                               key=f"{key}.init", hint="start inside the bounds")
        if upper is not None and x > upper[i]:
            raise ProjectError(f"init {x} is above the upper bound {upper[i]}{at}",
                               key=f"{key}.init", hint="start inside the bounds")
    return ParameterSpec(name, shape, init, lower, upper)


def _field(name: str, value: Any, section: str) -> FieldSpec:
    key = f"{section}.{name}"
    if not isinstance(value, Mapping):
        raise ProjectError(f"expected a table such as {{}} or {{ shape = [3] }}, "
                           f"got {_kind(value)}", key=key)
    _check_keys(value, ("shape", "range"), key)
    shape = _shape(value["shape"], f"{key}.shape") if "shape" in value else ()
    return FieldSpec(name, shape, _range(value["range"], f"{key}.range")
                     if "range" in value else None)


def _range(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ProjectError(f"range must be an array of two numbers [low, high], got "
                           f"{_kind(value)}" + (f" of {len(value)}" if isinstance(value, (list, tuple))
                                                 else ""), key=key, hint="e.g. range = [0.1, 10]")
    low, high = (_number(v, key) for v in value)
    if not low < high:
        raise ProjectError(f"range [{low:g}, {high:g}] is empty: low must be below high",
                           key=key, hint="e.g. range = [0.1, 10]")
    return low, high


def _training(table: Mapping[str, Any]) -> TrainingSpec:
    optimizer = table.get("optimizer", "adam")
    optimizer = OPTIMIZER_ALIASES.get(optimizer, optimizer) if isinstance(optimizer, str) \
        else optimizer
    if optimizer not in OPTIMIZERS:
        raise ProjectError(f"unknown optimizer {optimizer!r}", key="training.optimizer",
                           hint=did_you_mean(str(optimizer), OPTIMIZERS + tuple(OPTIMIZER_ALIASES))
                           or f"choose one of {', '.join(OPTIMIZERS)}")
    first_order = optimizer in OPTIMIZER_KEYS
    stopping = ("max_iterations", "gradient_tolerance", "objective_tolerance")
    if first_order:
        allowed = ("optimizer", "learning_rate", "epochs", "batch_size", "seed",
                   *OPTIMIZER_KEYS[optimizer], *stopping)
    else:
        allowed = ("optimizer", "seed", *stopping, *(("history",) if optimizer == "lbfgs" else ()))
    for key in table:
        if key not in allowed:
            owner = [o for o, keys in OPTIMIZER_KEYS.items() if key in keys]
            if not first_order and key in ("learning_rate", "epochs", "batch_size"):
                hint = (f"'{optimizer}' is full batch and chooses its own steps; "
                        f"remove '{key}' (use max_iterations to cap the work)")
            elif owner:
                hint = f"'{key}' belongs to optimizer '{owner[0]}'"
            elif key == "history":
                hint = "'history' belongs to optimizer 'lbfgs'"
            else:
                hint = did_you_mean(key, allowed) or f"allowed here: {', '.join(allowed)}"
            raise ProjectError(f"unknown key '{key}' for optimizer '{optimizer}'",
                               key=f"training.{key}", hint=hint)
    hyper = []
    for key in OPTIMIZER_KEYS.get(optimizer, ()):
        if key in table:
            number = _number(table[key], f"training.{key}")
            if not (0.0 <= number < 1.0) and key != "epsilon":
                raise ProjectError(f"must be in [0, 1), got {number}", key=f"training.{key}")
            if key == "epsilon" and number <= 0:
                raise ProjectError("must be positive", key="training.epsilon")
            hyper.append((key, number))
    learning_rate = _number(table.get("learning_rate", 0.01), "training.learning_rate")
    if learning_rate <= 0:
        raise ProjectError("must be positive", key="training.learning_rate")
    tolerances = {}
    for key in ("gradient_tolerance", "objective_tolerance"):
        if key in table:
            tolerances[key] = _number(table[key], f"training.{key}")
            if tolerances[key] < 0:
                raise ProjectError("must be zero (off) or positive", key=f"training.{key}")
    return TrainingSpec(
        optimizer=optimizer,
        learning_rate=learning_rate,
        epochs=_integer(table.get("epochs", 100), "training.epochs"),
        batch_size=_integer(table.get("batch_size", 32 if first_order else 0),
                            "training.batch_size"),
        seed=_integer(table.get("seed", 0), "training.seed", high=2**63 - 1),
        hyper=tuple(hyper),
        max_iterations=(_integer(table["max_iterations"], "training.max_iterations", low=1)
                        if "max_iterations" in table else None),
        gradient_tolerance=tolerances.get("gradient_tolerance"),
        objective_tolerance=tolerances.get("objective_tolerance"),
        history=_integer(table.get("history", DEFAULT_HISTORY), "training.history",
                         low=1, high=1000),
    )


def _backends(table: Mapping[str, Any]) -> tuple[BackendRequest, ...]:
    requests = []
    for name, options in table.items():
        key = f"backends.{name}"
        if not isinstance(options, Mapping):
            raise ProjectError(f"expected a table, got {_kind(options)}", key=key,
                               hint=f"write [backends.{name}] as a table header")
        options = dict(options)
        out = options.pop("out", None)
        if out is not None and (not isinstance(out, str) or not out):
            raise ProjectError("out must be a non-empty path string", key=f"{key}.out")
        requests.append(BackendRequest(name, out, tuple(sorted(options.items()))))
    return tuple(requests)
