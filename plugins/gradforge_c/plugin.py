"""The C backend plugin: a C99 header + source (libm only) and a gcc-built verification harness.

Emitted files (``<name>`` is the project name, ``<NAME>`` its upper-case form):

* ``<name>.h`` — sizes and offsets, the data/constants/optimizer structs and the API;
* ``<name>.c`` — the implementation: one loop over samples per kernel with the parameter and
  constant loads hoisted out of it, the regularizer, the optimizer step and the training loop
  (SplitMix64 + Fisher-Yates batches, the same as every gradforge backend).

``run`` builds ``harness.c`` (in the scratch folder only, never emitted) together with the
generated source under the strict flags and feeds it the :mod:`gradforge.protocol` cases.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import sympy as sp

from gradforge.plugin_api import (DAMPING, LINE_SEARCH, STOP_REASONS, check_training, Assignment, Backend, BackendError, Case,
                                  Kernel, Option, Program, Result, Toolchain, ToolchainError,
                                  check_vocabulary, walk,
                                  count_operations, decode_results, encode_cases, find_tool,
                                  header_text, hookimpl, render, run_tool,
                                  safe_names, shortest_repr, write_files)

from .printer import FLOAT_FUNCTIONS, MATH_FUNCTIONS, GradforgeCPrinter

#: Flags every emitted file must compile cleanly under (the product's promise).
STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror")
#: Extra flags for float32 output: no double anywhere, no silent narrowing.
FLOAT32_FLAGS = ("-Wdouble-promotion", "-Wconversion")

C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while
    alignas alignof bool constexpr false nullptr static_assert thread_local true typeof
    typeof_unqual
""".split())

#: A header may be included from C++ (it has extern "C"), so its names avoid C++ keywords.
CXX_KEYWORDS = frozenset("""
    and and_eq asm bitand bitor catch char8_t char16_t char32_t class compl concept const_cast
    consteval constinit co_await co_return co_yield decltype delete dynamic_cast explicit export
    friend mutable namespace new noexcept not not_eq operator or or_eq private protected public
    reinterpret_cast requires static_cast template this throw try typeid typename using virtual
    wchar_t xor xor_eq
""".split())

#: Types, macros and objects of the headers the generated code and its users include.
LIBRARY_NAMES = frozenset("""
    NULL EOF BUFSIZ FILENAME_MAX FOPEN_MAX TMP_MAX L_tmpnam SEEK_SET SEEK_CUR SEEK_END
    EXIT_SUCCESS EXIT_FAILURE RAND_MAX MB_CUR_MAX stdin stdout stderr errno assert offsetof
    size_t ptrdiff_t max_align_t FILE
    int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t intptr_t uintptr_t
    intmax_t uintmax_t INT8_MIN INT16_MIN INT32_MIN INT64_MIN INT8_MAX INT16_MAX INT32_MAX
    INT64_MAX UINT8_MAX UINT16_MAX UINT32_MAX UINT64_MAX SIZE_MAX PTRDIFF_MIN PTRDIFF_MAX
    INT8_C INT16_C INT32_C INT64_C UINT8_C UINT16_C UINT32_C UINT64_C INTMAX_C UINTMAX_C
    INFINITY NAN HUGE_VAL HUGE_VALF HUGE_VALL FP_NAN FP_INFINITE FP_ZERO FP_SUBNORMAL FP_NORMAL
    FP_FAST_FMA FP_FAST_FMAF FP_ILOGB0 FP_ILOGBNAN MATH_ERRNO MATH_ERREXCEPT math_errhandling
    float_t double_t
    M_E M_LOG2E M_LOG10E M_LN2 M_LN10 M_PI M_PI_2 M_PI_4 M_1_PI M_2_PI M_2_SQRTPI M_SQRT2
    M_SQRT1_2
""".split())

#: Headers a ``<name>.h`` would hide for any file compiled with ``-I`` on the output folder:
#: the C standard library (C89 … C23) and the common POSIX headers.
SYSTEM_HEADERS = frozenset("""
    assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal
    stdalign stdarg stdatomic stdbit stdbool stdckdint stddef stdint stdio stdlib stdnoreturn
    string tgmath threads time uchar wchar wctype
    aio arpa cpio dirent dlfcn fcntl fnmatch glob grp iconv langinfo libgen monetary mqueue
    netdb nl_types poll pthread pwd regex sched search semaphore spawn strings syslog tar
    termios ulimit unistd utime utmpx wordexp alloca malloc memory endian features
""".split())

#: Identifiers that share a scope with the user's names: the arguments and locals of the
#: kernel, regularizer and optimizer functions, the helpers they call, and struct members
#: (``n`` of the data struct, the optimizer's scratch). Other functions hold no user names.
INTERNAL_NAMES = frozenset("""
    params d c grad out n i k s index count total opt batch_grad gradforge_unused
    gf_sign gf_select part start end job value GF_BLOCK_FUNCTION jtj jtr
""".split())

#: Samples are summed in blocks of this many (by position in the batch); the block partials
#: are added in block order, so threads never change a bit (docs/semantics.md, "Reduction").
BLOCK_SIZE = 1024
#: The ``omp simd`` reduction (GRADFORGE_OPENMP_SIMD) is written only for loops with at most
#: this many gradient accumulators: forcing vector lanes onto hundreds of accumulators (a
#: 577-parameter MLP) spills them all and ran 8x slower than gcc's own choice.
SIMD_MAX_ACCUMULATORS = 64
#: The most threads a threaded C build starts (the job table lives on the stack).
MAX_THREADS = 64


def c_type(precision: str) -> str:
    return "float" if precision == "float32" else "double"


#: Per-sample kernels up to this many operations get a second, contiguous copy of the loss-and-
#: gradient loop (vectorizable under -O3 -ffast-math); larger ones keep one loop, since the copy
#: would double gcc's time on a body that is already long.
DUPLICATE_LOOP_MAX_OPS = 2000


def _split_invariant(body: list[Assignment], field_symbols: set[sp.Symbol]
                     ) -> tuple[list[Assignment], list[Assignment]]:
    """(assignments that depend on no field — computed once, before the loop; the rest)."""
    varying = set(field_symbols)
    before, inside = [], []
    for assignment in body:
        if assignment.expr.free_symbols & varying:
            varying.add(assignment.target)
            inside.append(assignment)
        else:
            before.append(assignment)
    return before, inside


class _Emitter:
    """Builds the text of one program's files (kept separate from the plugin object)."""

    def __init__(self, program: Program, threads: int = 1):
        self.program = program
        self.threads = threads
        self.prefix = program.name
        self.upper = program.name.upper()
        self.T = c_type(program.precision)
        self.fields = program.fields
        pool = set(program.symbol_names())
        pool |= {f.name for f in self.fields} | {c.name for c in program.constants}
        pool |= {c.symbol.name for c in program.constants}
        self.names = safe_names(pool, self.reserved())
        # order="none": SymPy's canonical argument order (deterministic, and twice as fast
        # to print as sorting every sum lexicographically)
        self.printer = GradforgeCPrinter({"precision": program.precision, "names": self.names,
                                          "sign_function": "gf_sign", "order": "none"})
        self.leaf = program.leaf_kind()
        self.field_symbols = {s for f in self.fields for s in f.symbols}
        self.uses_sign = False
        self.uses_select = False

    # -- names -------------------------------------------------------------------------
    def reserved(self) -> set[str]:
        p, u = self.prefix, self.upper
        own = {f"{p}_{suffix}" for suffix in (
            "data", "constants", "optimizer", "default_constants", "init_params", "objective",
            "value_and_grad", "value_and_grad_indexed", "predict", "optimizer_init",
            "optimizer_reset", "optimizer_step", "train", "sum_loss", "sum_loss_and_grad",
            "regularizer", "defaults", "initial_params", "load_params", "read_params",
            "params_error", "params_pass", "parameter_table", "block_loss",
            "block_loss_and_grad", "job", "run_job", "parallel", "thread_count",
            "stop", "stop_name", "report", "callback", "train_options", "workspace",
            "default_train_options", "workspace_init", "normal_equations", "lower", "upper",
            "residuals", "first_order", "lbfgs", "levenberg_marquardt", "line_search")}
        own |= {f"{u}_{suffix}" for suffix in (
            "NUM_PARAMS", "DEFAULT_CONSTANTS", "DEFAULT_EPOCHS", "DEFAULT_BATCH_SIZE",
            "DEFAULT_SEED", "H", "MODEL_HASH", "PARAMETER_COUNT", "PARAMS_H", "PARAMS_OK",
            "PARAMS_CANNOT_OPEN", "PARAMS_NOT_A_PARAMS_FILE", "PARAMS_OTHER_MODEL",
            "PARAMS_UNKNOWN_PARAMETER", "PARAMS_WRONG_COUNT", "PARAMS_BAD_NUMBER",
            "PARAMS_MISSING_PARAMETER", "THREADS", "BLOCK", "MAX_THREADS",
            "STOP_GRADIENT_TOLERANCE", "STOP_OBJECTIVE_TOLERANCE",
            "STOP_MAX_ITERATIONS", "STOP_LINE_SEARCH_FAILED", "STOP_NON_FINITE",
            "STOP_CALLBACK", "HISTORY", "WORKSPACE_SIZE", "DEFAULT_TRAIN_OPTIONS",
            "DEFAULT_MAX_ITERATIONS", "DEFAULT_GRADIENT_TOLERANCE",
            "DEFAULT_OBJECTIVE_TOLERANCE")}
        own |= {f"GRADFORGE_{u}_H", f"GRADFORGE_{u}_PARAMS_H"}
        own |= {f"{u}_OFFSET_{q.name}" for q in self.program.parameters}
        own |= {f"{u}_SIZE_{q.name}" for q in self.program.parameters}
        own |= {f"{u}_SIZE_{f.name}" for f in self.fields}
        own |= {self.data_pointer_raw(f.name) for f in self.fields}
        own |= {self.accumulator(k) for k in range(self.program.num_params)}
        return set(C_KEYWORDS | CXX_KEYWORDS | LIBRARY_NAMES | INTERNAL_NAMES | MATH_FUNCTIONS
                   | own)

    @staticmethod
    def accumulator(flat_index: int) -> str:
        """The local that sums ∂ℓ/∂θ[flat_index] over one block (a register, not memory)."""
        return f"gf_acc{flat_index}"

    @staticmethod
    def data_pointer_raw(field_name: str) -> str:
        return f"data_{field_name}"

    def name(self, symbol_or_name) -> str:
        key = symbol_or_name.name if isinstance(symbol_or_name, sp.Symbol) else symbol_or_name
        return self.names[key]

    def expr(self, expr: sp.Expr) -> str:
        if expr.has(sp.sign):
            self.uses_sign = True
        text = self.printer.doprint(expr)
        self.uses_select = self.printer.printed_select
        return text

    def literal(self, value: float) -> str:
        return shortest_repr(value, self.program.precision) + (
            "f" if self.program.precision == "float32" else "")

    def vector_math(self) -> list[str]:
        """The <math.h> functions the per-sample sums call that glibc's libmvec vectorizes."""
        used = {type(node).__name__ for kernel in (self.program.loss,
                                                   self.program.loss_and_gradient)
                for expr in kernel.expressions() for node in walk(expr)}
        names = [n for n in ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh")
                 if n in used]
        return [FLOAT_FUNCTIONS[n] if self.T == "float" else n for n in names]

    # -- kernel pieces -----------------------------------------------------------------
    def hoisted_loads(self, used: set[sp.Symbol]) -> list[str]:
        """Parameter and constant loads (once per call) and field base pointers."""
        T = self.T
        lines = []
        for p in self.program.parameters:
            for i, s in enumerate(p.symbols):
                if s in used:
                    lines.append(f"const {T} {self.name(s)} = params[{p.offset + i}];")
        for c in self.program.constants:
            if c.symbol in used:
                lines.append(f"const {T} {self.name(c.symbol)} = c->{self.name(c.symbol)};")
        for f in self.fields:
            if any(s in used for s in f.symbols):
                pointer = self.data_pointer_raw(f.name)
                lines.append(f"const {T} *restrict const {pointer} = d->{self.name(f.name)};")
        return lines

    def sample_loads(self, used: set[sp.Symbol]) -> list[str]:
        """Field element loads for sample ``s`` (inside the loop)."""
        lines = []
        for f in self.fields:
            pointer = self.data_pointer_raw(f.name)
            for i, s in enumerate(f.symbols):
                if s in used:
                    if f.size == 1:
                        where = "s"
                    else:
                        where = f"{f.size} * s" + (f" + {i}" if i else "")
                    lines.append(f"const {self.T} {self.name(s)} = {pointer}[{where}];")
        return lines

    def assignments(self, body: Sequence[Assignment]) -> list[str]:
        return [f"const {self.T} {self.name(a.target)} = {self.expr(a.expr)};" for a in body]

    def kernel_parts(self, kernel: Kernel, roots: list[sp.Expr]) -> dict[str, Any]:
        """Split a per-sample kernel into hoisted code and the per-sample loop body."""
        body = kernel.needed(roots)
        before, inside = _split_invariant(body, self.field_symbols)
        used: set[sp.Symbol] = set()
        for expr in roots + [a.expr for a in body]:
            used |= expr.free_symbols
        used = {s for s in used if s in self.leaf}
        kinds = {self.leaf[s][0] for s in used}
        ops = count_operations([a.expr for a in inside] + roots)
        return {
            "ops": ops,
            "duplicate": ops <= DUPLICATE_LOOP_MAX_OPS,
            "uses_params": "param" in kinds,
            "uses_constants": "constant" in kinds,
            "hoisted": self.hoisted_loads(used) + self.assignments(before),
            "loads": self.sample_loads(used),
            "body": self.assignments(inside),
            "accumulators": [],
            "store": [],
            "simd": True,
        }

    def per_sample_functions(self) -> list[dict[str, Any]]:
        prog = self.program
        functions = []
        loss = prog.loss.output("loss")
        parts = self.kernel_parts(prog.loss, [loss])
        parts.update(name=f"{self.prefix}_block_loss", kind="loss",
                     accumulate=[f"total += {self.expr(loss)};"])
        functions.append(parts)

        kernel = prog.loss_and_gradient
        loss = kernel.output("loss")
        roots = [loss] + [g for _, g in kernel.gradient]
        parts = self.kernel_parts(kernel, roots)
        parts.update(name=f"{self.prefix}_block_loss_and_grad", kind="loss_and_grad",
                     accumulate=[f"total += {self.expr(loss)};"]
                     + [f"{self.accumulator(i)} += {self.expr(g)};" for i, g in kernel.gradient],
                     accumulators=[self.accumulator(i) for i, _ in kernel.gradient],
                     store=[f"part[{i}] = {self.accumulator(i)};" for i, _ in kernel.gradient],
                     simd=len(kernel.gradient) <= SIMD_MAX_ACCUMULATORS)
        functions.append(parts)

        prediction = prog.predict.output("prediction")
        parts = self.kernel_parts(prog.predict, [prediction])
        parts.update(name=f"{self.prefix}_predict", kind="predict",
                     accumulate=[f"out[s] = {self.expr(prediction)};"])
        functions.append(parts)
        return functions

    def regularizer(self) -> dict[str, Any] | None:
        kernel = self.program.regularizer
        if kernel is None:
            return None
        value = kernel.output("value")
        roots = [value] + [g for _, g in kernel.gradient]
        body = kernel.needed(roots)
        used: set[sp.Symbol] = set()
        for expr in roots + [a.expr for a in body]:
            used |= expr.free_symbols
        used = {s for s in used if s in self.leaf}
        kinds = {self.leaf[s][0] for s in used}
        return {
            "uses_params": "param" in kinds,
            "uses_constants": "constant" in kinds,
            "lines": self.hoisted_loads(used) + self.assignments(body),
            "value": self.expr(value),
            "gradient": [f"grad[{i}] += {self.expr(g)};" for i, g in kernel.gradient],
            "ops": count_operations([a.expr for a in body] + roots),
        }

    def residual_functions(self) -> list[dict[str, Any]]:
        """Levenberg–Marquardt: one function per residual kernel that adds r², Jᵀr and the
        upper triangle of JᵀJ (only the Jacobian row's non-zero entries) over the samples."""
        P = self.program.num_params
        out = []
        groups = [("sample", k) for k in self.program.residuals] + \
            [("regularizer", k) for k in self.program.regularizer_residuals]
        for number, (group, kernel) in enumerate(groups):
            r = kernel.output("residual")
            roots = [r] + [g for _, g in kernel.gradient]
            parts = self.kernel_parts(kernel, roots)
            T = self.T
            accumulate = [f"const {T} gf_r = {self.expr(r)};"]
            accumulate += [f"const {T} gf_j{i} = {self.expr(g)};" for i, g in kernel.gradient]
            accumulate.append("total += gf_r * gf_r;")
            accumulate += [f"jtr[{i}] += gf_j{i} * gf_r;" for i, _ in kernel.gradient]
            entries = [i for i, _ in kernel.gradient]
            for a_pos, a in enumerate(entries):
                for b in entries[a_pos:]:
                    accumulate.append(f"jtj[{a * P + b}] += gf_j{a} * gf_j{b};")
            parts.update(name=f"{self.prefix}_residual_{number}", group=group,
                         accumulate=accumulate)
            out.append(parts)
        return out

    def projects_step(self) -> bool:
        """A bounded first-order project: <prefix>_optimizer_step clips onto the bounds."""
        return self.program.bounded and self.program.training.method in ("sgd", "momentum", "adam")

    def training(self) -> dict[str, Any]:
        """Settings, bounds and constants the trainer prints (gradforge.optimizers)."""
        t = self.program.training
        T = self.T
        suffix = "f" if T == "float" else ""
        huge = "HUGE_VALF" if T == "float" else "HUGE_VAL"

        def bound(v: float) -> str:
            if v == float("inf"):
                return huge
            if v == float("-inf"):
                return f"-{huge}"
            return self.literal(v)
        lower = [bound(v) for v in self.program.lower]
        upper = [bound(v) for v in self.program.upper]
        rows = lambda items: [", ".join(items[i:i + 6]) + ("," if i + 6 < len(items) else "")  # noqa: E731
                              for i in range(0, len(items), 6)]
        return {
            "method": t.method,
            "first_order": t.method in ("sgd", "momentum", "adam"),
            "max_iterations": t.max_iterations,
            "gradient_tolerance": self.literal(t.gradient_tolerance),
            "objective_tolerance": self.literal(t.objective_tolerance),
            "history": t.history,
            "bounded": self.program.bounded,
            # <prefix>_optimizer_step projects onto the bounds itself (nothing extra unbounded)
            "project_step": self.projects_step(),
            "lower_rows": rows(lower), "upper_rows": rows(upper),
            "f": suffix,
            "eps": "1.1920929e-07f" if T == "float" else "2.220446049250313e-16",
            "ls": LINE_SEARCH, "damping": DAMPING,
            "reasons": [r.upper() for r in STOP_REASONS], "reason_names": list(STOP_REASONS),
            "residuals": self.residual_functions() if t.method == "levenberg_marquardt" else [],
            "sqrt": "sqrtf" if T == "float" else "sqrt",
        }

    def optimizer(self) -> dict[str, Any]:
        """The step: scalar state updated once, then a loop over the flat vector."""
        opt = self.program.optimizer
        T = self.T
        updates = opt.scalar_update + opt.element_update
        read: set[sp.Symbol] = set()
        for a in updates:
            read |= a.expr.free_symbols
        assigned_count: dict[sp.Symbol, int] = {}
        for a in updates:
            assigned_count[a.target] = assigned_count.get(a.target, 0) + 1
        storage = {s for s, _ in opt.scalar_state} | set(opt.element_state) | {opt.param}
        declared: set[sp.Symbol] = set()

        def assign(a: Assignment) -> str:
            target = self.name(a.target)
            if a.target in storage or a.target in declared:
                return f"{target} = {self.expr(a.expr)};"
            declared.add(a.target)         # a temporary: declared where first assigned
            qualifier = "const " if assigned_count[a.target] == 1 else ""
            return f"{qualifier}{T} {target} = {self.expr(a.expr)};"

        # hyper-parameters nobody reads would be unused variables (-Werror)
        scalar_lines = [f"const {T} {self.name(h.symbol)} = opt->{self.name(h.symbol)};"
                        for h in opt.hyperparameters if h.symbol in read]
        scalar_lines += [f"{T} {self.name(s)} = opt->{self.name(s)};"
                         for s, _ in opt.scalar_state]
        scalar_lines += [assign(a) for a in opt.scalar_update]
        written = {a.target for a in opt.scalar_update}
        scalar_lines += [f"opt->{self.name(s)} = {self.name(s)};"
                         for s, _ in opt.scalar_state if s in written]

        written = {a.target for a in opt.element_update}
        param_qualifier = "" if opt.param in written else "const "
        element_lines = [f"{param_qualifier}{T} {self.name(opt.param)} = params[k];",
                         f"const {T} {self.name(opt.grad)} = grad[k];"]
        element_lines += [f"{T} {self.name(s)} = opt->{self.name(s)}[k];"
                          for s in opt.element_state]
        element_lines += [assign(a) for a in opt.element_update]
        element_lines += [f"opt->{self.name(s)}[k] = {self.name(s)};"
                          for s in opt.element_state if s in written]
        if opt.param in written and self.projects_step():
            element_lines.append(f"params[k] = gf_clip({self.name(opt.param)}, k);")
        elif opt.param in written:
            element_lines.append(f"params[k] = {self.name(opt.param)};")
        return {
            "kind": opt.kind,
            "hyper": [{"member": self.name(h.symbol), "default": self.literal(h.default),
                       "doc": shortest_repr(h.default, "float64")}
                      for h in opt.hyperparameters],
            "scalar_state": [{"member": self.name(s), "init": self.literal(v)}
                             for s, v in opt.scalar_state],
            "element_state": [self.name(s) for s in opt.element_state],
            "scalar_lines": scalar_lines,
            "element_lines": element_lines,
        }

    def context(self) -> dict[str, Any]:
        prog = self.program
        functions = self.per_sample_functions()
        regularizer = self.regularizer()
        optimizer = self.optimizer()
        training = self.training()
        init = [self.literal(v) for p in prog.parameters for v in p.init]
        init_rows = [", ".join(init[i:i + 6]) + ("," if i + 6 < len(init) else "")
                     for i in range(0, len(init), 6)]
        shape = lambda s: "".join(f"[{d}]" for d in s)  # noqa: E731
        constants = [{"member": self.name(c.symbol), "name": c.name,
                      "default": self.literal(c.default),
                      "doc": shortest_repr(c.default, "float64")} for c in prog.constants]
        return {
            "header": header_text(prog.source),
            "source": Path(prog.source).name if prog.source else None,
            "prefix": self.prefix, "upper": self.upper, "T": self.T,
            "model_hash": prog.model_hash,
            "precision": prog.precision, "reduction": prog.reduction,
            "num_params": prog.num_params,
            "parameters": [{"name": p.name, "shape": shape(p.shape), "offset": p.offset,
                            "size": p.size} for p in prog.parameters],
            "fields": [{"name": f.name, "member": self.name(f.name), "role": f.role,
                        "shape": shape(f.shape), "size": f.size,
                        "per_sample": "n" if f.size == 1 else f"n x {f.size}"}
                       for f in self.fields],
            "constants": constants,
            "functions": functions,
            "regularizer": regularizer,
            "optimizer": optimizer,
            "train": training,
            "init_rows": init_rows,
            "training": {"epochs": prog.training.epochs,
                         "batch_size": prog.training.batch_size,
                         "seed": prog.training.seed},
            "threads": self.threads,
            "libmvec": self.vector_math(),
            "block_size": BLOCK_SIZE,
            "max_threads": MAX_THREADS,
            "sparse_gradient": len(prog.loss_and_gradient.gradient) < prog.num_params,
            "uses_sign": self.uses_sign,
            "uses_select": self.uses_select,
            "bits": "uint32_t" if self.T == "float" else "uint64_t",
            "fabs": "fabsf" if self.T == "float" else "fabs",
            "copysign": "copysignf" if self.T == "float" else "copysign",
            "zero": self.literal(0.0), "one": self.literal(1.0),
        }


#: Levenberg–Marquardt in C keeps JᵀJ (three P×P matrices in the workspace) and unrolls each
#: Jacobian row's outer product per sample; above this many parameters use lbfgs.
LM_MAX_PARAMS = 64


def emit_files(program: Program, threads: int = 1) -> dict[str, str]:
    """``{<name>.h: …, <name>.c: …}`` for ``program`` (pure, deterministic); ``threads`` ≠ 1
    adds the pthreads driver (0: as many threads as online processors)."""
    check_vocabulary(program, backend="c")
    check_training(program, CBackend)
    if program.training.method == "levenberg_marquardt" and program.num_params > LM_MAX_PARAMS:
        raise BackendError(f"the c backend runs levenberg_marquardt up to {LM_MAX_PARAMS} "
                           f"parameters (this model has {program.num_params}); use "
                           f"optimizer = \"lbfgs\"")
    context = _Emitter(program, threads).context()
    return {
        f"{program.name}.h": render("gradforge_c", "header.h.j2", **context),
        f"{program.name}.c": render("gradforge_c", "source.c.j2", **context),
        # the params.txt reader: apart, because it needs <stdio.h>
        f"{program.name}_params.h": render("gradforge_c", "params.h.j2", **context),
        f"{program.name}_params.c": render("gradforge_c", "params.c.j2", **context),
    }


def _harness_context(program: Program) -> dict[str, Any]:
    emitter = _Emitter(program)
    return dict(header=header_text(program.source), prefix=emitter.prefix,
                upper=emitter.upper, T=emitter.T,
                fields=[{"member": emitter.name(f.name), "size": f.size}
                        for f in program.fields],
                first_order=program.training.method in ("sgd", "momentum", "adam"),
                constants=[emitter.name(c.symbol) for c in program.constants])


def harness_text(program: Program) -> str:
    """The verification ``main`` (protocol on stdin/stdout); lives in the scratch folder only."""
    return render("gradforge_c", "harness.c.j2", **_harness_context(program))


def trainer_text(program: Program) -> str:
    """A ``main`` that runs ``<name>_train`` on data read from stdin (tests, benchmarks)."""
    return render("gradforge_c", "trainer.c.j2", **_harness_context(program))


@dataclass(frozen=True)
class TrainingRun:
    """What the trainer harness reported."""

    status: int                   # <name>_train's return: the stop reason's code, or -1
    objective_before: float
    value_before: float           # J from value_and_grad (must equal objective_before)
    objective_after: float
    params: tuple[float, ...]
    seconds: float                # CPU time of <name>_train alone
    iterations: int = 0           # the report
    evaluations: int = 0
    passes: int = 0
    objective: float = 0.0
    gradient_norm: float = 0.0
    iterates: tuple[tuple[float, ...], ...] = ()   # params after each iteration (at most 50)

    @property
    def reason(self) -> str:
        return STOP_REASONS[self.status - 1] if 1 <= self.status <= len(STOP_REASONS) else ""


def compile_flags(precision: str, threads: int = 1) -> list[str]:
    return [*STRICT_FLAGS, *(FLOAT32_FLAGS if precision == "float32" else ()),
            *(("-pthread",) if threads != 1 else ())]


def threads_option(options: Mapping[str, Any]) -> int:
    """The ``threads`` option, checked (0 = one per online processor)."""
    threads = int(options.get("threads", 1))
    if not 0 <= threads <= MAX_THREADS:
        raise BackendError(f"backends.c.threads must be between 0 and {MAX_THREADS} "
                           f"(got {threads}); 0 means one thread per online processor")
    return threads


class CBackend(Backend):
    name = "c"
    training_methods = ("sgd", "momentum", "adam", "lbfgs", "levenberg_marquardt")
    supports_bounds = True
    description = "C99 header + source, libm only (objective, gradient, optimizer, training loop)"
    comment_prefix = "/*"
    shadowed_names = {name: f"the system header <{name}.h>" for name in sorted(SYSTEM_HEADERS)}
    options = (
        Option("threads", int, 1, "threads for the objective and gradient sums: 1 = plain C99 "
               "(no pthreads), 0 = one per online processor, N = at most N; results are "
               "bit-identical for every count (link with -pthread when not 1)"),
    )

    def emit(self, program: Program, options: Mapping[str, Any]) -> dict[str, str]:
        return emit_files(program, threads_option(options))

    def toolchains(self) -> list[Toolchain]:
        return [find_tool("gcc", hint="install gcc (e.g. apt-get install gcc)")]

    def build(self, program: Program, workdir: Path,
              extra_sources: Mapping[str, str] | None = None, optimize: str = "-O2",
              threads: int = 1) -> Path:
        """Emit into ``workdir`` with a ``main`` (the protocol harness unless ``extra_sources``
        gives another), compile with the strict flags; returns the binary's path."""
        if not self.toolchains()[0].available:
            raise ToolchainError("gcc not found (install gcc to build the C backend's output)")
        workdir.mkdir(parents=True, exist_ok=True)
        mains = dict(extra_sources or {"harness.c": harness_text(program)})
        files = {**emit_files(program, threads), **mains}
        write_files(workdir, files)
        sources = sorted(rel for rel in files if rel.endswith(".c"))
        binary = workdir / Path(sorted(mains)[0]).stem
        run_tool(["gcc", optimize, *compile_flags(program.precision, threads), "-o", str(binary),
                  *sources, "-lm"], cwd=workdir)
        return binary

    def train(self, program: Program, data: Mapping[str, Sequence[Sequence[float]]],
              workdir: Path, epochs: int | None = None, batch_size: int | None = None,
              seed: int | None = None, optimize: str = "-O2", max_iterations: int | None = None,
              gradient_tolerance: float | None = None,
              objective_tolerance: float | None = None, trace: bool = True) -> TrainingRun:
        """Build the trainer harness and run ``<name>_train`` on ``data`` ({field: rows});
        ``epochs`` is max_iterations for first-order methods (None = project defaults);
        ``trace`` passes a callback that records the iterates (False: no callback)."""
        t = program.training
        if max_iterations is None:
            max_iterations = epochs if epochs is not None else t.max_iterations
        batch_size = t.batch_size if batch_size is None else batch_size
        seed = t.seed if seed is None else seed
        gtol = t.gradient_tolerance if gradient_tolerance is None else gradient_tolerance
        otol = t.objective_tolerance if objective_tolerance is None else objective_tolerance
        binary = self.build(program, Path(workdir), {"trainer.c": trainer_text(program)},
                            optimize=optimize)
        n = len(data[program.fields[0].name]) if program.fields else 0
        lines = [f"{n} {max_iterations} {batch_size} {seed} {float(gtol)!r} {float(otol)!r} "
                 f"{int(trace)}"]
        lines += [" ".join(repr(float(v)) for row in data[f.name] for v in row)
                  for f in program.fields]
        values = run_tool([str(binary)], cwd=workdir, stdin="\n".join(lines) + "\n").split()
        p = program.num_params
        if len(values) < 11 + p:
            raise ToolchainError(f"trainer printed {len(values)} values, expected more")
        count = int(values[10 + p])
        if len(values) != 11 + p + count * p:
            raise ToolchainError(f"trainer printed {len(values)} values, expected "
                                 f"{11 + p + count * p}")
        trace = tuple(tuple(map(float, values[11 + p + i * p:11 + p + (i + 1) * p]))
                      for i in range(count))
        return TrainingRun(int(values[0]), float(values[6]), float(values[7]), float(values[8]),
                           tuple(map(float, values[9:9 + p])), float(values[9 + p]),
                           int(values[1]), int(values[2]), int(values[3]), float(values[4]),
                           float(values[5]), trace)

    def run(self, program: Program, options: Mapping[str, Any], cases: Sequence[Case],
            workdir: Path) -> list[Result]:
        binary = self.build(program, Path(workdir), threads=threads_option(options))
        output = run_tool([str(binary)], cwd=workdir, stdin=encode_cases(program, cases))
        return decode_results(program, cases, output)


@hookimpl
def gradforge_backends():
    return [CBackend()]
