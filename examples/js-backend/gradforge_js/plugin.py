"""The ``js`` backend: one ES module per model, verified with Node.js.

The module exports ``objective(params, data, constants)``, ``valueAndGradient(params, data,
constants)`` → ``{value, gradient}``, ``predict(params, inputs, constants)`` (inputs only),
``initialParameters()``, ``newOptimizerState()`` and ``step(params, gradient, state, hyper)``
(one optimizer update, as every gradforge backend does it). ``data[field]`` holds one entry per
sample: a number for a scalar field, an array (row-major) for an array field. Parameters are
one flat array in gradforge's order (``PARAMETERS`` lists names, offsets and shapes).

Everything here comes from :mod:`gradforge.plugin_api`: that is the point of this example.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from gradforge.plugin_api import (Backend, Case, Kernel, Option, Program, Result,
                                  Toolchain, check_vocabulary, decode_results,
                                  encode_cases, find_tool, header_text, hookimpl, render,
                                  run_tool, safe_names, shortest_repr, write_files)

from .printer import JavaScriptPrinter

PACKAGE = "gradforge_js"

#: JavaScript reserved words and globals, plus the names the generated module uses itself.
RESERVED = frozenset("""
    await break case catch class const continue debugger default delete do else enum export
    extends false finally for function if implements import in instanceof interface let new
    null package private protected public return static super switch this throw true try
    typeof var void while with yield arguments eval undefined NaN Infinity globalThis Math
    Object Array Number String JSON Error TypeError RangeError
    params data constants hyper state n i k gradient total value reg out store scale
    PARAMETER_COUNT PARAMETERS INPUTS TARGETS CONSTANTS HYPERPARAMETERS REDUCTION
    checkParameters sampleCount regularizer
""".split())


def _js(value: float, precision: str) -> str:
    """A stored number (initial values, defaults): float32 values as their float32 double."""
    return shortest_repr(value, precision)


def _bound(value: float) -> str:
    return "Infinity" if value == float("inf") else "-Infinity" if value == float("-inf") \
        else shortest_repr(value, "float64")


class JavaScriptBackend(Backend):
    name = "js"
    description = "JavaScript ES module (Node.js, browsers): objective, gradient, predict, step"
    options = (Option("module", str, "", "module file name without .mjs "
                      "(default: the project name)"),)
    #: step() implements these (with bounds projected); for L-BFGS and Levenberg–Marquardt
    #: projects the module evaluates (objective, gradient, predict) but has no step()
    training_methods = ("sgd", "momentum", "adam")
    supports_bounds = True

    def output_names(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        if options.get("module"):
            return {options["module"]: "backends.js.module"}
        return {program.name: "project.name"}

    def emit(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        check_vocabulary(program, backend=self.name)
        module = options.get("module") or program.name
        names = safe_names(program.symbol_names(), RESERVED)
        printer = JavaScriptPrinter(names)
        header = header_text(program.source)
        context = dict(
            header=header, name=program.name, precision=program.precision,
            reduction=program.reduction, count=program.num_params,
            parameters=[dict(name=p.name, offset=p.offset, shape=list(p.shape))
                        for p in program.parameters],
            initial=[_js(v, program.precision) for p in program.parameters for v in p.init],
            inputs=[f.name for f in program.inputs], targets=[f.name for f in program.targets],
            constants=[(c.name, _js(c.default, program.precision)) for c in program.constants],
            hyper=[(h.name, _js(h.default, program.precision))
                   for h in program.optimizer.hyperparameters],
            predict=self._kernel(program, program.predict,
                                 [program.predict.output("prediction")], names, printer),
            loss=self._kernel(program, program.loss, [program.loss.output("loss")], names,
                              printer),
            gradient=self._kernel(program, program.loss_and_gradient,
                                  [program.loss_and_gradient.output("loss")]
                                  + [e for _, e in program.loss_and_gradient.gradient],
                                  names, printer),
            regularizer=None if program.regularizer is None else self._kernel(
                program, program.regularizer,
                [program.regularizer.output("value")]
                + [e for _, e in program.regularizer.gradient], names, printer),
            step=self._optimizer(program, names, printer) if self.trains(program) else None,
            method=program.training.method,
            lower=[_bound(v) for v in program.lower] if program.bounded else None,
            upper=[_bound(v) for v in program.upper] if program.bounded else None,
            json=json.dumps,
        )
        files = {f"{module}.mjs": render(PACKAGE, "module.mjs.j2", **context)}
        # JSON has no comments: the header is the value of a "//" key in the first lines
        files["package.json"] = json.dumps({"//": header, "name": module.lower(),
                                            "type": "module", "main": f"{module}.mjs",
                                            "private": True}, indent=2) + "\n"
        return files

    def _kernel(self, program: Program, kernel: Kernel, roots, names, printer) -> dict:
        """Loads of the leaves the kernel reads, its body, and the printed roots."""
        body = kernel.needed(roots)
        used = set()
        for expr in [a.expr for a in body] + list(roots):
            used |= expr.free_symbols
        loads = []
        for p in program.parameters:
            loads += [f"const {names[s.name]} = params[{p.offset + k}];"
                      for k, s in enumerate(p.symbols) if s in used]
        for f in program.fields:
            column = f"data[{json.dumps(f.name)}][i]"
            loads += [f"const {names[s.name]} = {column}{'' if not f.shape else f'[{k}]'};"
                      for k, s in enumerate(f.symbols) if s in used]
        loads += [f"const {names[c.symbol.name]} = constants[{json.dumps(c.name)}];"
                  for c in program.constants if c.symbol in used]
        lines = loads + [f"const {names[a.target.name]} = {printer.doprint(a.expr)};"
                         for a in body]
        index = [i for i, _ in kernel.gradient]
        return dict(lines=lines, roots=[printer.doprint(r) for r in roots], index=index)

    def _optimizer(self, program: Program, names, printer) -> dict:
        opt = program.optimizer
        state = {s for s, _ in opt.scalar_state} | set(opt.element_state) | {opt.param}
        declared = set(state)

        def assign(assignment) -> str:
            target = names[assignment.target.name]
            text = printer.doprint(assignment.expr)
            if assignment.target in declared:
                return f"{target} = {text};"
            declared.add(assignment.target)
            return f"let {target} = {text};"

        return dict(
            hyper=[(h.name, names[h.symbol.name]) for h in opt.hyperparameters],
            scalars=[(names[s.name], _js(v, "float64")) for s, v in opt.scalar_state],
            scalar_update=[assign(a) for a in opt.scalar_update],
            elements=[names[s.name] for s in opt.element_state],
            element_update=[assign(a) for a in opt.element_update],
            param=names[opt.param.name], grad=names[opt.grad.name])

    # -- verification ------------------------------------------------------------------
    def toolchains(self) -> list[Toolchain]:
        return [find_tool("node", hint="install Node.js 18 or newer (https://nodejs.org)")]

    def run(self, program: Program, options: Mapping[str, Any], cases: Sequence[Case],
            workdir: Path) -> list[Result]:
        files = self.emit(program, options)
        module = options.get("module") or program.name
        files["harness.mjs"] = render(
            PACKAGE, "harness.mjs.j2", module=f"{module}.mjs", count=program.num_params,
            fields=[(f.name, f.size, bool(f.shape)) for f in program.fields],
            inputs=[f.name for f in program.inputs],
            constants=[c.name for c in program.constants], steps=self.trains(program),
            json=json.dumps)
        write_files(workdir, files)
        out = run_tool(["node", "harness.mjs"], cwd=workdir,
                       stdin=encode_cases(program, cases))
        return decode_results(program, cases, out)


@hookimpl
def gradforge_backends():
    return [JavaScriptBackend()]

