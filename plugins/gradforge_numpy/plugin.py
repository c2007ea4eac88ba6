"""The NumPy backend plugin: config, emission and an in-process runner."""
from __future__ import annotations

import importlib.util
import keyword
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import sympy as sp

from gradforge.plugin_api import (DAMPING, LINE_SEARCH, Backend, Case, Kernel, Program, Result, Toolchain,
                                  ToolchainError, check_vocabulary, header_text, hookimpl,
                                  render, safe_names, shortest_repr)

from .printer import GradforgeNumPyPrinter

#: Names the generated module uses itself; user names that collide are renamed.
RESERVED = set(keyword.kwlist) | set(dir(__builtins__) if isinstance(__builtins__, dict)
                                     else dir(__builtins__)) | {
    "numpy", "theta", "d", "c", "n", "grad", "h", "state", "DTYPE", "NUM_PARAMS", "value",
    "jac", "math",
}


#: A module ``<name>.py`` beside a script shadows the library of that name for the script and
#: for everything it imports (NumPy itself imports much of the standard library).
SHADOWED = {**{name: f"the Python standard-library module '{name}'"
               for name in sorted(sys.stdlib_module_names) if not name.startswith("_")},
            "numpy": "the numpy package the generated module imports"}


def _shape_tuple(shape) -> str:
    return "()" if not shape else "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


class NumpyBackend(Backend):
    name = "numpy"
    description = "NumPy module vectorized over samples (prototyping, reference)"
    comment_prefix = "#"
    shadowed_names = SHADOWED
    training_methods = ("sgd", "momentum", "adam", "lbfgs", "levenberg_marquardt")
    supports_bounds = True

    def emit(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        check_vocabulary(program, backend=self.name)
        names = safe_names(program.symbol_names(), RESERVED)
        printer = GradforgeNumPyPrinter({"names": names})
        leaf = program.leaf_kind()

        def load_lines(kernel: Kernel) -> list[str]:
            used = kernel.free_symbols()
            lines = []
            for p in program.parameters:
                for i, s in enumerate(p.symbols):
                    if s in used:
                        lines.append(f"{names[s.name]} = theta[{p.offset + i}]")
            for f in program.fields:
                for i, s in enumerate(f.symbols):
                    if s in used:
                        lines.append(f'{names[s.name]} = d["{f.name}"][:, {i}]')
            for k in program.constants:
                if k.symbol in used:
                    lines.append(f'{names[k.symbol.name]} = c["{k.name}"]')
            unknown = sorted(s.name for s in used if s not in leaf)
            assert not unknown, unknown
            return lines

        def body(kernel: Kernel) -> list[str]:
            return [f"{names[a.target.name]} = {printer.doprint(a.expr)}" for a in kernel.body]

        def has_piecewise(kernel: Kernel) -> bool:
            return any(e.has(sp.Piecewise) for e in kernel.expressions())

        kernels = []
        for label, kernel in program.kernels():
            lines = load_lines(kernel) + body(kernel)
            if label == "predict":
                lines.append(f"return {printer.doprint(kernel.output('prediction'))}")
                doc = "Per-sample prediction (array of n, or a scalar if it uses no field)."
            elif label == "loss":
                lines.append(f"return {printer.doprint(kernel.output('loss'))}")
                doc = "Per-sample loss."
            elif label == "loss_and_gradient":
                lines.append("grad = numpy.zeros(NUM_PARAMS, dtype=DTYPE)")
                lines += [f"grad[{i}] = _total({printer.doprint(g)}, n)"
                          for i, g in kernel.gradient]
                lines.append(f"return _total({printer.doprint(kernel.output('loss'))}, n), grad")
                doc = "Sum over samples of the loss and of its gradient."
            else:
                lines.append("grad = numpy.zeros(NUM_PARAMS, dtype=DTYPE)")
                lines += [f"grad[{i}] = {printer.doprint(g)}" for i, g in kernel.gradient]
                lines.append(f"return DTYPE({printer.doprint(kernel.output('value'))}), grad")
                doc = "Regularization R(θ) and its gradient (no samples involved)."
            if has_piecewise(kernel):
                # numpy.where evaluates both branches; the unselected one may overflow
                lines.insert(0, 'with numpy.errstate(over="ignore", invalid="ignore", '
                                'divide="ignore"):')
                lines = [lines[0]] + ["    " + line for line in lines[1:]]
            kernels.append({"function": f"_{label}", "lines": lines, "doc": doc})

        residual_names = {"sample": [], "regularizer": []}
        for group, residual_kernels in (("sample", program.residuals),
                                        ("regularizer", program.regularizer_residuals)):
            for k, kernel in enumerate(residual_kernels):
                function = f"_{group}_residual_{k}"
                residual_names[group].append(function)
                lines = load_lines(kernel) + body(kernel)
                lines.append("jac = numpy.zeros((n, NUM_PARAMS), dtype=DTYPE)")
                lines += [f"jac[:, {i}] = {printer.doprint(g)}" for i, g in kernel.gradient]
                lines.append(f"return numpy.broadcast_to({printer.doprint(kernel.output('residual'))}"
                             f", (n,)).astype(DTYPE), jac")
                if has_piecewise(kernel):
                    lines.insert(0, 'with numpy.errstate(over="ignore", invalid="ignore", '
                                    'divide="ignore"):')
                    lines = [lines[0]] + ["    " + line for line in lines[1:]]
                what = "a per-sample" if group == "sample" else "a regularizer"
                kernels.append({"function": function, "lines": lines,
                                "doc": f"Residual {k} ({what} residual) and its Jacobian row."})

        opt = program.optimizer
        optimizer = {
            "kind": opt.kind,
            "hyper": [{"name": h.name, "default": shortest_repr(h.default, "float64")}
                      for h in opt.hyperparameters],
            "hyper_vars": [(h.name, names[h.symbol.name]) for h in opt.hyperparameters],
            "param": names[opt.param.name],
            "grad": names[opt.grad.name],
            "element_state": [s.name for s in opt.element_state],
            "scalar_state": [(s.name, shortest_repr(v, "float64")) for s, v in opt.scalar_state],
            "state_vars": [(s.name, names[s.name]) for s in opt.element_state]
            + [(s.name, names[s.name]) for s, _ in opt.scalar_state],
            "lines": [f"{names[a.target.name]} = {printer.doprint(a.expr)}"
                      for a in opt.scalar_update + opt.element_update],
        }
        t = program.training
        # the public one-step function projects onto the bounds; unbounded models print it as before
        project_step = program.bounded and t.method in ("sgd", "momentum", "adam")
        init = [shortest_repr(v, "float64") for p in program.parameters for v in p.init]
        chunks = [", ".join(init[i:i + 8]) + "," for i in range(0, len(init), 8)]
        text = render(
            "gradforge_numpy", "module.py.j2",
            header=header_text(program.source), name=program.name,
            model_hash=program.model_hash,
            precision=program.precision, num_params=program.num_params,
            parameters=[{"name": p.name, "shape_tuple": _shape_tuple(p.shape),
                         "offset": p.offset} for p in program.parameters],
            fields=[{"name": f.name, "shape_tuple": _shape_tuple(f.shape), "role": f.role}
                    for f in program.fields],
            constants=[{"name": c.name, "default": shortest_repr(c.default, "float64")}
                       for c in program.constants],
            param_summary=", ".join(f"{p.name}{list(p.shape) if p.shape else ''}"
                                    for p in program.parameters),
            field_summary=", ".join(f"{f.name}{list(f.shape) if f.shape else ''} ({f.role})"
                                    for f in program.fields) or "none",
            reduction=program.reduction, has_regularizer=program.regularizer is not None,
            kernels=kernels, optimizer=optimizer, init_chunks=chunks,
            training={"epochs": t.epochs, "batch_size": t.batch_size, "seed": t.seed,
                      "method": t.method, "max_iterations": t.max_iterations,
                      "gradient_tolerance": shortest_repr(t.gradient_tolerance, "float64"),
                      "objective_tolerance": shortest_repr(t.objective_tolerance, "float64"),
                      "history": t.history},
            lower=_bound_list(program.lower), upper=_bound_list(program.upper),
            project_step=project_step,
            step_function="_optimizer_update" if project_step else "optimizer_step",
            ls=LINE_SEARCH, damping=DAMPING, residual_names=residual_names,
        )
        return {f"{program.name}.py": text}

    def toolchains(self) -> list[Toolchain]:
        try:
            import numpy
            return [Toolchain("numpy", True, f"numpy {numpy.__version__}")]
        except ImportError:
            return [Toolchain("numpy", False, "pip install numpy")]

    def run(self, program: Program, options: Mapping[str, Any], cases: Sequence[Case],
            workdir: Path) -> list[Result]:
        if not self.toolchains()[0].available:
            raise ToolchainError("numpy is not installed (pip install numpy)")
        import numpy as np
        files = self.emit(program, options)
        workdir.mkdir(parents=True, exist_ok=True)
        (path := workdir / f"{program.name}.py").write_text(files[path.name], encoding="utf-8")
        module = load_module(path, f"_gradforge_verify_{program.name}_{id(workdir)}")
        results = []
        for case in cases:
            params = module.unflatten(np.array(case.params))
            data = {f.name: np.array(case.data[f.name]).reshape((case.n,) + f.shape)
                    for f in program.fields}
            value, grads = module.value_and_grad(params, data, case.constants)
            grad = module.flatten(grads)
            # inputs only (a model without inputs still needs a field to count the samples)
            inputs = {name: data[name] for name in module.INPUTS} or data
            pred = module.predict(params, inputs, case.constants)
            stepped = None
            if program.optimizer.element_update:
                state = module.init_optimizer_state()
                stepped = tuple(map(float, module.optimizer_step(module.flatten(params), grad,
                                                                 state)))
            results.append(Result(float(value), tuple(map(float, grad)),
                                  tuple(map(float, pred)), stepped))
        return results


def _bound_list(values) -> str:
    return ", ".join("numpy.inf" if v == float("inf") else "-numpy.inf" if v == float("-inf")
                     else shortest_repr(v, "float64") for v in values)


def load_module(path: Path, name: str):
    """Import a generated module from a file path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@hookimpl
def gradforge_backends():
    return [NumpyBackend()]
