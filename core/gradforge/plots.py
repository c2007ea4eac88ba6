"""Plots of a training run, written as PNG files (``gradforge train --plot DIR``).

* ``objective.png``: the objective per iteration (training and, with --validation, validation);
* ``fit.png``: for a model with one scalar input and one scalar target, the data and the fitted
  curve (not with ``--engine dask``, whose data stays on the workers).

matplotlib is an optional extra (``pip install 'gradforge[plot]'``); the Agg backend draws to
files only, so no display is needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy

from .errors import GradforgeError

MAX_POINTS = 5000   # a scatter of 10⁷ points says nothing more than 5,000 and takes minutes


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise GradforgeError("--plot needs matplotlib: pip install 'gradforge[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plots(folder, result, program, module, dataset) -> list[Path]:
    """Write the plots for ``result``; returns the files written."""
    from .training import predict_numpy
    plt = require_matplotlib()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    its = [h.iteration for h in result.history]
    ax.plot(its, [h.objective for h in result.history], label="training")
    if any(h.validation_objective is not None for h in result.history):
        ax.plot(its, [h.validation_objective for h in result.history], label="validation")
    values = [h.objective for h in result.history if numpy.isfinite(h.objective)]
    if values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("objective")
    ax.set_title(f"{program.name}: {result.optimizer}, stopped by {result.reason}")
    written.append(_save(plt, fig, ax, folder / "objective.png"))

    scalar_inputs = [f for f in program.inputs if f.size == 1]
    if dataset is not None and len(program.inputs) == 1 and scalar_inputs and len(program.targets) == 1 \
            and program.targets[0].size == 1:
        x_field, y_field = program.inputs[0], program.targets[0]
        x = dataset.columns[x_field.name][:, 0]
        y = dataset.columns[y_field.name][:, 0]
        if len(x) > MAX_POINTS:
            pick = numpy.random.default_rng(0).choice(len(x), MAX_POINTS, replace=False)
            x, y = x[pick], y[pick]
        grid = numpy.linspace(float(x.min()), float(x.max()), 400).astype(module.DTYPE)
        curve = predict_numpy(module, program, result.theta, {x_field.name: grid[:, None]},
                              len(grid))
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(x, y, s=6, alpha=0.5, label="data")
        ax.plot(grid, curve, color="C3", label="fitted")
        ax.set_xlabel(x_field.name)
        ax.set_ylabel(y_field.name)
        ax.set_title(f"{program.name}: prediction after training")
        written.append(_save(plt, fig, ax, folder / "fit.png"))
    return written


def _save(plt, fig, ax, path: Path) -> Path:
    """Legend, layout, one PNG at 100 dpi, and the figure closed (matplotlib keeps it otherwise)."""
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
