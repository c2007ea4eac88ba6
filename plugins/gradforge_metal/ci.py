"""Material for the macOS CI job (.github/workflows/metal-macos.yml).

``python -m gradforge_metal.ci OUT`` writes, for every example project (as float32) plus a
``simd_sum`` variant and the 577-parameter MLP:

* ``OUT/<label>/<label>.metal`` and ``OUT/<label>/Sources/…`` — what ``emit`` produces;
* ``OUT/main.swift`` — a check program: on a Mac with a Metal device it runs every trainer
  (kernels compiled from the bundled source and, when ``OUT/<label>/<label>.metallib`` exists,
  from the precompiled library) and compares objective, gradient, predictions and one optimizer
  step with gradforge's independent reference, checks that two runs are bit-identical, and
  compares a 3-epoch training run with the NumPy backend (for a Levenberg–Marquardt project,
  ``decay``: the objective ``train(options:)`` reaches, host LM on the GPU's JᵀJ, with the
  NumPy backend's; for ``boxed_adam``, a box-constrained fit whose bounds are active, the
  step kernel's projection in every mini-batch). Without a device it says so and
  exits 0: compiling is then the whole check.

Nothing here runs on Linux except the generation (tested in tests/test_metal_backend.py).
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from gradforge.plugin_api import (Case, ProjectSpec, Reference, compile_project, emit,
                                  header_text, load_project, make_cases, render, shortest_repr)

from .plugin import MetalBackend

EXAMPLES = ("huber", "logistic", "mlp", "trend", "decay")
TRAIN_EPOCHS = 3


def repo_examples() -> Path:
    """The examples folder of a source checkout (plugins/gradforge_metal → repository root)."""
    return Path(__file__).resolve().parents[2] / "examples"


def mlp577_spec(precision: str = "float32") -> ProjectSpec:
    """A tanh MLP with 7 inputs, 64 hidden units and one output: 7·64 + 64 + 64 + 1 = 577."""
    hidden, inputs = 64, 7
    weights = [[round(0.3 * (((k * 7 + j * 3) % 11) / 5.0 - 1.0), 3) for j in range(inputs)]
               for k in range(hidden)]
    return ProjectSpec.create(
        name="mlp577", precision=precision,
        parameters={"W": {"shape": [hidden, inputs], "init": weights},
                    "b1": {"shape": [hidden], "init": 0.0},
                    "v": {"shape": [hidden], "init": 0.05},
                    "b2": 0.0},
        inputs={"x": {"shape": [inputs]}}, targets={"y": {}},
        definitions={"h": f"[tanh(sum(W[k, j]*x[j] for j in range({inputs})) + b1[k]) "
                          f"for k in range({hidden})]"},
        prediction="dot(v, h) + b2", loss="(prediction - y)**2", reduction="mean",
        training={"optimizer": "adam", "learning_rate": 0.01, "batch_size": 16})


def boxed_spec(optimizer: str = "adam", precision: str = "float32") -> ProjectSpec:
    """A cubic fit in a box that holds its optimum out: with x and y uniform in [-1, 1] the
    unconstrained fit is near 0, so ``a ≤ -0.5``, ``b ≥ 0.5`` and ``w[0] ≥ 0.25`` become
    active; ``w[1]`` (bounded on both sides, [-1, 1]) makes up for ``a`` through x³ and may
    reach its upper bound. Per-element bounds, open sides, both sides: every case the step
    kernel's projection prints."""
    return ProjectSpec.create(
        name="boxed", precision=precision,
        parameters={"a": {"init": -1.0, "upper": -0.5}, "b": {"init": 1.0, "lower": 0.5},
                    "w": {"shape": [2], "init": [0.5, 0.0], "lower": [0.25, -1.0],
                          "upper": [4.0, 1.0]}},
        inputs={"x": {"range": [-1.0, 1.0]}}, targets={"y": {"range": [-1.0, 1.0]}},
        prediction="a*x + b + w[0]*x*x + w[1]*x*x*x", loss="(prediction - y)**2",
        reduction="mean",
        training={"optimizer": optimizer, "learning_rate": 0.1,
                  "batch_size": 16, "epochs": TRAIN_EPOCHS})


def variants(examples: Path) -> list[tuple[str, ProjectSpec, dict]]:
    """(label, float32 spec, backend options) for every program the CI job builds."""
    out = []
    for name in EXAMPLES:
        spec = load_project(examples / name / "project.toml")
        out.append((name, dataclasses.replace(spec, precision="float32"), {}))
    huber = dataclasses.replace(out[0][1], name="huber_simd")
    out.append(("huber_simd", huber, {"simd_reduction": True, "reduction_width": 3}))
    out.append(("mlp577", mlp577_spec(), {}))
    out.append(("boxed_adam", dataclasses.replace(boxed_spec("adam"), name="boxed_adam"), {}))
    return out


def _floats(values) -> str:
    return "[" + ", ".join(shortest_repr(float(v), "float32") for v in values) + "]"


def _doubles(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def numpy_training(program, case: Case, epochs: int) -> list[float]:
    """θ after ``epochs`` of the NumPy backend's train() from ``case`` (the batching oracle)."""
    module, params, data = _numpy_float32(program, case, f"_gradforge_metal_ci_{program.name}")
    trained = module.train(params, data, case.constants, epochs=epochs).params
    return [float(v) for v in module.flatten(trained)]


def numpy_lm_objective(program, case: Case) -> float:
    """The objective the NumPy backend's Levenberg–Marquardt reaches from ``case`` (float32)."""
    module, params, data = _numpy_float32(program, case,
                                          f"_gradforge_metal_ci_lm_{program.name}")
    return float(module.train(params, data, case.constants).objective)


def _numpy_float32(program, case: Case, module_name: str):
    """The NumPy backend's module for ``program`` with ``case``'s parameters and data in
    float32: the oracle both checks above train."""
    import numpy as np
    from gradforge_numpy.plugin import load_module
    files = emit(program, "numpy")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{program.name}.py"
        path.write_text(files[path.name], encoding="utf-8")
        module = load_module(path, module_name)
    data = {f.name: np.array(case.data[f.name], dtype=np.float32).reshape((case.n,) + f.shape)
            for f in program.fields}
    params = module.unflatten(np.array(case.params, dtype=np.float32))
    return module, params, data


def check_entry(label: str, spec: ProjectSpec, program, model: dict) -> dict:
    case = make_cases(spec, count=1, samples=(50,), seed=11)[0]
    want = Reference(spec).expected(case)
    fields = []
    for f, info in zip(program.fields, model["fields"]):
        fields.append({"swift": info["swift"], "role": f.role,
                       "data": _floats(v for row in case.data[f.name] for v in row)})
    constants = [{"swift": c["swift"], "value": shortest_repr(case.constants[c["name"]],
                                                              "float32")}
                 for c in model["constants"]]
    return {
        "label": label, "type": model["swift_type"], "fields": fields,
        "constants": constants, "params": _floats(case.params),
        "objective": repr(want.objective), "gradient": _doubles(want.gradient),
        "predictions": _doubles(want.predictions), "stepped": _doubles(want.stepped) if want.stepped is not None else None,
        "lm_objective": repr(numpy_lm_objective(program, case))
        if program.training.method == "levenberg_marquardt" else None,
        "trained": _doubles(numpy_training(program, case, TRAIN_EPOCHS))
        if program.training.method not in ("lbfgs", "levenberg_marquardt") else None,
        "epochs": TRAIN_EPOCHS,
    }


def generate(out: Path, examples: Path | None = None,
             only: set[str] | None = None) -> list[str]:
    """Write everything the macOS job compiles and runs (``only``: a subset of the labels);
    returns the labels written."""
    backend = MetalBackend()
    checks = []
    labels = []
    for label, spec, options in variants(examples or repo_examples()):
        if only is not None and label not in only:
            continue
        program = compile_project(spec)
        resolved = backend.resolve_options(options)
        for rel, text in backend.emit(program, resolved).items():
            target = out / label / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        checks.append(check_entry(label, spec, program, backend.model(program, resolved)))
        labels.append(label)
    text = render("gradforge_metal", "MetalCheck.swift.j2", header=header_text(None),
                  checks=checks)
    (out / "main.swift").write_text(text, encoding="utf-8")
    return labels


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gradforge_metal.ci OUT_FOLDER", file=sys.stderr)
        return 2
    labels = generate(Path(argv[0]))
    print(f"wrote {', '.join(labels)} and main.swift to {argv[0]}")
    return 0


__all__ = ["generate", "boxed_spec", "mlp577_spec", "variants", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
