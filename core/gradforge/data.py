"""Training data from files: CSV or Parquet (one file, a folder, or a glob), read with pyarrow.

Column mapping (documented in docs/training.md):

* a scalar field ``y`` is the column ``y``;
* a vector field ``x`` of shape (3,) is the columns ``x[0]``, ``x[1]``, ``x[2]`` (``x_0``, ``x_1``,
  ``x_2`` are accepted too);
* a matrix field ``m`` of shape (2, 2) is ``m[0,0]``, ``m[0,1]``, … (or ``m[0][1]``, ``m_0_1``).

Other columns are ignored. Every problem is one line naming the file, the row (1-based, the
header not counted) and the column: a missing column (with a did-you-mean), a cell that is not
a number or is empty (``drop_invalid`` skips such rows and counts them), an empty file, or a
vector field with more columns than the model's shape.

Why pyarrow: its CSV reader is multi-threaded C++ (about 10× faster than the csv module on
10⁷ rows), it reads Parquet, and its columns become NumPy arrays without a copy.
"""
from __future__ import annotations

import glob as globmod
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy

from .errors import GradforgeError, did_you_mean

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DataError(GradforgeError):
    """A data file gradforge cannot use; the message is one line naming file, row and column."""


@dataclass(frozen=True)
class FieldColumns:
    """The columns a field is read from, in the field's flat (row-major) element order."""

    name: str
    role: str
    shape: tuple[int, ...]
    columns: tuple[str, ...]


@dataclass
class Dataset:
    """Columns as C-contiguous arrays of shape (n, field size), ready for every backend."""

    columns: dict[str, numpy.ndarray]
    n: int
    files: list[Path]
    dropped: int = 0
    mapping: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def arrays(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, numpy.ndarray]:
        """{field: array of shape (n,) + field shape} (views, no copy)."""
        return {name: col.reshape((self.n,) + tuple(shapes[name]))
                for name, col in self.columns.items()}

    def take(self, index: numpy.ndarray) -> "Dataset":
        return Dataset({k: numpy.ascontiguousarray(v[index]) for k, v in self.columns.items()},
                       len(index), self.files, self.dropped, self.mapping)


def pyarrow_modules():
    """pyarrow, pyarrow.csv, pyarrow.parquet, or a DataError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise DataError("reading data files needs pyarrow: pip install pyarrow") from None
    return pyarrow, pyarrow.csv, pyarrow.parquet


def resolve_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """DATA → sorted list of CSV/Parquet files (a file, a folder of them, or a glob)."""
    if isinstance(source, (list, tuple)):
        return [f for s in source for f in resolve_files(s)]
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{text}: folder has no .csv or .parquet files")
    elif path.is_file():
        files = [path]
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globmod.glob(text, recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{text}: no .csv or .parquet files match")
    else:
        raise DataError(f"{text}: no such file or folder")
    for f in files:
        if f.suffix.lower() not in SUFFIXES:
            raise DataError(f"{f}: unknown data format (use .csv or .parquet)")
    return files


_INDEXED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*?)(?P<index>(\[\d+(,\s*\d+)*\])+|(_\d+)+)$")


def _index_of(column: str) -> tuple[str, tuple[int, ...]] | None:
    """'x[1]' → ('x', (1,)); 'm[0,1]', 'm[0][1]', 'm_0_1' → ('m', (0, 1)); else None."""
    match = _INDEXED.match(column)
    if not match:
        return None
    return match["name"], tuple(int(i) for i in re.findall(r"\d+", match["index"]))


def map_columns(fields: Iterable, available: Sequence[str], where: str,
                need_targets: bool = True) -> list[FieldColumns]:
    """For each field, the columns that hold it; one-line DataError when one is missing."""
    present = set(available)
    mapped = []
    for f in fields:
        if f.role == "target" and not need_targets:
            continue
        shape = tuple(f.shape)
        if not shape:
            if f.name not in present:
                hint = did_you_mean(f.name, available)
                raise DataError(f"{where}: missing column '{f.name}' for {f.role} {f.name}"
                                + (f"; {hint}" if hint else "")
                                + f" (columns: {', '.join(available) or 'none'})")
            mapped.append(FieldColumns(f.name, f.role, shape, (f.name,)))
            continue
        columns = []
        for index in itertools.product(*(range(d) for d in shape)):
            styles = [f"{f.name}[{','.join(map(str, index))}]",
                      f"{f.name}{''.join(f'[{i}]' for i in index)}",
                      f"{f.name}_{'_'.join(map(str, index))}"]
            found = next((s for s in styles if s in present), None)
            if found is None:
                hint = did_you_mean(styles[0], available)
                raise DataError(f"{where}: missing column '{styles[0]}' for {f.role} {f.name} "
                                f"of shape {list(shape)} (also accepted: '{styles[-1]}')"
                                + (f"; {hint}" if hint else ""))
            columns.append(found)
        # more columns than the shape: a width mismatch, not a silent truncation
        extra = sorted(c for c in available
                       if (ix := _index_of(c)) and ix[0] == f.name and c not in columns
                       and (len(ix[1]) != len(shape) or any(i >= d for i, d in zip(ix[1], shape))))
        if extra:
            raise DataError(f"{where}: column '{extra[0]}' does not fit {f.role} {f.name} of "
                            f"shape {list(shape)} ({len(extra)} extra column(s)); change the "
                            f"field's shape in the project or drop the column")
        mapped.append(FieldColumns(f.name, f.role, shape, tuple(columns)))
    return mapped


def read_table(path: Path, columns: Sequence[str] | None = None):
    """One file as a pyarrow Table (CSV columns read as text when they are not numeric)."""
    pa, pacsv, papq = pyarrow_modules()
    kind = SUFFIXES[path.suffix.lower()]
    try:
        if kind == "parquet":
            return papq.read_table(path, columns=list(columns) if columns else None)
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (expected a header line and rows)")
        convert = pacsv.ConvertOptions(include_columns=list(columns) if columns else None,
                                       strings_can_be_null=True)
        return pacsv.read_csv(path, convert_options=convert)
    except DataError:
        raise
    except (pa.ArrowInvalid, OSError) as err:
        message = str(err).splitlines()[0]
        if "Empty CSV file" in message:
            raise DataError(f"{path}: empty file (expected a header line and rows)") from None
        raise DataError(f"{path}: cannot read ({message})") from None


def column_names(path: Path) -> list[str]:
    """The column names of one file (reads only the header / schema)."""
    pa, pacsv, papq = pyarrow_modules()
    if SUFFIXES[path.suffix.lower()] == "parquet":
        try:
            return list(papq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: cannot read ({str(err).splitlines()[0]})") from None
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (expected a header line and rows)")
    with open(path, newline="") as handle:
        header = handle.readline()
    if not header.strip():
        raise DataError(f"{path}: empty file (expected a header line and rows)")
    import csv
    return [c.strip() for c in next(csv.reader([header]))]


def _numeric(array, path: Path, column: str, dtype, drop_invalid: bool, row_offset: int = 0):
    """Column → (float ndarray, mask of invalid rows or None); a DataError on the first bad
    cell unless ``drop_invalid``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    kind = array.type
    if array.null_count == 0 and (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        # the common case: one copy, straight into the model's float type
        return numpy.asarray(array.to_numpy(), dtype=dtype), None
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    bad = None
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type) \
            or pa.types.is_boolean(array.type) or pa.types.is_null(array.type):
        values = array.cast(pa.float64())
    else:
        text = array.cast(pa.string())
        stripped = pc.utf8_trim_whitespace(text)
        # a cell converts when Python's float() accepts it (nan/inf included)
        parsed = []
        bad_rows = []
        for i, cell in enumerate(stripped.to_pylist()):
            try:
                parsed.append(float(cell) if cell not in (None, "") else math.nan)
                if cell in (None, ""):
                    bad_rows.append(i)
            except ValueError:
                parsed.append(math.nan)
                bad_rows.append(i)
                if not drop_invalid:
                    raise DataError(f"{path}: row {row_offset + i + 1}, column '{column}': {cell!r} is not "
                                    f"a number (fix the cell, or pass --drop-invalid to skip "
                                    f"such rows)") from None
        values = pa.array(parsed, pa.float64())
        if bad_rows:
            bad = numpy.zeros(len(parsed), dtype=bool)
            bad[bad_rows] = True
    nulls = values.is_null()
    if values.null_count:
        mask = numpy.asarray(nulls.to_numpy(zero_copy_only=False), dtype=bool)
        bad = mask if bad is None else (bad | mask)
    if bad is not None and bad.any() and not drop_invalid:
        row = int(numpy.argmax(bad))
        raise DataError(f"{path}: row {row_offset + row + 1}, column '{column}': empty cell (fill it, or "
                        f"pass --drop-invalid to skip such rows)")
    out = numpy.asarray(values.fill_null(math.nan).to_numpy(zero_copy_only=False), dtype=dtype)
    return out, bad


@dataclass(frozen=True)
class FieldLayout:
    """What reading needs to know about a field (picklable: Dask workers get these)."""

    name: str
    role: str
    shape: tuple[int, ...]


def layouts(fields: Sequence) -> tuple[FieldLayout, ...]:
    return tuple(FieldLayout(f.name, f.role, tuple(f.shape)) for f in fields)


@dataclass(frozen=True)
class Piece:
    """One unit of reading: a whole file, or one Parquet row group (rows counted from
    ``row_offset`` so errors name the row in the file)."""

    path: Path
    row_group: int | None = None
    row_offset: int = 0


def pieces(files: Sequence[Path], split_row_groups: bool = False) -> list[Piece]:
    """Files → pieces (Parquet row groups when ``split_row_groups``), in file order."""
    out = []
    for path in files:
        if split_row_groups and SUFFIXES[path.suffix.lower()] == "parquet":
            _, _, papq = pyarrow_modules()
            meta = papq.ParquetFile(path).metadata
            offset = 0
            for g in range(meta.num_row_groups):
                out.append(Piece(path, g, offset))
                offset += meta.row_group(g).num_rows
        else:
            out.append(Piece(path))
    return out


def check_columns(files: Sequence[Path], fields: Sequence, need_targets: bool = True) -> None:
    """Every file has every needed column (reads headers/schemas only)."""
    for path in files:
        map_columns(fields, column_names(path), str(path), need_targets)


def read_piece(piece: Piece, fields: Sequence, precision: str = "float64",
               drop_invalid: bool = False, need_targets: bool = True):
    """One piece → ({field: (rows, size) array}, rows, dropped, {field: column names})."""
    dtype = numpy.float32 if precision == "float32" else numpy.float64
    path = piece.path
    names = column_names(path)
    mapped = map_columns(fields, names, str(path), need_targets)
    wanted = [c for fc in mapped for c in fc.columns]
    if piece.row_group is None:
        table = read_table(path, wanted)
    else:
        _, _, papq = pyarrow_modules()
        table = papq.ParquetFile(path).read_row_group(piece.row_group, columns=wanted)
    if table.num_rows == 0 and piece.row_group is None:
        raise DataError(f"{path}: no rows (the file has a header only)")
    invalid = numpy.zeros(table.num_rows, dtype=bool)
    blocks, mapping = {}, {}
    for fc in mapped:
        cols = []
        for column in fc.columns:
            values, bad = _numeric(table.column(column), path, column, dtype, drop_invalid,
                                   piece.row_offset)
            if bad is not None:
                invalid |= bad
            cols.append(values)
        blocks[fc.name] = numpy.stack(cols, axis=1) if len(cols) > 1 else cols[0][:, None]
        mapping[fc.name] = fc.columns
    dropped = int(invalid.sum())
    if dropped:
        blocks = {k: v[~invalid] for k, v in blocks.items()}
    blocks = {k: numpy.ascontiguousarray(v, dtype=dtype) for k, v in blocks.items()}
    return blocks, table.num_rows - dropped, dropped, mapping


def read_dataset(source, fields: Sequence, precision: str = "float64",
                 drop_invalid: bool = False, need_targets: bool = True) -> Dataset:
    """Read every file of ``source`` and map its columns onto ``fields`` (IR or spec fields
    with ``name``, ``role``, ``shape``). Nothing is returned until every file has passed."""
    dtype = numpy.float32 if precision == "float32" else numpy.float64
    files = resolve_files(source)
    check_columns(files, fields, need_targets)
    parts: dict[str, list[numpy.ndarray]] = {}
    dropped = 0
    mapping: dict[str, tuple[str, ...]] = {}
    for piece in pieces(files):
        blocks, _, lost, mapping = read_piece(piece, fields, precision, drop_invalid,
                                              need_targets)
        dropped += lost
        for name, block in blocks.items():
            parts.setdefault(name, []).append(block)
    columns = {name: numpy.ascontiguousarray(numpy.concatenate(blocks) if len(blocks) > 1
                                             else blocks[0], dtype=dtype)
               for name, blocks in parts.items()}
    n = next(iter(columns.values())).shape[0] if columns else 0
    if n == 0:
        raise DataError(f"{files[0]}: no valid rows" + (f" ({dropped} dropped as invalid)"
                                                         if dropped else ""))
    return Dataset(columns, n, files, dropped, mapping)


def split(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(training, validation): a seeded random ``fraction`` of the rows is held out.

    The held-out rows are the first ⌈fraction·n⌉ of ``numpy.random.default_rng(seed)
    .permutation(n)``; both parts keep the file order of their rows."""
    if not fraction:
        return dataset, None
    if not 0 < fraction < 1:
        raise DataError(f"--validation {fraction}: expected a fraction between 0 and 1")
    n = dataset.n
    held = math.ceil(fraction * n)
    if held >= n:
        raise DataError(f"--validation {fraction} leaves no training rows out of {n}")
    order = numpy.random.default_rng(seed).permutation(n)
    validation = numpy.sort(order[:held])
    training = numpy.sort(order[held:])
    return dataset.take(training), dataset.take(validation)
