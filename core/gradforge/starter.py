"""``gradforge init``: a commented starter project that builds as written."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from .errors import ProjectError
from .project import IDENTIFIER, parse_project

TEMPLATE = '''\
# A gradforge project: a model whose loss is summed or averaged over samples, and the
# backends to generate training code for. Build it with:  gradforge build project.toml
# Check the generated gradients against a 50-digit reference:  gradforge verify project.toml

[project]
name = "{name}"            # identifier; file, module and type names derive from it
precision = "float64"      # "float32" | "float64"

[parameters]               # learned; declaration order = flat parameter-vector order
a = 0.5                    # a scalar with its initial value
b = 0.0
c = 0.0
# w = {{ shape = [4], init = 0.1 }}     # an array: init is a number or a nested list

[inputs]                   # per-sample fields: scalar {{}} or {{ shape = [...] }}
x = {{}}                     # {{ range = [0.1, 10] }}: where values live (verify draws there)

[targets]
y = {{}}

[constants]                # runtime hyper-parameters, changeable without rebuilding
scale = 1.0

[model]
prediction = "a*x**2 + b*x + c"
loss = "scale*abs(prediction - y)"     # per-sample; may use `prediction`
# regularization = "1e-3*(a**2 + b**2)" # parameters and constants only
reduction = "mean"                     # "mean" | "sum" over samples

[model.definitions]        # named intermediates (scalars or [... for k in range(N)] arrays)
# r = "prediction - y"

[training]
optimizer = "adam"         # "sgd" | "momentum" (momentum = 0.9) | "adam" (beta1, beta2, epsilon)
learning_rate = 0.05
epochs = 100
batch_size = 16            # 0 = full batch; shuffling is seeded and deterministic
seed = 0

[backends.numpy]           # one table per backend; `out` defaults to build/<backend>
[backends.c]
# [backends.swift]
# [backends.metal]         # needs precision = "float32"
'''


def sanitized_name(text: str) -> str:
    """A project name made from free text (a folder name): runs of characters other than
    letters, digits and '_' become one '_'; a name that would start with a digit or be
    empty gets the prefix ``model_`` (``"3d"`` → ``model_3d``, ``"my model"`` → ``my_model``)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    if not name or not name[0].isalpha():
        name = f"model_{name}".rstrip("_")
    return name


def write_starter(folder: Path, name: str | None = None) -> tuple[Path, str]:
    """Write ``folder/project.toml``; never overwrites an existing file. Returns the path and
    the project name: ``name``, which must be a valid name, or one derived from the folder
    (:func:`sanitized_name`, plus ``_model`` where a backend would refuse it, e.g. a folder
    called ``numpy``)."""
    folder = Path(folder)
    if name is None:
        name = sanitized_name(folder.resolve().name)
        if _refusal(name) is not None:
            name = f"{name}_model"
    elif not IDENTIFIER.match(name):
        raise ProjectError(f"{name!r} is not a valid project name", key="--name",
                           hint="use letters, digits and '_', starting with a letter, "
                                f"e.g. --name {sanitized_name(name)}")
    refused = _refusal(name)
    if refused is not None:
        raise ProjectError(f"project name {name!r} cannot be used: {refused.message}",
                           key="--name", hint=f"e.g. --name {name}_model")
    path = folder / "project.toml"
    if path.exists():
        raise ProjectError("already exists", file=str(path),
                           hint="choose another folder or remove the file")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(name=name), encoding="utf-8")
    return path, name


def _refusal(name: str) -> ProjectError | None:
    """Why the starter project called ``name`` would not build (a backend refusing a name
    that hides a library, such as ``numpy`` or ``math``), or None."""
    from .backend import check_output_names
    from .lower import compile_project
    from .plugins import load_registry
    spec = parse_project(tomllib.loads(TEMPLATE.format(name=name)))
    program = compile_project(spec)
    registry = load_registry()
    try:
        for request in spec.backends:
            backend = registry.backend(request.name)
            check_output_names(backend, program, backend.resolve_options(dict(request.options)))
    except ProjectError as err:
        return err
    return None
