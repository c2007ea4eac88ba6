"""The Metal backend plugin: MSL compute kernels, Swift host code, and a CPU runner.

``emit`` produces

* ``<name>.metal`` — kernels (MSL 2.4): the per-sample loss and gradient with a deterministic
  two-stage reduction, prediction, the regularizer, and the optimizer update;
* ``Sources/<Name>Metal/<Name>MetalTrainer.swift`` — the Swift host (``#if canImport(Metal)``)
  that creates the pipelines and buffers and runs ``valueAndGradient``/``step``/``train``;
* ``Sources/<Name>Metal/<Name>MetalSource.swift`` — the kernel source as a string, so the
  trainer can build its library at run time without a bundled ``.metallib``.

``run`` verifies the kernels on Linux: it compiles ``<name>.metal`` as C++20 against the shim
in ``shim/`` (``metal_stdlib`` → ``metal_shim.hpp``) together with a generated harness that
speaks :mod:`gradforge.protocol`, and runs every kernel over real threadgroups on the CPU.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import sympy as sp

from gradforge.plugin_api import (DAMPING, LINE_SEARCH, STOP_REASONS, check_training, Assignment, Backend, BackendError, Case, Option, Program,
                                  Result, Toolchain, ToolchainError, check_vocabulary,
                                  decode_results, encode_cases, find_tool, header_text,
                                  hookimpl, render, run_tool, safe_names,
                                  shortest_repr, write_files)

from .printer import RESERVED, MetalPrinter

PACKAGE = "gradforge_metal"
SHIM_DIR = Path(__file__).resolve().parent / "shim"

#: Buffer indices, the same in every kernel so the host binds each buffer once per encoder.
THETA, GRADIENT, OBJECTIVE, PARTIALS, CONSTANTS, BATCH, ORDER, PREDICTIONS, HYPER, \
    SCALAR_STATE = range(10)
FIRST_STATE = 10
MAX_BUFFER_INDEX = 30                  # Metal has 31 buffer argument slots per stage
THREADGROUP_MEMORY_LIMIT = 16384       # bytes: Apple3 GPUs (A9/A10, iOS 15) have 16 KiB
#: Levenberg–Marquardt: most parameters whose JᵀJ the GPU accumulates. Each thread keeps a
#: private row of 1 + P + P(P+1)/2 floats (Σr², Jᵀr, packed upper JᵀJ): 561 floats = 2.2 KiB at
#: P = 32, beyond which the private array no longer fits the per-thread register/stack budget
#: that keeps a full threadgroup resident; threadgroup memory stays capacity × chunk floats.
MAX_LM_PARAMETERS = 32

#: Threadgroup sizes and group limits the CPU runner cycles through, one per case.
DEFAULT_GRIDS = ((32, 2), (7, 3), (64, 1), (1, 4))

#: g++ flags for the verification build: the Metal file must compile warning-free as C++20.
CXX_FLAGS = ("-std=c++20", "-Wall", "-Wextra", "-Wdouble-promotion", "-Wconversion",
             "-Wshadow", "-Werror")

def _uses(program: Program, function: str) -> bool:
    """Whether any kernel calls ``function`` (its MSL helper is emitted only then)."""
    return any(type(node).__name__ == function
               for _, kernel in program.kernels() for expr in kernel.expressions()
               for node in sp.preorder_traversal(expr))


#: Names the generated code uses itself (locals, buffers, thread arguments).
GENERATED = {
    "theta", "gradient", "objective", "partials", "constants", "batch", "order",
    "predictions", "hyper", "scalar_state", "acc", "scratch", "sample", "stride",
    "thread_index", "group_index", "group_size", "group_count", "simd_lane", "simd_group",
    "simd_size", "simd_groups", "column", "row", "total", "scale", "width", "chunk", "lane_total",
    "value", "i", "j", "s", "k", "n", "count", "offset", "groups", "gf_log1p", "gf_expm1",
    "normal_sums", "r_value",
}


def upper_camel(name: str) -> str:
    """``my_model`` → ``MyModel``, ``huber`` → ``Huber`` (the Swift backend's rule, so the
    Metal target ``HuberMetal`` sits beside its library target ``Huber``)."""
    parts = [p for p in name.split("_") if p]
    return "".join(p[0].upper() + p[1:] for p in parts) or "Model"


def lower_camel(name: str) -> str:
    """``learning_rate`` → ``learningRate`` (Swift property names)."""
    camel = upper_camel(name)
    return camel[0].lower() + camel[1:]


# ------------------------------------------------------------------------ straight-line code

def live_assignments(assignments: Sequence[Assignment], needed_after: set[sp.Symbol]):
    """Dead-code elimination: the assignments that contribute to ``needed_after``, and the
    symbols the kept code reads before assigning them (its inputs)."""
    needed = set(needed_after)
    kept: list[Assignment] = []
    for a in reversed(assignments):
        if a.target in needed:
            kept.append(a)
            needed.discard(a.target)
            needed |= a.expr.free_symbols
    kept.reverse()
    return kept, needed


class CodeBlock:
    """Prints a straight-line block: loads of the symbols it reads, then its assignments.

    A symbol assigned more than once (optimizer state, ``param``) is a mutable ``float``;
    everything else is ``const float``.
    """

    def __init__(self, printer: MetalPrinter, names: Mapping[str, str]):
        self.printer = printer
        self.names = names

    def expr(self, e) -> str:
        return self.printer.doprint(e)

    def name(self, symbol: sp.Symbol) -> str:
        return self.names[symbol.name]

    def lines(self, assignments: Sequence[Assignment], declared: set[sp.Symbol],
              mutable: set[sp.Symbol] = frozenset()) -> list[str]:
        counts = Counter(a.target for a in assignments)
        out = []
        for a in assignments:
            text = self.expr(a.expr)
            if a.target in declared:
                out.append(f"{self.name(a.target)} = {text};")
            else:
                kind = "float" if counts[a.target] > 1 or a.target in mutable else "const float"
                out.append(f"{kind} {self.name(a.target)} = {text};")
                declared.add(a.target)
        return out

    def loads(self, sources: Mapping[sp.Symbol, str], wanted: set[sp.Symbol],
              assigned: Iterable[sp.Symbol] = (), declared: set[sp.Symbol] | None = None):
        assigned = set(assigned)
        out = []
        for symbol, source in sources.items():
            if symbol in wanted:
                kind = "float" if symbol in assigned else "const float"
                out.append(f"{kind} {self.name(symbol)} = {source};")
                if declared is not None:
                    declared.add(symbol)
        return out


# ------------------------------------------------------------------------------ the backend

def _lower_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class MetalBackend(Backend):
    name = "metal"
    description = "Metal compute kernels + Swift host (GPU training on Apple devices)"
    comment_prefix = "//"
    #: L-BFGS runs on the host with the GPU's value and gradient, Levenberg–Marquardt on the
    #: host with the GPU's Σr², Jᵀr and JᵀJ (both project on the host); the first-order step
    #: kernel projects θ onto the bounds after each update.
    training_methods = ("sgd", "momentum", "adam", "lbfgs", "levenberg_marquardt")
    supports_bounds = True
    #: The host module `<Name>Metal` must not take the name of a module the host imports or
    #: an app links beside it (the `.metal` file is read as a string, so it hides nothing).
    shadowed_names = {name: f"the system module {name}" for name in (
        "Swift", "Foundation", "Dispatch", "Metal", "MetalKit", "MetalPerformanceShaders",
        "Accelerate", "CoreML", "simd", "XCTest", "PackageDescription")}
    options = (
        Option("max_threadgroup_size", int, 256,
               "largest threadgroup the reduction kernel supports (sizes its threadgroup "
               "memory; the host never dispatches more)"),
        Option("reduction_width", int, 8,
               "gradient entries reduced per round of threadgroup barriers"),
        Option("simd_reduction", bool, False,
               "reduce with simd_sum (Apple7+/Mac2 GPUs) before threadgroup memory"),
        Option("fast_math", bool, False,
               "let the host compile the kernels with Metal's fast math (less accurate)"),
    )

    # -- emission --------------------------------------------------------------------
    def output_names(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        return {upper_camel(program.name) + "Metal": "project.name"}

    def emit(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        model = self.model(program, options)
        header = header_text(program.source)
        metal = render(PACKAGE, "kernels.metal.j2", header=header, m=model)
        trainer = render(PACKAGE, "Trainer.swift.j2", header=header, m=model)
        source = render(PACKAGE, "Source.swift.j2", header=header, m=model,
                        metal_text=metal)
        folder = f"Sources/{model['swift_module']}"
        return {
            f"{program.name}.metal": metal,
            f"{folder}/{model['swift_type']}.swift": trainer,
            f"{folder}/{model['swift_source_type']}.swift": source,
        }

    def model(self, program: Program, options: Mapping[str, Any]) -> dict[str, Any]:
        """Everything the templates (kernels, Swift host, C++ harness) need."""
        if program.precision != "float32":
            raise BackendError(
                f"the metal backend cannot emit {program.precision} code: Metal GPUs have no "
                f"double-precision type (set precision = \"float32\" in [project], or build "
                f"this project without [backends.metal])")
        check_vocabulary(program, backend=self.name)
        check_training(program, self)
        lm = program.training.method == "levenberg_marquardt"
        if lm and program.num_params > MAX_LM_PARAMETERS:
            raise BackendError(
                f"the metal backend accumulates JᵀJ on the GPU for at most {MAX_LM_PARAMETERS} "
                f"parameters but this model has {program.num_params}: use optimizer = "
                f"\"lbfgs\", or the numpy, c or swift backend for lm")
        opts = dict(options)
        capacity = int(opts.get("max_threadgroup_size", 256))
        width_opt = int(opts.get("reduction_width", 8))
        simd = bool(opts.get("simd_reduction", False))
        if not 1 <= capacity <= 1024:
            raise BackendError("backends.metal.max_threadgroup_size must be in 1..1024 "
                               "(Metal's limit on threads per threadgroup)")
        if width_opt < 1:
            raise BackendError("backends.metal.reduction_width must be at least 1")

        prefix = program.name
        fields = list(program.fields)
        opt = program.optimizer
        states = list(opt.element_state)
        field_buffers = {f.name: f"{f.name}_data" for f in fields}
        state_buffers = {s.name: f"state_{s.name}" for s in states}
        generated = GENERATED | set(field_buffers.values()) | set(state_buffers.values()) | {
            f"{prefix}_{suffix}" for suffix in (
                "constants", "batch", "hyperparameters", "gradient_index", "zero_index",
                "lower", "upper")} | {
            f"r_row{i}" for i in range(program.num_params)}
        names = safe_names(program.symbol_names(), RESERVED | generated)
        printer = MetalPrinter(names)
        block = CodeBlock(printer, names)
        P = program.num_params

        index = {"theta": THETA, "gradient": GRADIENT, "objective": OBJECTIVE,
                 "partials": PARTIALS, "constants": CONSTANTS, "batch": BATCH,
                 "order": ORDER, "predictions": PREDICTIONS, "hyper": HYPER,
                 "scalar_state": SCALAR_STATE}
        for k, s in enumerate(states):
            index[state_buffers[s.name]] = FIRST_STATE + k
        for k, f in enumerate(fields):
            index[field_buffers[f.name]] = FIRST_STATE + len(states) + k
        if lm:
            index["normal_sums"] = FIRST_STATE + len(states) + len(fields)
        if max(index.values()) > MAX_BUFFER_INDEX:
            raise BackendError(f"the metal backend needs {max(index.values()) + 1} buffer "
                               f"slots for this model but Metal has 31 (too many fields and "
                               f"optimizer states)")

        # leaf sources ------------------------------------------------------------------
        param_src = {s: f"theta[{p.offset + i}]" for p in program.parameters
                     for i, s in enumerate(p.symbols)}
        const_src = {c.symbol: f"constants.{names[c.symbol.name]}" for c in program.constants}
        field_src = {}
        for f in fields:
            buf = field_buffers[f.name]
            for i, s in enumerate(f.symbols):
                field_src[s] = (f"{buf}[sample]" if f.size == 1
                                else f"{buf}[sample * {f.size} + {i}]")

        # host-side argument tables (shared by the .metal template and the C++ harness) -
        def buf(name: str, decl: str, host: str) -> dict[str, str]:
            return {"decl": decl, "attr": f"buffer({index[name]})", "host": host,
                    "index": index[name], "name": name}

        def thread_arg(name: str, attr: str, host: str) -> dict[str, str]:
            return {"decl": f"uint {name}", "attr": attr, "host": host}

        has_constants = bool(program.constants)
        consts_arg = buf("constants", f"constant {prefix}_constants& constants", "constants")
        batch_arg = buf("batch", f"constant {prefix}_batch& batch", "batch")

        def field_args(used: set[sp.Symbol]) -> list[dict[str, str]]:
            return [buf(field_buffers[f.name], f"device const float* {field_buffers[f.name]}",
                        f"field_{k}.data()")
                    for k, f in enumerate(fields) if used & set(f.symbols)]

        def leaf_args(used: set[sp.Symbol], theta_decl="device const float* theta"):
            args = []
            if used & set(param_src):
                args.append(buf("theta", theta_decl, "theta.data()"))
            if has_constants and used & set(const_src):
                args.append(consts_arg)
            return args

        # per-sample loss and gradient -------------------------------------------------
        lg = program.loss_and_gradient
        outputs = [lg.output("loss")] + [g for _, g in lg.gradient]
        width = len(outputs)                    # partial row: loss, then gradient entries
        kept, needed = live_assignments(lg.body, set().union(*(e.free_symbols
                                                                for e in outputs)))
        self._check_leaves(needed, param_src, const_src, field_src, "loss_and_gradient")
        declared: set[sp.Symbol] = set()
        outer = block.loads(param_src, needed, declared=declared) + \
            block.loads(const_src, needed, declared=declared)
        inner = block.loads(field_src, needed, declared=declared)
        inner += block.lines(kept, declared)
        inner.append(f"acc[0] += {block.expr(outputs[0])};")
        inner += [f"acc[{k + 1}] += {block.expr(g)};  // d/d theta[{i}]"
                  for k, (i, g) in enumerate(lg.gradient)]
        chunk = min(width_opt, width)
        scratch = capacity * chunk
        if scratch * 4 > THREADGROUP_MEMORY_LIMIT:
            raise BackendError(
                f"the reduction needs {scratch * 4} bytes of threadgroup memory "
                f"(max_threadgroup_size {capacity} × reduction_width {chunk} × 4) but the "
                f"oldest iOS 15 GPUs (A9/A10) have {THREADGROUP_MEMORY_LIMIT}: lower "
                f"backends.metal.max_threadgroup_size or backends.metal.reduction_width")
        used_fields = needed & set(field_src)
        partial_args = leaf_args(needed) + ([batch_arg]) + (
            [buf("order", "device const uint* order", "order.data()")] if used_fields else []) \
            + field_args(needed) + [buf("partials", "device float* partials",
                                        "partials.data()")]
        partial_args += [thread_arg("thread_index", "thread_index_in_threadgroup", "t.tg_index"),
                         thread_arg("group_index", "threadgroup_position_in_grid", "t.group"),
                         thread_arg("group_size", "threads_per_threadgroup", "t.tg_size"),
                         thread_arg("group_count", "threadgroups_per_grid", "t.groups")]
        if simd:
            partial_args += [
                thread_arg("simd_lane", "thread_index_in_simdgroup", "t.simd_lane"),
                thread_arg("simd_group", "simdgroup_index_in_threadgroup", "t.simd_group"),
                thread_arg("simd_size", "threads_per_simdgroup", "t.simd_width"),
                thread_arg("simd_groups", "simdgroups_per_threadgroup", "t.simd_groups")]

        # finishing kernel: column sums in group order, 1/n, sparse entries -----------------
        listed = [i for i, _ in lg.gradient]
        dense = listed == list(range(P))
        unlisted = sorted(set(range(P)) - set(listed))
        finish_args = [buf("partials", "device const float* partials", "partials.data()"),
                       batch_arg,
                       buf("gradient", "device float* gradient", "gradient.data()"),
                       buf("objective", "device float* objective", "objective.data()"),
                       thread_arg("column", "thread_position_in_grid", "t.grid_pos")]

        normal = self._normal_equations(program, block, buf, batch_arg, leaf_args,
                                        field_args, param_src, const_src, field_src,
                                        partial_args, capacity, width_opt) if lm else None

        # regularizer (one thread) -----------------------------------------------------------
        regularizer = None
        if program.regularizer is not None:
            reg = program.regularizer
            reg_out = [reg.output("value")] + [g for _, g in reg.gradient]
            kept_r, needed_r = live_assignments(reg.body, set().union(*(e.free_symbols
                                                                        for e in reg_out)))
            self._check_leaves(needed_r, param_src, const_src, {}, "regularizer")
            declared = set()
            lines = block.loads(param_src, needed_r, declared=declared) + \
                block.loads(const_src, needed_r, declared=declared)
            lines += block.lines(kept_r, declared)
            lines.append(f"objective[0] += {block.expr(reg_out[0])};")
            lines += [f"gradient[{i}] += {block.expr(g)};" for i, g in reg.gradient]
            args = leaf_args(needed_r) + [
                buf("gradient", "device float* gradient", "gradient.data()"),
                buf("objective", "device float* objective", "objective.data()")]
            regularizer = {"args": args, "lines": lines}

        # prediction ----------------------------------------------------------------------
        pk = program.predict
        pred = pk.output("prediction")
        kept_p, needed_p = live_assignments(pk.body, set(pred.free_symbols))
        self._check_leaves(needed_p, param_src, const_src, field_src, "predict")
        declared = set()
        uses_sample = bool(needed_p & set(field_src))
        pred_lines = block.loads(param_src, needed_p, declared=declared) + \
            block.loads(const_src, needed_p, declared=declared)
        if uses_sample:
            pred_lines.append("const uint sample = i;")
        pred_lines += block.loads(field_src, needed_p, declared=declared)
        pred_lines += block.lines(kept_p, declared)
        pred_lines.append(f"predictions[i] = {block.expr(pred)};")
        predict_args = leaf_args(needed_p) + [batch_arg] + field_args(needed_p) + [
            buf("predictions", "device float* predictions", "predictions.data()"),
            thread_arg("i", "thread_position_in_grid", "t.grid_pos")]

        # optimizer -----------------------------------------------------------------------
        hyper_src = {h.symbol: f"hyper.{names[h.symbol.name]}" for h in opt.hyperparameters}
        scalar_syms = [s for s, _ in opt.scalar_state]
        scalar_src = {s: f"scalar_state[{k}]" for k, s in enumerate(scalar_syms)}
        elem_src = {opt.param: "theta[i]", opt.grad: "gradient[i]"}
        elem_src.update({s: f"{state_buffers[s.name]}[i]" for s in states})
        stored = [opt.param] + states
        seq = list(opt.scalar_update) + list(opt.element_update)
        # every assignment in the element update writes storage or feeds a store
        kept_o, needed_o = live_assignments(seq, set(stored))
        assigned_o = {a.target for a in kept_o}
        declared = set()
        step_lines = block.loads(hyper_src, needed_o, declared=declared)
        step_lines += block.loads(scalar_src, needed_o, assigned_o, declared=declared)
        # element loads come after the scalar update (the order does not matter: disjoint)
        scalar_kept = [a for a in kept_o if a in opt.scalar_update]
        elem_kept = [a for a in kept_o if a not in opt.scalar_update]
        step_lines += block.lines(scalar_kept, declared)
        step_lines += block.loads(elem_src, needed_o | {opt.param}, assigned_o,
                                  declared=declared)
        step_lines += block.lines(elem_kept, declared)
        bounds = self._step_bounds(program, printer) if opt.element_update else []
        stores = [self._projected_store(names[opt.param.name], bounds)] + [
            f"{state_buffers[s.name]}[i] = {names[s.name]};" for s in states
            if s in assigned_o]
        if not opt.element_update:
            # lbfgs: no per-step formula (the host runs L-BFGS), the step is the identity
            stores += ["(void)gradient;", "(void)hyper;"]
        unknown = needed_o - set(hyper_src) - set(scalar_src) - set(elem_src)
        if unknown:
            raise BackendError(f"optimizer reads unknown symbols {sorted(map(str, unknown))}")
        step_args = [buf("theta", "device float* theta", "theta.data()"),
                     buf("gradient", "device const float* gradient", "gradient.data()"),
                     buf("hyper", f"constant {prefix}_hyperparameters& hyper", "hyper")]
        if needed_o & set(scalar_src):
            step_args.append(buf("scalar_state", "device const float* scalar_state",
                                 "scalar_state.data()"))
        step_args += [buf(state_buffers[s.name], f"device float* {state_buffers[s.name]}",
                          f"state_{k}.data()") for k, s in enumerate(states)]
        step_args.append(thread_arg("i", "thread_position_in_grid", "t.grid_pos"))

        scalars = None
        if scalar_syms:
            kept_s, needed_s = live_assignments(opt.scalar_update, set(scalar_syms))
            assigned_s = {a.target for a in kept_s}
            declared = set()
            lines = block.loads(hyper_src, needed_s, declared=declared)
            lines += block.loads(scalar_src, needed_s | set(scalar_syms), assigned_s,
                                 declared=declared)
            lines += block.lines(kept_s, declared)
            lines += [f"scalar_state[{k}] = {names[s.name]};" for k, s in enumerate(scalar_syms)
                      if s in assigned_s]
            args = ([buf("hyper", f"constant {prefix}_hyperparameters& hyper", "hyper")]
                    if needed_s & set(hyper_src) else [])
            args.append(buf("scalar_state", "device float* scalar_state",
                            "scalar_state.data()"))
            scalars = {"args": args, "lines": lines}

        # descriptions ------------------------------------------------------------------
        hyper_swift = {h.name: lower_camel(h.name) for h in opt.hyperparameters}
        if len(set(hyper_swift.values())) != len(hyper_swift):
            hyper_swift = {h.name: h.name for h in opt.hyperparameters}
        name_table = names
        swift_module = upper_camel(program.name) + "Metal"
        params_doc = [{"name": p.name, "shape": list(p.shape), "offset": p.offset,
                       "size": p.size} for p in program.parameters]
        init = [shortest_repr(v, "float32") for p in program.parameters for v in p.init]
        return {
            "uses_sign": any(e.has(sp.sign) for _, k in program.kernels()
                             for e in k.expressions()),
            "name": program.name,
            "prefix": prefix,
            "source": program.source,
            "num_params": P,
            "width": width,
            "chunk": chunk,
            "capacity": capacity,
            "scratch": scratch,
            "simd": simd,
            "uses_log1p": _uses(program, "log1p"),
            "uses_expm1": _uses(program, "expm1"),
            "fast_math": bool(opts.get("fast_math", False)),
            "reduction": program.reduction,
            "dense": dense,
            "gradient_index": listed,
            "zero_index": unlisted,
            "parameters": params_doc,
            "init": init,
            "fields": [{"name": f.name, "role": f.role, "shape": list(f.shape),
                        "size": f.size, "buffer": field_buffers[f.name],
                        "index": index[field_buffers[f.name]],
                        "swift": swift_name(f.name)} for f in fields],
            "constants": [{"name": c.name, "member": name_table[c.symbol.name],
                           "default": shortest_repr(c.default, "float32"),
                           "swift": swift_name(c.name)} for c in program.constants],
            "hyper": [{"name": h.name, "member": name_table[h.symbol.name],
                       "default": shortest_repr(h.default, "float32"),
                       "swift": swift_name(hyper_swift[h.name])} for h in opt.hyperparameters],
            "optimizer": opt.kind,
            "states": [{"name": s.name, "buffer": state_buffers[s.name],
                        "index": index[state_buffers[s.name]]} for s in states],
            "scalar_state": [{"name": s.name, "init": shortest_repr(v, "float32")}
                             for s, v in opt.scalar_state],
            "training": program.training,
            "index": index,
            "partials": {"args": partial_args, "outer": outer, "inner": inner,
                         "uses_sample": bool(used_fields)},
            "finish": {"args": finish_args},
            "regularizer": regularizer,
            "predict": {"args": predict_args, "lines": pred_lines},
            "step": {"args": step_args, "lines": step_lines + stores, "bounds": bounds},
            "first_order": bool(opt.element_update),
            "scalars": scalars,
            "normal": normal,
            "swift_module": swift_module,
            "swift_type": upper_camel(program.name) + "MetalTrainer",
            "swift_source_type": upper_camel(program.name) + "MetalSource",
            "swift_error": upper_camel(program.name) + "MetalError",
            "op_count": lg.op_count(),
            "lm_max_parameters": MAX_LM_PARAMETERS,
            "train": self._train_settings(program),
        }

    @staticmethod
    def _step_bounds(program: Program, printer: MetalPrinter) -> list[dict[str, Any]]:
        """The bound arrays the first-order step kernel projects onto: one per side that bounds
        some element (``lower``, ``upper``), with ±INFINITY where an element is unbounded."""
        out = []
        for side, values, free in (("lower", program.lower, float("-inf")),
                                   ("upper", program.upper, float("inf"))):
            if any(v != free for v in values):
                out.append({"side": side, "name": f"{program.name}_{side}",
                            "entries": [printer.doprint(sp.sympify(v)) for v in values]})
        return out

    @staticmethod
    def _projected_store(value: str, bounds: Sequence[Mapping[str, Any]]) -> str:
        """``theta[i] = value`` projected onto the bound arrays with comparisons (as the C
        backend's clip: a NaN stays NaN, so the host still sees a non-finite step)."""
        projected = value
        for b in reversed(bounds):
            compare = "<" if b["side"] == "lower" else ">"
            limit = f"{b['name']}[i]"
            otherwise = projected if projected == value else f"({projected})"
            projected = f"{value} {compare} {limit} ? {limit} : {otherwise}"
        return f"theta[i] = {projected};"

    @staticmethod
    def _train_settings(program: Program) -> dict[str, Any]:
        """Stopping rules, bounds and (for lbfgs) the shared Swift L-BFGS struct's text."""
        t = program.training

        def bound(v: float) -> str:
            if v == float("inf"):
                return "Float.infinity"
            if v == float("-inf"):
                return "-Float.infinity"
            return shortest_repr(v, "float32")
        lbfgs_type = upper_camel(program.name) + "MetalLBFGS"
        lm_type = upper_camel(program.name) + "MetalLevenbergMarquardt"
        return {
            "method": t.method,
            "max_iterations": t.max_iterations,
            "gradient_tolerance": shortest_repr(t.gradient_tolerance, "float32"),
            "objective_tolerance": shortest_repr(t.objective_tolerance, "float32"),
            "history": t.history,
            "lower": ", ".join(bound(v) for v in program.lower),
            "upper": ", ".join(bound(v) for v in program.upper),
            "reasons": [(_lower_camel(r), r) for r in STOP_REASONS],
            "lbfgs_type": lbfgs_type,
            "lm_type": lm_type,
            "lm": render(PACKAGE, "LevenbergMarquardt.swift.j2", T="Float", lm=lm_type,
                         tau=shortest_repr(DAMPING.tau, "float32"),
                         max_rejections=DAMPING.max_rejections)
            if t.method == "levenberg_marquardt" else "",
            # the Swift package's L-BFGS, printed from the same template (one algorithm)
            "lbfgs": render("gradforge_swift", "LBFGS.swift.j2", T="Float", lbfgs=lbfgs_type,
                            ls=LINE_SEARCH, eps="1.1920929e-07")
            if t.method == "lbfgs" else "",
        }

    def _normal_equations(self, program, block, buf, batch_arg, leaf_args, field_args,
                          param_src, const_src, field_src, partial_args, capacity,
                          width_opt) -> dict[str, Any]:
        """Levenberg–Marquardt's GPU pass: per sample, every residual r and its Jacobian row
        add r² into column 0, r·row into columns 1..P (Jᵀr) and the row's outer product into
        the packed upper triangle of JᵀJ (row-major: (a, b ≥ a) at 1 + P + a·P − a(a−1)/2 +
        b − a). The parameter-only residuals of the regularizer join on one thread after the
        finishing kernel, after the 1/n of a mean (as in every backend)."""
        P = program.num_params
        width = 1 + P + P * (P + 1) // 2

        def packed(a: int, b: int) -> int:
            return 1 + P + a * P - a * (a - 1) // 2 + (b - a)

        def residual_parts(kernel):
            """(live body, symbols it reads, [r, Jacobian row entries…])."""
            outs = [kernel.output("residual")] + [g for _, g in kernel.gradient]
            kept, needed = live_assignments(kernel.body, set().union(*(e.free_symbols
                                                                       for e in outs)))
            return kept, needed, outs

        def residual_lines(kernel, target: str, declared_outer: set, with_fields: bool):
            kept, needed, outs = residual_parts(kernel)
            sources = (param_src, const_src, field_src) if with_fields else (param_src,
                                                                             const_src)
            self._check_leaves(needed, *sources, "residual")
            declared = set(declared_outer)
            lines = block.loads(field_src, needed, declared=declared) if with_fields else []
            lines += block.lines(kept, declared)
            lines.append(f"const float r_value = {block.expr(outs[0])};")
            entries = [i for i, _ in kernel.gradient]
            lines += [f"const float r_row{i} = {block.expr(g)};" for i, g in kernel.gradient]
            lines.append(f"{target}[0] += r_value * r_value;")
            lines += [f"{target}[{1 + i}] += r_row{i} * r_value;" for i in entries]
            lines += [f"{target}[{packed(a, b)}] += r_row{a} * r_row{b};"
                      for pos, a in enumerate(entries) for b in entries[pos:]]
            return ["{"] + ["    " + line for line in lines] + ["}"], needed

        def leaf_loads(kernels):
            """What ``kernels`` read, the names declared, and the parameter/constant loads."""
            needed: set = set()
            for kernel in kernels:
                needed |= residual_parts(kernel)[1]
            declared: set = set()
            loads = block.loads(param_src, needed, declared=declared) + \
                block.loads(const_src, needed, declared=declared)
            return needed, declared, loads

        needed_all, declared, outer = leaf_loads(program.residuals)
        inner = []
        for kernel in program.residuals:
            inner += residual_lines(kernel, "acc", declared, True)[0]
        used_fields = needed_all & set(field_src)
        args = leaf_args(needed_all) + [batch_arg] + (
            [buf("order", "device const uint* order", "order.data()")] if used_fields else []) \
            + field_args(needed_all) + [buf("partials", "device float* partials",
                                            "normal_partials.data()")]
        args += [a for a in partial_args if a["decl"].startswith("uint ")]
        finish_args = [buf("partials", "device const float* partials",
                           "normal_partials.data()"),
                       batch_arg,
                       buf("normal_sums", "device float* normal_sums", "normal_sums.data()"),
                       {"decl": "uint column", "attr": "thread_position_in_grid",
                        "host": "t.grid_pos"}]
        regularizer = None
        if program.regularizer_residuals:
            needed_r, declared_r, lines = leaf_loads(program.regularizer_residuals)
            for kernel in program.regularizer_residuals:
                lines += residual_lines(kernel, "normal_sums", declared_r, False)[0]
            regularizer = {"args": leaf_args(needed_r) + [
                buf("normal_sums", "device float* normal_sums", "normal_sums.data()")],
                "lines": lines}
        return {"width": width, "outer": outer,
                "inner": inner, "uses_sample": bool(used_fields), "args": args,
                "finish_args": finish_args, "regularizer": regularizer,
                "residual_count": len(program.residuals)}

    @staticmethod
    def _check_leaves(needed, *sources_and_label):
        *sources, label = sources_and_label
        known = set().union(*(set(s) for s in sources))
        unknown = needed - known
        if unknown:
            raise BackendError(f"the {label} kernel reads symbols that are neither parameters, "
                               f"fields nor constants: {sorted(map(str, unknown))}")

    # -- verification ------------------------------------------------------------------
    def toolchains(self) -> list[Toolchain]:
        if not sys.platform.startswith("linux"):
            return [Toolchain("metal-shim", False, "the CPU shim that runs Metal kernels needs "
                              "Linux (POSIX ucontext, ELF sections); on macOS see "
                              ".github/workflows/metal-macos.yml")]
        return [find_tool(os.environ.get("CXX", "g++"),
                          hint="install g++ (C++20) to run Metal kernels through the CPU shim")]

    def build_runner(self, program: Program, options: Mapping[str, Any], workdir: Path,
                     extra_flags: Sequence[str] = ()) -> Path:
        """Emit the kernels and the protocol harness into ``workdir`` and compile them."""
        files = self.emit(program, options)
        model = self.model(program, options)
        harness = render(PACKAGE, "harness.cpp.j2", m=model,
                         metal_file=f"{program.name}.metal",
                         header=header_text(program.source))
        workdir.mkdir(parents=True, exist_ok=True)
        write_files(workdir, {f"{program.name}.metal": files[f"{program.name}.metal"],
                              "harness.cpp": harness})
        compiler = shutil.which(os.environ.get("CXX", "g++"))
        if compiler is None:
            raise ToolchainError("g++ not found: the Metal backend runs its kernels through a "
                                 "C++20 shim on the CPU")
        exe = workdir / "metal_runner"
        run_tool([compiler, *CXX_FLAGS, "-O1", *extra_flags, f"-I{SHIM_DIR}", "harness.cpp",
                  "-o", str(exe)], cwd=workdir)
        return exe

    def run(self, program: Program, options: Mapping[str, Any], cases: Sequence[Case],
            workdir: Path, grids: Sequence[tuple[int, int]] = DEFAULT_GRIDS,
            env: Mapping[str, str] | None = None) -> list[Result]:
        exe = self.build_runner(program, options, workdir)
        return self.run_built(exe, program, cases, grids, env)

    @staticmethod
    def run_built(exe: Path, program: Program, cases: Sequence[Case],
                  grids: Sequence[tuple[int, int]] = DEFAULT_GRIDS,
                  env: Mapping[str, str] | None = None) -> list[Result]:
        """Run a built harness on ``cases``; case k uses ``grids[k % len(grids)]``
        (threads per threadgroup, most threadgroups of the reduction kernel)."""
        args = [str(exe)] + [f"{t}:{g}" for t, g in grids]
        stdin = encode_cases(program, cases)
        if not env:
            return decode_results(program, cases, run_tool(args, stdin=stdin))
        try:
            proc = subprocess.run(args, input=stdin, capture_output=True, text=True,
                                  timeout=600, env={**os.environ, **env})
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"{exe} timed out after 600s")
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip()[-4000:]
            raise ToolchainError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
        return decode_results(program, cases, proc.stdout)


SWIFT_KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import",
    "init", "inout", "internal", "let", "open", "operator", "private", "precedencegroup",
    "protocol", "public", "rethrows", "static", "struct", "subscript", "typealias", "var",
    "break", "case", "catch", "continue", "default", "defer", "do", "else", "fallthrough",
    "for", "guard", "if", "in", "repeat", "return", "throw", "switch", "where", "while", "Any",
    "as", "await", "false", "is", "nil", "self", "Self", "super", "throws", "true", "try",
    "_", "async", "some", "any",
}


def swift_name(name: str) -> str:
    """An identifier usable as a Swift property/argument label (backticks for keywords)."""
    return f"`{name}`" if name in SWIFT_KEYWORDS else name


@hookimpl
def gradforge_backends():
    return [MetalBackend()]
