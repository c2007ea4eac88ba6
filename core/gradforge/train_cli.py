"""``gradforge train`` and ``gradforge predict``: the command-line face of training.py.

Kept apart from cli.py so the commands that build code and the ones that run it evolve
separately; cli.py only registers these parsers and functions.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub) -> dict:
    """Add the ``train`` and ``predict`` subcommands; returns {name: function}."""
    train = sub.add_parser(
        "train", help="train the model on a CSV/Parquet file, folder or glob",
        description="Train through the generated code (NumPy module or compiled C) and write "
                    "params.json. Data columns: scalar fields by name, vector fields as x[0], "
                    "x[1], … (or x_0, x_1, …).")
    train.add_argument("project", type=Path,
                       help="project file, or a folder holding project.toml")
    train.add_argument("data", help="a .csv or .parquet file, a folder of them, or a glob")
    train.add_argument("--backend", choices=("numpy", "c"), default="numpy",
                       help="which generated code computes (default numpy)")
    train.add_argument("--engine", choices=("local", "dask"), default="local",
                       help="local (default) or dask: per-partition sums on a Dask cluster")
    train.add_argument("--scheduler", metavar="ADDRESS",
                       help="with --engine dask: a running scheduler (tcp://host:8786); "
                            "default: a LocalCluster on this machine's cores")
    train.add_argument("--workers", type=int, metavar="N",
                       help="with --engine dask and no --scheduler: LocalCluster workers")
    train.add_argument("--optimizer", help="override [training] optimizer")
    train.add_argument("--max-iterations", type=int, metavar="N",
                       help="stop after N iterations (epochs for first-order methods)")
    train.add_argument("--epochs", type=int, metavar="N", help="override [training] epochs")
    train.add_argument("--batch-size", type=int, metavar="N", help="0 = full batch")
    train.add_argument("--learning-rate", type=float, metavar="RATE",
                       help="override [training] learning_rate")
    train.add_argument("--seed", type=int,
                       help="override [training] seed (shuffling, validation split)")
    train.add_argument("--gradient-tolerance", type=float, metavar="TOL",
                       help="stop when the gradient's max-norm is at most TOL")
    train.add_argument("--objective-tolerance", type=float, metavar="TOL",
                       help="stop when the relative decrease is at most TOL")
    train.add_argument("--init", type=Path, metavar="PARAMS_JSON",
                       help="start from these parameters instead of the project's init")
    train.add_argument("--params-out", type=Path, default=Path("params.json"),
                       metavar="PARAMS_JSON", help="where to write the result (params.json; "
                       "a params.txt twin for C is written beside it)")
    train.add_argument("--validation", type=float, default=0.0, metavar="FRACTION",
                       help="hold out this seeded random fraction of the rows")
    train.add_argument("--drop-invalid", action="store_true",
                       help="skip rows with an empty or non-numeric cell (and say how many)")
    train.add_argument("--plot", type=Path, metavar="DIR",
                       help="write objective.png (and fit.png for one scalar input) to DIR")
    train.add_argument("--quiet", action="store_true", help="no progress, only the summary")

    predict = sub.add_parser("predict", help="predictions for the inputs in a data file")
    predict.add_argument("project", type=Path,
                         help="project file, or a folder holding project.toml")
    predict.add_argument("data", help="a .csv or .parquet file, a folder of them, or a glob")
    predict.add_argument("--params", type=Path, required=True, metavar="PARAMS_JSON",
                         help="trained parameters (params.json written by train)")
    predict.add_argument("--out", type=Path, default=Path("predictions.csv"), metavar="CSV",
                         help="where to write the predictions (default predictions.csv)")
    predict.add_argument("--backend", choices=("numpy", "c"), default="numpy",
                         help="which generated code computes (default numpy)")
    predict.add_argument("--drop-invalid", action="store_true",
                         help="skip rows with an empty or non-numeric cell (and say how many)")
    return {"train": cmd_train, "predict": cmd_predict}


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train
    result = train(
        args.project, args.data, backend=args.backend, engine=args.engine,
        scheduler=args.scheduler, workers=args.workers, optimizer=args.optimizer,
        max_iterations=args.max_iterations, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed,
        gradient_tolerance=args.gradient_tolerance,
        objective_tolerance=args.objective_tolerance, init=args.init,
        validation=args.validation, drop_invalid=args.drop_invalid,
        progress="quiet" if args.quiet else "auto", params_out=args.params_out,
        plot_dir=args.plot)
    if result.dropped:
        print(f"dropped {result.dropped} invalid row(s)", file=sys.stderr)
    print(result.summary())
    print(f"wrote {args.params_out}"
          + "".join(f", {p}" for p in getattr(result, "plots", [])))
    return 0 if result.reason != "non_finite" else 1


def cmd_predict(args: argparse.Namespace) -> int:
    from .training import predict
    values = predict(args.project, args.params, args.data, backend=args.backend,
                     drop_invalid=args.drop_invalid, out=args.out)
    print(f"wrote {args.out} ({len(values)} predictions)")
    return 0
