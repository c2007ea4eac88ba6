"""``--engine dask``: the IR's map-reduce over samples, run on a Dask cluster.

Each evaluation maps the generated NumPy kernels over the partitions where they live (per
partition: the sum of the loss and of its gradient; Σr², JᵀJ and Jᵀr for Levenberg–Marquardt),
gathers the partial sums and adds them **in partition
order** on the driver, then applies the reduction (mean) and the regularizer. The optimizer
runs unchanged on the driver, so full-batch methods (lbfgs, lm, gradient descent with
``batch_size = 0``) give the in-memory iterates to rounding. Mini-batch optimizers are refused:
a mini-batch needs a global shuffle across partitions.

Partitions are the files, and the row groups of Parquet files: each worker reads its own
partitions once with pyarrow (data errors still name file, row and column) and keeps them in
memory for the whole run (``client.compute`` futures). A data set larger than the cluster's
memory therefore needs more workers, not a bigger driver.

``validation``: each partition holds out its own rows, a row when
``numpy.random.default_rng([seed, partition]).random() < validation`` (so about that fraction,
reproducibly, without a global permutation of data that may not fit anywhere).

Without ``scheduler`` a ``distributed.LocalCluster`` is started on this machine's cores (one
thread per worker process) and closed at the end; with ``scheduler="tcp://host:8786"`` the
run uses that cluster (the data paths must be readable by its workers).
"""
from __future__ import annotations

import hashlib
import os
import types

import numpy

from .data import DataError, check_columns, layouts, pieces, read_piece, resolve_files
from .errors import GradforgeError

_WORKER_MODULES: dict[str, types.ModuleType] = {}


def _module(source: str) -> types.ModuleType:
    """The generated NumPy module on a worker, built once per process from its text."""
    key = hashlib.sha256(source.encode()).hexdigest()
    module = _WORKER_MODULES.get(key)
    if module is None:
        module = types.ModuleType("gradforge_generated_dask")
        exec(compile(source, "<gradforge generated>", "exec"), module.__dict__)
        _WORKER_MODULES[key] = module
    return module


def _load(piece, fields, precision, drop_invalid, fraction, seed, position):
    """Read one partition; with ``fraction``, hold out its validation rows (a row is held out
    when numpy.random.default_rng([seed, position]).random() < fraction)."""
    blocks, n, dropped, _ = read_piece(piece, fields, precision, drop_invalid)
    if not fraction:
        return blocks, n, dropped, {}, 0
    held = numpy.random.default_rng([seed, position]).random(n) < fraction
    valid = {k: numpy.ascontiguousarray(v[held]) for k, v in blocks.items()}
    train = {k: numpy.ascontiguousarray(v[~held]) for k, v in blocks.items()}
    return train, n - int(held.sum()), dropped, valid, int(held.sum())


def _partial(part, theta, source, constants, with_gradient):
    """One partition's sums: (Σ loss, Σ ∂loss/∂θ or None, n)."""
    m = _module(source)
    blocks, n = part[0], part[1]
    if n == 0:
        return 0.0, (numpy.zeros(m.NUM_PARAMS, dtype=m.DTYPE) if with_gradient else None), 0
    c = m._constants(constants)
    with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if with_gradient:
            loss, grad = m._loss_and_gradient(theta, blocks, c, n)
            return loss, grad, n
        return m._total(m._loss(theta, blocks, c, n), n), None, n


def _partial_normal(part, theta, source, constants):
    """One partition's Levenberg–Marquardt sums, unscaled: (Σ r², JᵀJ, Jᵀr) over its samples."""
    m = _module(source)
    blocks, n = part[0], part[1]
    P = m.NUM_PARAMS
    F, JtJ, Jtr = 0.0, numpy.zeros((P, P), dtype=m.DTYPE), numpy.zeros(P, dtype=m.DTYPE)
    if n == 0:
        return F, JtJ, Jtr
    c = m._constants(constants)
    with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for kernel in m._SAMPLE_RESIDUALS:
            r, jac = kernel(theta, blocks, c, n)
            F += float(numpy.dot(r, r))
            JtJ += jac.T @ jac
            Jtr += jac.T @ r
    return F, JtJ, Jtr


def _partial_validation(part, theta, source, constants):
    """One partition's Σ loss over its held-out rows."""
    return _partial((part[3], part[4]), theta, source, constants, False)[0]


def _count(part):
    return part[1], part[2], part[4]


class DaskEvaluator:
    """value_and_grad / objective over data held by Dask workers."""

    name = "dask"

    def __init__(self, program, module, data, *, constants=None, scheduler=None,
                 workers=None, drop_invalid=False, validation=0.0, seed=0):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GradforgeError("--engine dask needs dask.distributed: "
                                 "pip install 'gradforge[dask]'") from None
        from .api import emit
        self.program, self.module = program, module
        self.constants = dict(constants or {})
        files = resolve_files(data)
        check_columns(files, program.fields)
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=30)
            except OSError as err:
                raise GradforgeError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        else:
            count = workers or os.cpu_count() or 1
            self.cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                        dashboard_address=":0")
            self.client = Client(self.cluster)
        try:
            source = next(iter(emit(program, "numpy").values()))
            self.source = self.client.scatter(source, broadcast=True)
            fields = layouts(program.fields)
            self.parts = [self.client.submit(_load, piece, fields, program.precision,
                                             drop_invalid, validation, seed, k, pure=False)
                          for k, piece in enumerate(pieces(files, split_row_groups=True))]
            counts = self.client.gather([self.client.submit(_count, p) for p in self.parts])
        except BaseException:
            self.close()
            raise
        self.n = sum(n for n, _, _ in counts)
        self.dropped = sum(d for _, d, _ in counts)
        self.validation_n = sum(v for _, _, v in counts)
        self.partitions = len(self.parts)
        if self.n == 0:
            self.close()
            raise DataError(f"{files[0]}: no valid rows")

    def _sums(self, theta, with_gradient):
        theta = numpy.asarray(theta, dtype=self.module.DTYPE)
        futures = [self.client.submit(_partial, p, theta, self.source, self.constants,
                                      with_gradient, pure=False) for p in self.parts]
        results = self.client.gather(futures)          # a list, in partition order
        m = self.module
        total = m.DTYPE(0)
        grad = numpy.zeros(m.NUM_PARAMS, dtype=m.DTYPE) if with_gradient else None
        for loss, g, _ in results:                     # fixed order: same sum every run
            total = total + loss
            if with_gradient:
                grad = grad + g
        return total, grad

    def _finish(self, theta, total, grad, with_gradient):
        """Reduction and regularizer on the driver, as the generated _value_and_grad_flat."""
        m = self.module
        if self.program.reduction == "mean":
            scale = m.DTYPE(1) / m.DTYPE(self.n)
            total = total * scale
            if with_gradient:
                grad = grad * scale
        if self.program.regularizer is not None:
            value, reg_grad = m._regularizer(theta, {}, m._constants(self.constants), 0)
            total = total + value
            if with_gradient:
                grad = grad + reg_grad
        return total, grad

    def value_and_grad(self, theta):
        theta = numpy.asarray(theta, dtype=self.module.DTYPE)
        total, grad = self._sums(theta, True)
        return self._finish(theta, total, grad, True)

    def objective(self, theta):
        theta = numpy.asarray(theta, dtype=self.module.DTYPE)
        total, _ = self._sums(theta, False)
        return self._finish(theta, total, None, False)[0]

    def normal_equations(self, theta):
        """(F, JᵀJ, Jᵀr) for Levenberg–Marquardt: partition sums in order, then the mean's
        1/n and the regularizer's residuals, as the generated _normal_flat."""
        m = self.module
        theta = numpy.asarray(theta, dtype=m.DTYPE)
        futures = [self.client.submit(_partial_normal, p, theta, self.source, self.constants,
                                      pure=False) for p in self.parts]
        F, JtJ, Jtr = 0.0, 0.0, 0.0
        for f, a, b in self.client.gather(futures):
            F, JtJ, Jtr = F + f, JtJ + a, Jtr + b
        if self.program.reduction == "mean":
            scale = 1.0 / self.n
            F, JtJ, Jtr = F * scale, JtJ * m.DTYPE(scale), Jtr * m.DTYPE(scale)
        c = m._constants(self.constants)
        for kernel in m._REGULARIZER_RESIDUALS:
            r, jac = kernel(theta, {}, c, 1)
            F += float(numpy.dot(r, r))
            JtJ = JtJ + jac.T @ jac
            Jtr = Jtr + jac.T @ r
        return F, JtJ, Jtr

    def validation_objective(self, theta):
        """J on the held-out rows (mean or sum of the loss, plus the regularizer)."""
        m = self.module
        theta = numpy.asarray(theta, dtype=m.DTYPE)
        futures = [self.client.submit(_partial_validation, p, theta, self.source,
                                      self.constants, pure=False) for p in self.parts]
        total = m.DTYPE(0)
        for loss in self.client.gather(futures):
            total = total + loss
        if self.program.reduction == "mean":
            total = total * (m.DTYPE(1) / m.DTYPE(max(self.validation_n, 1)))
        if self.program.regularizer is not None:
            total = total + m._regularizer(theta, {}, m._constants(self.constants), 0)[0]
        return total

    def close(self):
        client, cluster = getattr(self, "client", None), self.cluster
        self.client = self.cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
