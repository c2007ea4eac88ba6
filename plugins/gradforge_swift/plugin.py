"""The Swift backend plugin: a SwiftPM package (library, tests, CSV trainer) and its runner.

``emit`` lays out a package an Xcode project or another package adds by path::

    Package.swift                         tools 5.9, iOS 15 / macOS 12
    Sources/<Module>/<Module>.swift       parameters, data, constants, objective, gradient …
    Sources/<Module>/<Module>Kernels.swift  the generated straight-line per-sample code
    Sources/<Module>/<Module>Training.swift optimizers (SGD, momentum, Adam), PRNG, train(…)
    Sources/<Module>/<Module>ParamsFile.swift params.json: read/write (JSON reader, no Foundation)
    Sources/<Module>Train/main.swift      `<name>-train data.csv`: trains from a CSV file
    Tests/<Module>Tests/<Module>Tests.swift XCTest: flat round trip, finite differences, seeds

The library uses the Swift standard library only (math comes from Darwin/Glibc/Musl, never
Foundation), so it builds the same on Apple platforms and Linux. ``run`` builds the package
in release mode together with a verification harness target that exists only in the work
folder copy (never in the emitted files), then feeds it gradforge's text protocol.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import sympy as sp

from gradforge.plugin_api import (DAMPING, LINE_SEARCH, STOP_REASONS, check_training, Backend, BackendError, Case, Kernel, Namer,
                                  Optimizer, Option, Program,
                                  ProjectError, Result, Toolchain, ToolchainError,
                                  TrainingSpec, build_optimizer, check_vocabulary,
                                  decode_results, encode_cases, find_tool, header_text,
                                  hookimpl, render, run_tool, safe_names, write_files)

from .printer import SwiftPrinter

PACKAGE = "gradforge_swift"

#: Words Swift does not accept as a variable or property name (checked with swiftc 6.3).
SWIFT_KEYWORDS = frozenset("""
    associatedtype class deinit enum extension fileprivate func import init inout internal let
    operator precedencegroup private protocol public rethrows static struct subscript typealias
    var break case catch continue default defer do else fallthrough for guard if in repeat
    return switch where while Any as await false is nil self Self super throw throws true try
    Protocol Type _
""".split())

#: Global names the generated code calls or names; a user name equal to one would shadow it.
SWIFT_GLOBALS = frozenset("""
    abs exp log sin cos tan tanh sqrt pow min max print precondition preconditionFailure
    fatalError stride zip Double Float Int UInt64 Array Bool String Character Substring Swift
    Glibc Darwin Musl Foundation XCTest XCTestCase PackageDescription CommandLine readLine
    fopen fclose getline fputs stderr exit free
""".split())

#: Members of the generated types; a parameter, field or constant may not take these names.
MEMBER_NAMES = frozenset("""
    flat scalarCount count description encode decode CodingKeys hash hashValue gradient value
    step reset parameters data constants optimizer epochs batchSize seed learningRate
    predictions objective predict train modelHash paramsJSON write inputs shapeProblem
    lowerBounds upperBounds maxIterations gradientTolerance objectiveTolerance history
    iterations evaluations passes gradientNorm reason converged
""".split())

#: Module names that would shadow a system module or a standard type (refused by the core).
SYSTEM_MODULES = frozenset("""
    Swift Foundation Glibc Darwin Musl XCTest Testing PackageDescription Dispatch CoreML Metal
    MetalKit Accelerate UIKit AppKit SwiftUI Combine Observation os simd CoreFoundation _Concurrency
    Double Float Int UInt64 Bool String Array Character Never Optional
""".split())

OPTIMIZER_TYPE = {"sgd": "SGD", "momentum": "Momentum", "adam": "Adam"}
OPTIMIZER_DOC = {
    "sgd": ["Stochastic gradient descent: θ ← θ − η g."],
    "momentum": ["Gradient descent with momentum: v ← μ v + g;  θ ← θ − η v."],
    "adam": ["Adam: m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;",
             "θ ← θ − η m̂ / (√v̂ + ε) with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)."],
}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def upper_camel(name: str) -> str:
    """``my_model`` → ``MyModel``; ``mlp`` → ``Mlp`` (characters after the first kept)."""
    parts = [p for p in name.split("_") if p]
    return "".join(p[0].upper() + p[1:] for p in parts) or "Model"


def lower_camel(name: str) -> str:
    """``learning_rate`` → ``learningRate``."""
    camel = upper_camel(name)
    return camel[0].lower() + camel[1:]


def module_name(program: Program, options: Mapping[str, Any]) -> str:
    """The library module's name: the ``module`` option or the project name in UpperCamelCase.
    A name that would shadow a system module is refused by the core
    (:attr:`SwiftBackend.shadowed_names`)."""
    given = options.get("module") or ""
    if given:
        if not IDENTIFIER.match(given) or given in SWIFT_KEYWORDS:
            raise ProjectError(f"{given!r} is not usable as a Swift module name",
                               key="backends.swift.module",
                               hint="use an UpperCamelCase identifier such as MyModel")
        return given
    return upper_camel(program.name)


def splitmix64_order(seed: int, count: int) -> list[int]:
    """gradforge's epoch order (SplitMix64 + Fisher-Yates), for the generated self-test."""
    mask = (1 << 64) - 1
    state = seed & mask
    order = list(range(count))
    for i in range(count - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        j = (z ^ (z >> 31)) % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def _chunks(items: list[str], size: int) -> list[str]:
    return [", ".join(items[i:i + size]) for i in range(0, len(items), size)]


#: Domains tried for the generated XCTests' synthetic data after the project's field ranges:
#: symmetric, positive (log, sqrt, division by a field), large positive, negative.
SYNTHETIC_RANGES = ((-1.0, 1.0), (0.1, 1.0), (0.5, 2.0), (1.0, 3.0), (-1.0, -0.1))

#: Samples are summed in blocks of this many, block partials in block order (docs/semantics.md).
BLOCK_SIZE = 1024

#: Small loss-and-gradient kernels get their sample loop unrolled by two (see kernels()).
UNROLL_MAX_ACCUMULATORS = 16


class SwiftBackend(Backend):
    training_methods = ("sgd", "momentum", "adam", "lbfgs", "levenberg_marquardt")
    supports_bounds = True
    name = "swift"
    description = "SwiftPM package: library (no Foundation), XCTest tests, CSV trainer"
    comment_prefix = "//"
    shadowed_names = {name: f"the system module {name}" for name in sorted(SYSTEM_MODULES)}
    options = (
        Option("module", str, "", "Swift module (library target) name; default: the project "
                                  "name in UpperCamelCase"),
        Option("metal", bool, False, "declare the Apple-only `<Name>Metal` target and library "
                                     "that [backends.metal] writes into this package when its "
                                     "`out` is the same folder"),
        Option("threads", int, 1, "threads for the objective and gradient sums "
                                  "(DispatchQueue.concurrentPerform): 1 = none, 0 = one per "
                                  "online processor; results are bit-identical for every count"),
    )

    def output_names(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        key = "backends.swift.module" if options.get("module") else "project.name"
        return {module_name(program, options): key}

    def default_out(self, program: Program, options: Mapping[str, Any]) -> str:
        """``build/swift/<Module>``: SwiftPM names a path dependency after its folder, so each
        model's package needs a folder of its own for two of them to sit in one app."""
        return f"build/swift/{module_name(program, options)}"

    # ---------------------------------------------------------------------------- emit
    def emit(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        return self._files(program, options, verify=False)

    def _files(self, program: Program, options: Mapping[str, Any], verify: bool) -> dict[str, str]:
        check_vocabulary(program, backend=self.name)
        check_training(program, self)
        threads = int(options.get("threads", 1))
        if not 0 <= threads <= 256:
            raise BackendError(f"backends.swift.threads must be between 0 and 256 (got "
                               f"{threads}); 0 means one thread per online processor")
        ctx = _Context(program, module_name(program, options), threads)
        files = {
            "Package.swift": ctx.render("Package.swift.j2", verify=verify,
                                        metal=upper_camel(program.name) + "Metal"
                                        if options.get("metal") else ""),
            f"Sources/{ctx.module}/{ctx.module}.swift": ctx.render("Library.swift.j2"),
            f"Sources/{ctx.module}/{ctx.module}Kernels.swift": ctx.render("Kernels.swift.j2"),
            f"Sources/{ctx.module}/{ctx.module}Training.swift": ctx.render("Training.swift.j2"),
            f"Sources/{ctx.module}/{ctx.module}ParamsFile.swift": ctx.render("ParamsFile.swift.j2"),
            f"Sources/{ctx.module}Train/main.swift": ctx.render("TrainMain.swift.j2"),
            f"Tests/{ctx.module}Tests/{ctx.module}Tests.swift": ctx.render("Tests.swift.j2"),
        }
        if verify:
            files[f"Sources/{ctx.module}Verify/main.swift"] = ctx.render("VerifyMain.swift.j2")
        return files

    # ----------------------------------------------------------------------------- run
    def toolchains(self) -> list[Toolchain]:
        return [find_tool("swift", ("--version",),
                          hint="install a Swift toolchain (https://swift.org/install) and put "
                               "`swift` on PATH")]

    def run(self, program: Program, options: Mapping[str, Any], cases: Sequence[Case],
            workdir: Path) -> list[Result]:
        tool = self.toolchains()[0]
        if not tool.available:
            raise ToolchainError(f"swift not found: {tool.detail}")
        binary = self.build(program, options, workdir)
        output = run_tool([str(binary)], stdin=encode_cases(program, cases), timeout=600)
        return decode_results(program, cases, output)

    def build(self, program: Program, options: Mapping[str, Any], workdir: Path,
              product: str = "Verify") -> Path:
        """Emit the package (with the harness target) into ``workdir``, build one product in
        release mode and return the path of its executable."""
        files = self._files(program, options, verify=True)
        module = module_name(program, options)
        workdir = Path(workdir).resolve()
        package = workdir / "package"
        for stale in ("Sources", "Tests", "Package.swift"):
            target = package / stale
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        write_files(package, files)
        scratch = workdir / "swift-build"
        run_tool(swift_build_command(package, scratch, workdir / "swift-cache")
                 + ["--product", module + product], timeout=1800)
        binary = scratch / "release" / (module + product)
        if not binary.exists():
            raise ToolchainError(f"swift build did not produce {binary}")
        return binary


def swift_build_command(package: Path, scratch: Path, cache: Path,
                        configuration: str = "release") -> list[str]:
    """``swift build`` with every SwiftPM folder (scratch, cache, config) under our control;
    the generated code must compile without a single warning."""
    return ["swift", "build", *swiftpm_options(package, scratch, cache),
            "-c", configuration, "-Xswiftc", "-warnings-as-errors"]


def swiftpm_options(package: Path, scratch: Path, cache: Path) -> list[str]:
    """SwiftPM's global options keeping its scratch, cache and configuration under our folders."""
    return ["--package-path", str(package), "--scratch-path", str(scratch),
            "--cache-path", str(cache), "--config-path", str(cache / "config"),
            "--security-path", str(cache / "security"), "--manifest-cache", "local",
            "--disable-dependency-cache"]


class _Context:
    """Everything the templates need, computed once per program."""

    def __init__(self, program: Program, module: str, threads: int = 1):
        self.program = program
        self.threads = threads
        self.module = module
        self.scalar = "Double" if program.precision == "float64" else "Float"
        m = module
        self.types = {"parameters": f"{m}Parameters", "data": f"{m}Data",
                      "constants": f"{m}Constants", "model": f"{m}Model", "inputs": f"{m}Inputs",
                      "optimizer": f"{m}Optimizer", "rng": f"{m}SplitMix64",
                      "scalar": f"{m}Scalar", "params_error": f"{m}ParamsFileError",
                      "json": f"{m}JSONValue", "report": f"{m}TrainingReport",
                      "options": f"{m}TrainingOptions", "reason": f"{m}StopReason",
                      "decision": f"{m}TrainingDecision"}
        user = {p.name for p in program.parameters} | {f.name for f in program.fields} \
            | {c.name for c in program.constants}
        reserved = (SWIFT_KEYWORDS | SWIFT_GLOBALS | MEMBER_NAMES | {module}
                    | set(self.types.values()) | {f"{m}{t}" for t in OPTIMIZER_TYPE.values()})
        self.names = safe_names(program.symbol_names() | user, reserved)
        self.printer = SwiftPrinter({"precision": program.precision, "names": self.names,
                                     "scalar": self.scalar})
        self.leaf = program.leaf_kind()

    def lit(self, value: float) -> str:
        return self.printer.literal(float(value))

    def render(self, template: str, **extra) -> str:
        p = self.program
        return render(PACKAGE, template, header=header_text(p.source), name=p.name,
                      module=self.module, T=self.scalar, types=self.types,
                      precision=p.precision, reduction=p.reduction,
                      num_params=p.num_params, parameters=self.parameters(),
                      fields=self.fields(), constants=self.constants(),
                      has_regularizer=p.regularizer is not None,
                      kernels=self.kernels(), optimizers=self.optimizers(),
                      threads=self.threads, block_size=BLOCK_SIZE,
                      default_optimizer=self.default_optimizer(),
                      training={"epochs": p.training.epochs,
                                "batch_size": p.training.batch_size,
                                "seed": p.training.seed},
                      train=self.train_settings(), lbfgs=self.lbfgs_type(),
                      project_step=p.bounded,
                      ls=LINE_SEARCH, eps="1.1920929e-07" if self.scalar == "Float"
                      else "2.220446049250313e-16",
                      field_params=", ".join(f["arg"] for f in self.fields()),
                      input_fields=[f for f in self.fields() if f["role"] == "input"],
                      input_field_params=", ".join(f["arg"] for f in self.fields()
                                                   if f["role"] == "input"),
                      input_field_types=", ".join(f"UnsafeBufferPointer<{self.scalar}>"
                                                  for f in p.fields if f.role == "input"),
                      model_hash=p.model_hash,
                      reference_order=", ".join(map(str, splitmix64_order(7, 10))),
                      synthetic_ranges=self.synthetic_ranges(),
                      field_types=", ".join(f"UnsafeBufferPointer<{self.scalar}>"
                                            for _ in p.fields),
                      **extra)

    # -- declarations -------------------------------------------------------------------
    def parameters(self) -> list[dict]:
        out = []
        for p in self.program.parameters:
            ident = self.names[p.name]
            shape = "×".join(map(str, p.shape))
            values = [self.lit(v) for v in p.init]
            if not p.shape:
                init = [values[0]]
            elif len(set(values)) == 1:
                init = [f"[{self.scalar}](repeating: {values[0]}, count: {p.size})"]
            else:
                lines = _chunks(values, 8)
                init = ["["] + [f"    {line}," for line in lines] + ["]"]
            out.append({
                "name": p.name, "ident": ident, "shape": list(p.shape), "shape_text": shape,
                "size": p.size, "offset": p.offset, "end": p.offset + p.size,
                "array": bool(p.shape), "init": init,
                "type": f"[{self.scalar}]" if p.shape else self.scalar,
            })
        return out

    def fields(self) -> list[dict]:
        out = []
        for i, f in enumerate(self.program.fields):
            out.append({"name": f.name, "ident": self.names[f.name], "role": f.role,
                        "shape": list(f.shape), "shape_text": "×".join(map(str, f.shape)),
                        "size": f.size, "arg": f"_f{i}", "index": i,
                        "columns": [f.name] if not f.shape else
                        [f"{f.name}[{k}]" for k in range(f.size)]})
        return out

    def synthetic_ranges(self) -> list[list[tuple[str, str]]]:
        """Candidate (low, high) per field for the XCTests' data: the project's declared
        ranges first (fields without one use [-1, 1]), then :data:`SYNTHETIC_RANGES`."""
        fields = self.program.fields
        declared = [f.range for f in fields]
        candidates = []
        if any(declared):
            candidates.append([tuple(r) if r else (-1.0, 1.0) for r in declared])
        candidates += [[r] * len(fields) for r in SYNTHETIC_RANGES]
        return [[(self.lit(lo), self.lit(hi)) for lo, hi in c] for c in candidates]

    def constants(self) -> list[dict]:
        return [{"name": c.name, "ident": self.names[c.name], "default": self.lit(c.default)}
                for c in self.program.constants]

    # -- kernels ----------------------------------------------------------------------
    def _loads(self, used: set, fields: bool) -> tuple[list[str], list[str]]:
        """(parameter/constant loads before the loop, field loads inside it)."""
        T = self.scalar
        before, inside = [], []
        for p in self.program.parameters:
            for i, s in enumerate(p.symbols):
                if s in used:
                    before.append(f"let {self.names[s.name]}: {T} = _theta[{p.offset + i}]")
        for c in self.program.constants:
            if c.symbol in used:
                before.append(f"let {self.names[c.symbol.name]}: {T} = _c.{self.names[c.name]}")
        if fields:
            for k, f in enumerate(self.program.fields):
                for i, s in enumerate(f.symbols):
                    if s in used:
                        index = "_i" if f.size == 1 else f"{f.size} &* _i &+ {i}"
                        inside.append(f"let {self.names[s.name]}: {T} = _f{k}[{index}]")
        unknown = sorted(s.name for s in used if s not in self.leaf)
        if unknown:
            raise AssertionError(f"kernel reads undefined symbols {unknown}")
        return before, inside

    def _sample_kernel(self, kernel: Kernel, outputs: list[tuple[str, sp.Expr]]) -> dict:
        """Straight-line code over samples: loads, invariant code hoisted before the loop,
        per-sample statements, and ``outputs`` as (statement head, expression)."""
        printer = self.printer
        printer.reset_temporaries()
        T = self.scalar
        body = kernel.needed([e for _, e in outputs])
        field_symbols = {s for f in self.program.fields for s in f.symbols}
        per_sample: set = set(field_symbols)
        used: set = set()
        before_code, loop_code = [], []
        for a in body:
            used |= a.expr.free_symbols
            varying = bool(a.expr.free_symbols & per_sample)
            lines = printer.statement(f"let {self.names[a.target.name]}: {T} = ", a.expr)
            if varying:
                per_sample.add(a.target)
                loop_code += lines
            else:
                before_code += lines
        out_lines = []
        for head, expr in outputs:
            used |= expr.free_symbols
            out_lines += printer.statement(head, expr)
        locals_ = {a.target for a in body}
        loads_before, loads_inside = self._loads(used - locals_, fields=True)
        return {"before": loads_before + before_code, "loop": loads_inside + loop_code + out_lines}

    def kernels(self) -> dict:
        if hasattr(self, "_kernels"):
            return self._kernels
        p = self.program
        predict = self._sample_kernel(p.predict, [("_out[_i] = ", p.predict.output("prediction"))])
        loss = self._sample_kernel(p.loss, [("_block += ", p.loss.output("loss"))])
        lg = p.loss_and_gradient
        accumulators = [(i, f"_g{i}") for i, _ in lg.gradient]
        loss_grad = self._sample_kernel(
            lg, [("_block += ", lg.output("loss"))]
            + [(f"_g{i} += ", g) for i, g in lg.gradient])
        loss_grad["accumulators"] = accumulators
        if len(accumulators) <= UNROLL_MAX_ACCUMULATORS:
            # a second copy of the body for sample _j = _i + 1 with its own accumulators:
            # two independent chains of additions instead of one (the loop is latency-bound
            # on the accumulators for small models)
            heads = ["_block"] + [acc for _, acc in accumulators]
            second = []
            for line in loss_grad["loop"]:
                line = re.sub(r"\b_i\b", "_j", line)
                for head in heads:
                    if line.startswith(f"{head} += "):
                        line = f"{head}_b += " + line[len(head) + 4:]
                second.append(line)
            loss_grad["loop_b"] = second
        else:
            loss_grad["loop_b"] = []
        regularizer = None
        if p.regularizer is not None:
            reg = p.regularizer
            value = self._param_block(reg, [("return ", reg.output("value"))])
            gradient = self._param_block(
                reg, [(f"_grad[{i}] += ", g) for i, g in reg.gradient]
                + [("return ", reg.output("value"))])
            regularizer = {"value": value, "gradient": gradient}
        self._kernels = {"predict": predict, "loss": loss, "loss_and_gradient": loss_grad,
                         "regularizer": regularizer, "residuals": self._residuals(),
                         "op_count": sum(k.op_count() for _, k in p.kernels())}
        return self._kernels

    def _residuals(self) -> list[dict]:
        """Levenberg–Marquardt: per residual kernel, code that adds r², r·(Jacobian row) into
        Jᵀr and the row's outer product into the upper triangle of JᵀJ."""
        P = self.program.num_params
        T = self.scalar
        out = []
        groups = [("sample", k) for k in self.program.residuals] + \
            [("regularizer", k) for k in self.program.regularizer_residuals]
        for number, (group, kernel) in enumerate(groups):
            outputs = [(f"let _r: {T} = ", kernel.output("residual"))]
            outputs += [(f"let _j{i}: {T} = ", g) for i, g in kernel.gradient]
            entries = [i for i, _ in kernel.gradient]
            accumulate = ["_total += _r * _r"]
            accumulate += [f"_jtr[{i}] += _j{i} * _r" for i in entries]
            accumulate += [f"_jtj[{a * P + b}] += _j{a} * _j{b}"
                           for pos, a in enumerate(entries) for b in entries[pos:]]
            if group == "sample":
                parts = self._sample_kernel(kernel, outputs)
                before, loop = parts["before"], parts["loop"] + accumulate
            else:
                before, loop = self._param_block(kernel, outputs) + accumulate, []
            out.append({"name": f"residual{number}", "group": group, "before": before,
                        "loop": loop})
        return out

    def _param_block(self, kernel: Kernel, outputs: list[tuple[str, sp.Expr]]) -> list[str]:
        """Code over parameters and constants only (the regularizer)."""
        printer = self.printer
        printer.reset_temporaries()
        body = kernel.needed([e for _, e in outputs])
        used: set = set()
        code = []
        for a in body:
            used |= a.expr.free_symbols
            code += printer.statement(f"let {self.names[a.target.name]}: {self.scalar} = ",
                                      a.expr)
        for head, expr in outputs:
            used |= expr.free_symbols
            code += printer.statement(head, expr)
        loads, _ = self._loads(used - {a.target for a in body}, fields=False)
        return loads + code

    # -- optimizers ---------------------------------------------------------------------
    def optimizers(self) -> list[dict]:
        if hasattr(self, "_optimizers"):
            return self._optimizers
        chosen = self.program.optimizer
        lr = {h.name: h.default for h in chosen.hyperparameters}.get("learning_rate", 0.01)
        irs = []
        for kind in OPTIMIZER_TYPE:
            if kind == chosen.kind:
                irs.append(chosen)
            else:
                irs.append(build_optimizer(TrainingSpec(optimizer=kind, learning_rate=lr),
                                           Namer()))
        # an lbfgs project: the three first-order types stay available for the mini-batch
        # train(_:on:…optimizer:), with Adam as its default
        first_order = chosen.kind in OPTIMIZER_TYPE
        self._optimizers = [self._optimizer(ir, ir is chosen or (not first_order and
                                                                 ir.kind == "adam"))
                            for ir in irs]
        return self._optimizers

    def train_settings(self) -> dict:
        """The project's method, stopping rules, bounds and the line-search constants."""
        t = self.program.training
        T = self.scalar

        def bound(v: float) -> str:
            if v == float("inf"):
                return f"{T}.infinity"
            if v == float("-inf"):
                return f"-{T}.infinity"
            return self.lit(v)
        return {
            "method": t.method,
            "first_order": t.method in OPTIMIZER_TYPE,
            "max_iterations": t.max_iterations,
            "gradient_tolerance": self.lit(t.gradient_tolerance),
            "objective_tolerance": self.lit(t.objective_tolerance),
            "history": t.history,
            "lower": ", ".join(bound(v) for v in self.program.lower),
            "upper": ", ".join(bound(v) for v in self.program.upper),
            "eps": "1.1920929e-07" if T == "Float" else "2.220446049250313e-16",
            "ls": LINE_SEARCH,
            "reasons": [(lower_camel(r), r) for r in STOP_REASONS],
            "tau": self.lit(DAMPING.tau), "max_rejections": DAMPING.max_rejections,
        }

    def lbfgs_type(self) -> str:
        return f"{self.module}LBFGS"

    def default_optimizer(self) -> str:
        return next(o["type"] for o in self.optimizers() if o["default"])

    def _optimizer(self, opt: Optimizer, default: bool) -> dict:
        """A value type for ``opt`` printed from its element-wise IR."""
        T = self.scalar
        symbols = ({h.symbol for h in opt.hyperparameters} | {s for s, _ in opt.scalar_state}
                   | set(opt.element_state) | {opt.param, opt.grad}
                   | {a.target for a in opt.scalar_update + opt.element_update})
        local = safe_names({s.name for s in symbols}, SWIFT_KEYWORDS | SWIFT_GLOBALS)
        printer = SwiftPrinter({"precision": self.program.precision, "names": local,
                                "scalar": T})
        members = safe_names({lower_camel(h.name) for h in opt.hyperparameters}
                             | {lower_camel(s.name) for s, _ in opt.scalar_state}
                             | {lower_camel(s.name) for s in opt.element_state},
                             SWIFT_KEYWORDS | {"step", "reset", "init", "description"})

        def member(symbol_name: str) -> str:
            return members[lower_camel(symbol_name)]

        used: set = set()
        for a in opt.scalar_update + opt.element_update:
            used |= a.expr.free_symbols
        scalar_targets = [a.target for a in opt.scalar_update]
        element_targets = [a.target for a in opt.element_update]
        state_symbols = {s for s, _ in opt.scalar_state}

        # per-step scalar code
        step = []
        for h in opt.hyperparameters:
            if h.symbol in used:
                step.append(f"let {local[h.symbol.name]}: {T} = self.{member(h.name)}")
        for s, _ in opt.scalar_state:
            keyword = "var" if s in scalar_targets else "let"
            step.append(f"{keyword} {local[s.name]}: {T} = self.{member(s.name)}")
        def assignments(update, declared: set) -> list[str]:
            """Statements for ``update``: the first assignment to a new name declares it (a
            `var` if it is assigned again), later ones and stored state just assign."""
            targets = [a.target for a in update]
            lines = []
            for a in update:
                name = local[a.target.name]
                if a.target in declared:
                    head = f"{name} = "
                else:
                    keyword = "var" if targets.count(a.target) > 1 else "let"
                    head = f"{keyword} {name}: {T} = "
                    declared.add(a.target)
                printer.reset_temporaries()
                lines += printer.statement(head, a.expr)
            return lines

        step += assignments(opt.scalar_update, set(state_symbols))
        for s, _ in opt.scalar_state:
            if s in scalar_targets:
                step.append(f"self.{member(s.name)} = {local[s.name]}")

        # element-wise loop (a static function so that the state arrays are separate inout
        # arguments: no overlapping access to self)
        used_in_loop: set = set()
        for a in opt.element_update:
            used_in_loop |= a.expr.free_symbols
        scalars_in_loop = [s for s in sorted(used_in_loop - set(element_targets)
                                             - set(opt.element_state) - {opt.param, opt.grad},
                                             key=lambda s: s.name)]
        loop = [f"{'var' if opt.param in element_targets else 'let'} "
                f"{local[opt.param.name]}: {T} = _p[_i]",
                f"let {local[opt.grad.name]}: {T} = _g[_i]"]
        for k, s in enumerate(opt.element_state):
            keyword = "var" if s in element_targets else "let"
            loop.append(f"{keyword} {local[s.name]}: {T} = _e{k}[_i]")
        loop += assignments(opt.element_update, set(opt.element_state) | {opt.param, opt.grad})
        if opt.param in element_targets:
            loop.append(f"_p[_i] = {local[opt.param.name]}")
        for k, s in enumerate(opt.element_state):
            if s in element_targets:
                loop.append(f"_e{k}[_i] = {local[s.name]}")

        type_name = f"{self.module}{OPTIMIZER_TYPE.get(opt.kind, upper_camel(opt.kind))}"
        return {
            "kind": opt.kind, "type": type_name, "default": default,
            "doc": OPTIMIZER_DOC.get(opt.kind, [f"The `{opt.kind}` optimizer."]),
            "hyper": [{"name": h.name, "member": member(h.name),
                       "default": self.lit(h.default)} for h in opt.hyperparameters],
            "scalar_state": [{"name": s.name, "member": member(s.name), "init": self.lit(v)}
                             for s, v in opt.scalar_state],
            "element_state": [{"name": s.name, "member": member(s.name), "arg": f"_e{k}"}
                              for k, s in enumerate(opt.element_state)],
            "step": step,
            "loop_scalars": [{"local": local[s.name], "arg": f"{local[s.name]}"}
                             for s in scalars_in_loop],
            "loop": loop,
            "lr_member": next((member(h.name) for h in opt.hyperparameters
                               if h.name == "learning_rate"), ""),
        }


@hookimpl
def gradforge_backends():
    return [SwiftBackend()]
