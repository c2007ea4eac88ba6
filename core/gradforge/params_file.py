"""Trained parameters on disk: ``params.json`` (every backend reads it) and its plain-text twin.

Why a file format of our own: a model trained in Python must be loadable by the Swift package
on a phone and by the C library on a board, and must never be loaded into a *different* model
by mistake. So the file carries the model's hash (of the parts that give parameters their
meaning: parameter names and shapes, fields, constants, the model's expressions) and values as
flat row-major lists, which every language reads without a tensor library::

    {"format": "gradforge-params/1", "project": "trend", "model_hash": "6c0f…",
     "precision": "float64",
     "parameters": [{"name": "a", "shape": [], "values": [0.49]}, …],
     "objective": 0.12, "validation_objective": null, "stop_reason": "max_iterations",
     "optimizer": "adam", "iterations": 200}

``params.txt`` (written alongside) holds the same values for C, which has no JSON parser::

    gradforge-params 1
    model_hash 6c0f…
    a 1 0.49
    W 24 0.1 0.2 …

Values are written with 17 significant digits (exact round trip of a float64).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import GradforgeError
from .writer import file_mode

FORMAT = "gradforge-params/1"


class ParamsFileError(GradforgeError):
    """A parameters file that cannot be used (unreadable, malformed, another model)."""


def model_hash(spec) -> str:
    """16 hex digits identifying what gives the parameters their meaning.

    Initial values, training settings, backends and precision are left out: parameters trained
    with another optimizer, or in float64 for a float32 build, still fit the model.
    Whitespace in expressions is ignored.
    """
    def text(s: str | None) -> str | None:
        return None if s is None else "".join(s.split())
    m = spec.model
    canonical = {
        "parameters": [[p.name, list(p.shape)] for p in spec.parameters],
        "inputs": [[f.name, list(f.shape)] for f in spec.inputs],
        "targets": [[f.name, list(f.shape)] for f in spec.targets],
        "constants": [c.name for c in spec.constants],
        "definitions": [[k, text(v)] for k, v in m.definitions],
        "prediction": text(m.prediction), "loss": text(m.loss),
        "regularization": text(m.regularization), "reduction": m.reduction,
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class ParamsFile:
    """The content of a params.json: values by name (flat, row-major) plus provenance."""

    project: str
    model_hash: str
    shapes: dict[str, tuple[int, ...]]
    values: dict[str, list[float]]
    precision: str = "float64"
    info: dict[str, Any] = field(default_factory=dict)   # objective, stop_reason, …

    def flat(self, order: Sequence[str]) -> list[float]:
        """The flat parameter vector θ in ``order`` (declaration order)."""
        return [v for name in order for v in self.values[name]]


def _number(value: float | None) -> float | None:
    """JSON has no NaN/inf: non-finite numbers are written as null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def to_json(pf: ParamsFile) -> str:
    doc = {"format": FORMAT, "project": pf.project, "model_hash": pf.model_hash,
           "precision": pf.precision,
           "parameters": [{"name": name, "shape": list(pf.shapes[name]),
                           "values": [float(v) for v in pf.values[name]]}
                          for name in pf.shapes]}
    for key, value in pf.info.items():
        doc[key] = _number(value) if isinstance(value, float) else value
    return dumps(doc)


def dumps(doc: Mapping[str, Any]) -> str:
    """JSON with one line per top-level key and one line per parameter (readable diffs, and
    a 10⁴-parameter file is not 10⁴ lines)."""
    items = list(doc.items())
    lines = ["{"]
    for i, (key, value) in enumerate(items):
        if key == "parameters":
            body = ",\n".join("  " + json.dumps(e, allow_nan=False) for e in value)
            text = f' "parameters": [\n{body}\n ]'
        else:
            text = f" {json.dumps(key)}: {json.dumps(value, allow_nan=False)}"
        lines.append(text + ("," if i < len(items) - 1 else ""))
    return "\n".join(lines + ["}"]) + "\n"


def to_text(pf: ParamsFile) -> str:
    lines = ["gradforge-params 1", f"model_hash {pf.model_hash}"]
    for name in pf.shapes:
        values = pf.values[name]
        lines.append(" ".join([name, str(len(values)), *(repr(float(v)) for v in values)]))
    return "\n".join(lines) + "\n"


def refuse_special(path: Path) -> None:
    """Writing is atomic (a temporary file renamed over the target): never rename over a
    device, pipe or folder such as /dev/null."""
    if path.exists() and not path.is_file():
        raise ParamsFileError(f"{path}: not a regular file; give a file path to write to")


def text_twin(path: str | Path) -> Path:
    """``params.json`` → ``params.txt`` (the plain-text twin C reads)."""
    return Path(path).with_suffix(".txt")


def write(path: str | Path, pf: ParamsFile, twin: bool = True) -> list[Path]:
    """Write params.json (and its .txt twin) atomically; returns the paths written."""
    path = Path(path)
    texts = {path: to_json(pf)}
    if twin:
        texts[text_twin(path)] = to_text(pf)
    for target in texts:
        refuse_special(target)
    for target, content in texts.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            os.fchmod(fd, file_mode())       # the umask's mode, not mkstemp's 0600
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    return list(texts)


def read(path: str | Path, expect_hash: str | None = None,
         shapes: Mapping[str, tuple[int, ...]] | None = None) -> ParamsFile:
    """Read and check a params.json; a different model's file is refused with one line."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamsFileError(f"{path}: no such parameters file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ParamsFileError(f"{path}: not a gradforge parameters file ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ParamsFileError(f"{path}: not a gradforge parameters file "
                              f"(expected \"format\": \"{FORMAT}\")")
    found = doc.get("model_hash")
    if expect_hash is not None and found != expect_hash:
        raise ParamsFileError(
            f"{path}: parameters of another model (model_hash {found}, this project's model "
            f"is {expect_hash}; project {doc.get('project')!r}); train this project first")
    pf = ParamsFile(project=str(doc.get("project")), model_hash=str(found), shapes={},
                    values={}, precision=str(doc.get("precision", "float64")),
                    info={k: v for k, v in doc.items()
                          if k not in ("format", "project", "model_hash", "precision",
                                       "parameters")})
    try:
        for entry in doc["parameters"]:
            name, shape = str(entry["name"]), tuple(int(s) for s in entry["shape"])
            values = [float(v) for v in entry["values"]]
            if len(values) != math.prod(shape):
                raise ParamsFileError(f"{path}: parameter {name!r} has {len(values)} values, "
                                      f"shape {list(shape)} needs {math.prod(shape)}")
            pf.shapes[name], pf.values[name] = shape, values
    except (KeyError, TypeError, ValueError) as err:
        raise ParamsFileError(f"{path}: malformed \"parameters\" list ({err})") from None
    if shapes is not None:
        for name, shape in shapes.items():
            if name not in pf.shapes:
                raise ParamsFileError(f"{path}: parameter {name!r} is missing")
            if tuple(pf.shapes[name]) != tuple(shape):
                raise ParamsFileError(f"{path}: parameter {name!r} has shape "
                                      f"{list(pf.shapes[name])}, the model's is {list(shape)}")
    return pf
