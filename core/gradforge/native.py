"""The generated C, compiled once and called from Python through ctypes.

Why: ``gradforge train --backend c`` should run at the speed of the C library a user ships,
not at the speed of Python. The C backend's files are compiled into a shared library with the
system C compiler (``$CC``, else ``cc``/``gcc``), cached by a hash of their text, the compiler
and the flags under ``$XDG_CACHE_HOME/gradforge/c`` (default ``~/.cache/gradforge/c``), so
the second run of the same model starts immediately. The data columns are passed by pointer:
C-contiguous arrays of the model's float type are never copied.

``-ffp-contract=off`` keeps the compiler from fusing multiply-adds, so the C library computes
the same sums as the NumPy module to rounding.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy

from .errors import ToolchainError

FLAGS = ("-std=c99", "-O3", "-ffp-contract=off", "-fPIC", "-shared")

#: gradforge's epoch order (SplitMix64 + Fisher–Yates, as in every backend's trainer), compiled
#: into the same library: a shuffle of 10⁷ samples takes ~0.1 s in C and ~10 s in Python.
SHUFFLE_SOURCE = """\
/* gradforge's shuffle for `gradforge train --backend c` (the generated trainers' algorithm). */
#include <stddef.h>
#include <stdint.h>

void gradforge_permutation(uint64_t *state, size_t n, size_t *order);

void gradforge_permutation(uint64_t *state, size_t n, size_t *order)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        order[i] = i;
    }
    for (i = n > 0 ? n - 1 : 0; i > 0; --i) {
        uint64_t z;
        size_t j, swap;
        *state += UINT64_C(0x9E3779B97F4A7C15);
        z = *state;
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        z ^= z >> 31;
        j = (size_t)(z % (uint64_t)(i + 1));
        swap = order[i];
        order[i] = order[j];
        order[j] = swap;
    }
}
"""


def cache_root() -> Path:
    """The user cache folder for compiled libraries."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gradforge" / "c"


def compiler() -> str:
    """The system C compiler ($CC, cc, gcc, clang) or a ToolchainError."""
    for name in filter(None, (os.environ.get("CC"), "cc", "gcc", "clang")):
        found = shutil.which(name)
        if found:
            return found
    raise ToolchainError("--backend c needs a C compiler: install gcc or clang, or set CC")


def _compiler_id(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.SubprocessError):
        return cc


def compile_library(files: Mapping[str, str], name: str) -> Path:
    """Compile ``files`` ({relative path: text}, the C backend's output) into a cached shared
    library; returns its path. Safe when several processes compile the same model at once."""
    cc = compiler()
    files = {**files, "gradforge_shuffle.c": SHUFFLE_SOURCE}
    digest = hashlib.sha256()
    for key in (_compiler_id(cc), platform.machine(), " ".join(FLAGS)):
        digest.update(key.encode() + b"\0")
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel].encode() + b"\0")
    folder = cache_root() / digest.hexdigest()[:24]
    library = folder / f"lib{name}.so"
    if library.exists():
        return library
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:                      # an unwritable cache: compile into a private folder
        folder = Path(tempfile.mkdtemp(prefix="gradforge-c-"))
        library = folder / f"lib{name}.so"
    with tempfile.TemporaryDirectory(dir=folder) as work:
        for rel, text in files.items():
            (Path(work) / rel).write_text(text)
        sources = sorted(rel for rel in files if rel.endswith(".c"))
        out = Path(work) / library.name
        result = subprocess.run([cc, *FLAGS, "-o", str(out), *sources, "-lm"], cwd=work,
                                capture_output=True, text=True)
        if result.returncode != 0:
            first = (result.stderr or result.stdout).strip().splitlines()
            raise ToolchainError(f"{cc} failed on the generated C for {name}: "
                                 f"{first[0] if first else 'no output'}")
        os.replace(out, library)
    return library


@dataclass
class CModel:
    """ctypes view of one generated C library: value_and_grad, objective, predict, optimizer."""

    library: Path
    program: object

    def __post_init__(self):
        prog = self.program
        self.T = ctypes.c_float if prog.precision == "float32" else ctypes.c_double
        self.dtype = numpy.float32 if prog.precision == "float32" else numpy.float64
        self.lib = ctypes.CDLL(str(self.library))
        P = ctypes.c_void_p        # arrays go in as their address (no ctypes cast per call)
        self._P = ctypes.POINTER(self.T)
        # <name>_data: one pointer per field (inputs, then targets), then size_t n
        self.Data = type("Data", (ctypes.Structure,), {"_fields_": [
            *((f"f{i}", self._P) for i in range(len(prog.fields))), ("n", ctypes.c_size_t)]})
        consts = [(f"c{i}", self.T) for i in range(len(prog.constants))] or [("unused", ctypes.c_char)]
        self.Constants = type("Constants", (ctypes.Structure,), {"_fields_": consts})
        name = prog.name
        f = self.lib
        self._vg = getattr(f, f"{name}_value_and_grad")
        self._vg.restype = self.T
        self._vg.argtypes = [P, ctypes.POINTER(self.Data), ctypes.POINTER(self.Constants), P]
        self._vgi = getattr(f, f"{name}_value_and_grad_indexed")
        self._vgi.restype = self.T
        self._vgi.argtypes = [P, ctypes.POINTER(self.Data), ctypes.POINTER(self.Constants),
                              ctypes.c_void_p, ctypes.c_size_t, P]
        self._obj = getattr(f, f"{name}_objective")
        self._obj.restype = self.T
        self._obj.argtypes = [P, ctypes.POINTER(self.Data), ctypes.POINTER(self.Constants)]
        self._pred = getattr(f, f"{name}_predict")
        self._pred.restype = None
        self._pred.argtypes = [P, ctypes.POINTER(self.Data), ctypes.POINTER(self.Constants), P]
        self.can_train = hasattr(f, "gradforge_train")
        if self.can_train:
            self.Report = type("Report", (ctypes.Structure,), {"_fields_": [
                ("iterations", ctypes.c_ulong), ("evaluations", ctypes.c_ulong),
                ("passes", ctypes.c_ulong), ("objective", self.T),
                ("gradient_norm", self.T), ("reason", ctypes.c_int)]})
            self.Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(self.Report),
                                             ctypes.c_void_p)
            self._train = f.gradforge_train
            self._train.restype = ctypes.c_int
            self._train.argtypes = [P, ctypes.POINTER(self.Data), ctypes.POINTER(self.Constants),
                                    ctypes.c_ulong, ctypes.c_double, ctypes.c_double,
                                    ctypes.c_void_p, ctypes.c_void_p, self.Callback,
                                    ctypes.c_void_p, ctypes.POINTER(self.Report)]
            f.gradforge_workspace_size.restype = ctypes.c_size_t
            self.workspace_size = int(f.gradforge_workspace_size())
            self._stop_name = getattr(f, f"{name}_stop_name")
            self._stop_name.restype = ctypes.c_char_p
            self._stop_name.argtypes = [ctypes.c_int]
        self.can_normal_equations = hasattr(f, f"{name}_normal_equations")
        if self.can_normal_equations:
            self._normal = getattr(f, f"{name}_normal_equations")
            self._normal.restype = self.T
            self._normal.argtypes = [P, ctypes.POINTER(self.Data),
                                     ctypes.POINTER(self.Constants), P, P]
        self._perm = f.gradforge_permutation
        self._perm.restype = None
        self._perm.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t, ctypes.c_void_p]

    # -- arguments -------------------------------------------------------------------------
    def data(self, columns: Mapping[str, numpy.ndarray], n: int):
        """A <name>_data pointing into ``columns`` (no copy: the arrays must be C-contiguous
        of the model's float type; the struct keeps them alive)."""
        pointers = []
        keep = []
        for f in self.program.fields:
            col = columns.get(f.name)
            if col is None:                       # targets are not needed to predict
                col = numpy.zeros((n, f.size), dtype=self.dtype)
            if col.dtype != self.dtype or not col.flags.c_contiguous:
                raise ValueError(f"field {f.name!r} must be a C-contiguous {self.dtype.__name__} "
                                 f"array (got {col.dtype}, contiguous={col.flags.c_contiguous})")
            keep.append(col)
            pointers.append(ctypes.cast(col.ctypes.data, self._P))
        data = self.Data(*pointers, n)
        data._keep = keep
        return data

    def constants(self, values: Mapping[str, float] | None):
        """A <name>_constants (defaults where not given), or None = the defaults."""
        if not values:
            return None
        known = {c.name: c.default for c in self.program.constants}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown constant(s) {sorted(unknown)}; known: {sorted(known)}")
        known.update(values)
        return self.Constants(*(known[c.name] for c in self.program.constants))

    @staticmethod
    def _ptr(array: numpy.ndarray) -> int:
        return array.ctypes.data

    # -- calls -----------------------------------------------------------------------------
    def value_and_grad(self, theta: numpy.ndarray, data, constants=None,
                       grad: numpy.ndarray | None = None) -> tuple[float, numpy.ndarray]:
        theta = numpy.ascontiguousarray(theta, dtype=self.dtype)
        grad = numpy.empty(self.program.num_params, dtype=self.dtype) if grad is None else grad
        c = ctypes.byref(constants) if constants is not None else None
        value = self._vg(self._ptr(theta), ctypes.byref(data), c, self._ptr(grad))
        return float(value), grad

    def value_and_grad_indexed(self, theta, data, index: numpy.ndarray, constants=None,
                               grad=None) -> tuple[float, numpy.ndarray]:
        theta = numpy.ascontiguousarray(theta, dtype=self.dtype)
        index = numpy.ascontiguousarray(index, dtype=numpy.uintp)
        grad = numpy.empty(self.program.num_params, dtype=self.dtype) if grad is None else grad
        c = ctypes.byref(constants) if constants is not None else None
        value = self._vgi(self._ptr(theta), ctypes.byref(data), c,
                          index.ctypes.data, len(index),
                          self._ptr(grad))
        return float(value), grad

    def normal_equations(self, theta, data, constants=None):
        """(F, JᵀJ, Jᵀr) from ``<name>_normal_equations`` (Levenberg–Marquardt)."""
        theta = numpy.ascontiguousarray(theta, dtype=self.dtype)
        P = self.program.num_params
        jtj, jtr = numpy.empty((P, P), dtype=self.dtype), numpy.empty(P, dtype=self.dtype)
        c = ctypes.byref(constants) if constants is not None else None
        value = self._normal(self._ptr(theta), ctypes.byref(data), c, self._ptr(jtj),
                             self._ptr(jtr))
        return float(value), jtj, jtr

    def permutation(self, n: int, rng) -> numpy.ndarray:
        """The epoch order for ``rng`` (the generated module's SplitMix64, advanced in place):
        the same permutation as the module's ``permutation``, computed in C."""
        state = ctypes.c_uint64(rng.state)
        order = numpy.empty(n, dtype=numpy.uintp)
        self._perm(ctypes.byref(state), n, order.ctypes.data)
        rng.state = state.value
        return order

    def train(self, theta, data, constants=None, *, max_iterations: int,
              gradient_tolerance: float, objective_tolerance: float,
              on_iteration=None) -> tuple[numpy.ndarray, dict]:
        """Run ``<name>_train`` (the project's optimizer, batch size and seed as generated) on
        a copy of ``theta``; ``on_iteration(theta_now, report_dict)`` runs after every
        iteration and stops training by returning True. Returns (theta, report dict)."""
        theta = numpy.array(theta, dtype=self.dtype, copy=True)
        work = numpy.zeros(self.workspace_size + 64, dtype=numpy.uint8)
        address = work.ctypes.data + (-work.ctypes.data) % 64      # 64-byte aligned
        index = numpy.empty(max(data.n, 1), dtype=numpy.uintp)
        report = self.Report()
        failure = []

        def fields(r) -> dict:
            return {"iterations": r.iterations, "evaluations": r.evaluations,
                    "passes": r.passes, "objective": float(r.objective),
                    "gradient_norm": float(r.gradient_norm)}

        def ask(so_far, _ctx):
            if on_iteration is None:
                return 0
            try:
                return 1 if on_iteration(theta, fields(so_far.contents)) else 0
            except BaseException as err:        # never unwind through C: stop, re-raise after
                failure.append(err)
                return 1

        callback = self.Callback(ask)
        c = ctypes.byref(constants) if constants is not None else None
        status = self._train(self._ptr(theta), ctypes.byref(data), c, int(max_iterations),
                             float(gradient_tolerance), float(objective_tolerance),
                             index.ctypes.data, address, callback, None, ctypes.byref(report))
        if failure:
            raise failure[0]
        if status < 0:
            raise ValueError(f"{self.program.name}_train refused to start (status {status}): "
                             f"the initial parameters are outside the bounds")
        out = fields(report)
        out["reason"] = self._stop_name(status).decode()
        return theta, out

    def objective(self, theta, data, constants=None) -> float:
        theta = numpy.ascontiguousarray(theta, dtype=self.dtype)
        c = ctypes.byref(constants) if constants is not None else None
        return float(self._obj(self._ptr(theta), ctypes.byref(data), c))

    def predict(self, theta, data, constants=None) -> numpy.ndarray:
        theta = numpy.ascontiguousarray(theta, dtype=self.dtype)
        out = numpy.empty(data.n, dtype=self.dtype)
        c = ctypes.byref(constants) if constants is not None else None
        self._pred(self._ptr(theta), ctypes.byref(data), c, self._ptr(out))
        return out


def evaluation_program(program):
    """``program`` as the C backend emits it for evaluation only: the value, gradient and
    prediction do not depend on the optimizer or the bounds, which the Python driver applies,
    so a project that trains with lbfgs or has bounds (which the C trainer may not implement
    yet) still gets C-speed evaluations."""
    import dataclasses
    inf = float("inf")
    training = program.training
    if getattr(training, "method", "sgd") not in ("sgd", "momentum", "adam"):
        training = dataclasses.replace(training, method="sgd")
    parameters = tuple(dataclasses.replace(p, lower=(-inf,) * p.size, upper=(inf,) * p.size)
                       if hasattr(p, "lower") else p for p in program.parameters)
    return dataclasses.replace(program, training=training, parameters=parameters)


FIRST_ORDER = ("sgd", "momentum", "adam")


def train_helper_source(program) -> str:
    """A small C file compiled with the generated library: ``gradforge_train`` fills the
    options struct (whose layout depends on the method) from plain arguments and runs
    ``<name>_train``; ``gradforge_workspace_size`` tells ctypes how much to allocate."""
    p = program.name
    T = "float" if program.precision == "float32" else "double"
    first = getattr(program.training, "method", "sgd") in FIRST_ORDER
    return f"""\
/* gradforge train --backend c: <name>_train called from Python through ctypes. */
#include <stddef.h>
#include <stdint.h>

#include "{p}.h"

size_t gradforge_workspace_size(void);
int gradforge_train({T} *params, const {p}_data *d, const {p}_constants *c,
                    unsigned long max_iterations, double gradient_tolerance,
                    double objective_tolerance, size_t *index, {p}_workspace *work,
                    {p}_callback on_iteration, void *ctx, {p}_report *report);

size_t gradforge_workspace_size(void)
{{
    return sizeof({p}_workspace);
}}

int gradforge_train({T} *params, const {p}_data *d, const {p}_constants *c,
                    unsigned long max_iterations, double gradient_tolerance,
                    double objective_tolerance, size_t *index, {p}_workspace *work,
                    {p}_callback on_iteration, void *ctx, {p}_report *report)
{{
    {p}_train_options options = {p}_default_train_options();
    options.max_iterations = max_iterations;
    options.gradient_tolerance = ({T})gradient_tolerance;
    options.objective_tolerance = ({T})objective_tolerance;
{"    options.index = index;" if first else "    (void)index;"}
    {p}_workspace_init(work);
    return {p}_train(params, d, c, &options, work, on_iteration, ctx, report);
}}
"""


def load_c_model(program, files: Mapping[str, str] | None = None) -> CModel:
    """Emit (unless ``files`` are given), compile once (cached) and open the C library.

    When the C backend trains with the project's optimizer, the library includes its
    ``<name>_train`` (and ``CModel.can_train`` is true); otherwise it is built for evaluation
    only (see :func:`evaluation_program`) and the Python driver runs the optimizer."""
    from .api import emit
    from .errors import BackendError
    if files is None:
        try:
            files = dict(emit(program, "c"))
        except BackendError:
            files = None
        if files is not None and any("_train_options" in text for rel, text in files.items()
                                     if rel == f"{program.name}.h"):
            files["gradforge_train.c"] = train_helper_source(program)
        elif files is None:
            files = emit(evaluation_program(program), "c")
    return CModel(compile_library(files, program.name), program)
