"""Table files (Table -> file step): the canonical JSON and the same content as YAML, NPZ, CSV
and a C/CUDA header; the bundle, many tables in one compact JSON (the shipped tables); and a
text summary for people (write-only). One module per family; the dispatch is here.

Every table format round-trips a Table bit-exactly (floats are written as Python's shortest
round-trip ``repr``, or stored as raw float64 in NPZ). Every reader validates through
``Table.from_dict`` and fails with a one-line FewbitError naming the file and the field.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import math
import os

from ..errors import FewbitError
from .._atomic import atomic_write
from ..table import FORMATS, Table
from ._common import ARRAYS, _one_line
from .bundle import BUNDLE_FORMAT, read_bundle, write_bundle
from .c_header import _c_identifier, _c_name_for, _dump_header, _load_header
from .csv_rows import _dump_csv, _load_csv
from .npz_archive import _dump_npz, _load_npz
from .summary import format_text
from .text_dicts import _dump_json, _dump_yaml, _load_json, _load_yaml

__all__ = ["FORMATS", "OUTPUT_FORMATS", "EXTENSIONS", "ARRAYS", "BUNDLE_FORMAT", "MAX_TABLE_BYTES",
           "format_from_path", "dumps", "loads", "write_table", "read_table", "write_bundle",
           "read_bundle", "format_text"]

OUTPUT_FORMATS = ("text", *FORMATS)     # what dumps and write_table write; text is not read back
EXTENSIONS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".npz": "npz",
              ".csv": "csv", ".h": "h", ".cuh": "h"}
MAX_TABLE_BYTES = 64 * 2 ** 20     # a table file, and what an NPZ table may inflate to

_TEXT_DUMPERS = {"json": _dump_json, "yaml": _dump_yaml, "csv": _dump_csv}
_TEXT_LOADERS = {"json": _load_json, "yaml": _load_yaml, "csv": _load_csv, "h": _load_header}


def format_from_path(path: str | os.PathLike) -> str:
    """The format named by a file's extension (.json .yaml/.yml .npz .csv .h/.cuh)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in EXTENSIONS:
        raise FewbitError(f"{os.fspath(path)}: cannot tell the table format from the extension "
                          f"{ext or '(none)'!r}; name one of {', '.join(FORMATS)}")
    return EXTENSIONS[ext]


def _check_format(fmt: str) -> str:
    """`fmt` if it names a table file format; "text" (written, never read) is not one."""
    if fmt == "text":
        raise FewbitError(f"the text summary is not read back; expected one of {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise FewbitError(f"unknown table format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def dumps(table: Table, fmt: str, *, c_name: str | None = None) -> bytes:
    """Serialise `table` in format `fmt` (or "text", the summary). `c_name` sets the C identifier
    prefix (format "h")."""
    if fmt == "text":
        return format_text(table).encode()
    _check_format(fmt)
    if fmt == "npz":
        return _dump_npz(table.to_dict())
    if fmt in _TEXT_DUMPERS:
        return _TEXT_DUMPERS[fmt](table.to_dict()).encode()
    return _dump_header(table.to_dict(), c_name or _c_name_for(table)).encode()


def loads(data: bytes, fmt: str, *, source: str = "table") -> Table:
    """Parse and validate a table; raise FewbitError naming `source` and the field."""
    _check_format(fmt)
    try:
        if fmt == "npz":
            d = _load_npz(data, source, MAX_TABLE_BYTES)
        else:
            d = _TEXT_LOADERS[fmt](_decode(data, source), source)
        _check_solver(d, source)
        return Table.from_dict(d, source=source)
    except FewbitError:
        raise
    except (ValueError, TypeError, OverflowError, KeyError, IndexError, RecursionError) as e:
        # A safety net: malformed content that slipped past the field checks.
        raise FewbitError(f"{source}: malformed {fmt} table ({type(e).__name__}: {_one_line(e)})") from None


def write_table(table: Table, path: str | os.PathLike, fmt: str | None = None, *,
                base: str | os.PathLike | None = None) -> str:
    """Write `table` to `path` atomically; the format comes from the extension unless given.

    A header's C prefix is ``fewbit_`` + the file's name. With `base`, the folder that a relative
    samples path of `table` is relative to (``os.curdir`` for a table from design()), that path
    is written relative to the file's folder, where check_table and plot_table look for it;
    without, it is written as it is (a table read from a file beside this one).
    """
    path = os.fspath(path)
    fmt = fmt if fmt == "text" else _check_format(fmt) if fmt else format_from_path(path)
    if base is not None:
        table = _samples_relative_to(table, base, os.path.dirname(os.path.abspath(path)))
    stem = os.path.splitext(os.path.basename(path))[0]
    atomic_write(path, dumps(table, fmt, c_name=_c_identifier(f"fewbit_{stem}")))
    return path


def _samples_relative_to(table: Table, base, folder: str) -> Table:
    """`table` with its samples path, if relative (to `base`), made relative to `folder`."""
    if table.distribution != "samples" or os.path.isabs(table.dist_params["path"]):
        return table
    rel = os.path.relpath(os.path.abspath(os.path.join(base, table.dist_params["path"])), folder)
    return dataclasses.replace(table, dist_params={**table.dist_params, "path": rel})


def read_table(path: str | os.PathLike, fmt: str | None = None) -> Table:
    """Read and validate a table file; the format comes from the extension unless given."""
    path = os.fspath(path)
    fmt = _check_format(fmt) if fmt else format_from_path(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_TABLE_BYTES:
            raise FewbitError(f"{path}: {size / 2**20:.0f} MiB, over the table limit of "
                              f"{MAX_TABLE_BYTES / 2**20:.0f} MiB")
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise FewbitError(f"{path}: cannot read ({e.strerror or e})") from None
    return loads(data, fmt, source=path)


# -- what loads checks in every text format ----------------------------------------------

def _decode(data: bytes, source: str) -> str:
    if not isinstance(data, (bytes, bytearray)):
        raise FewbitError(f"{source}: expected bytes, got {type(data).__name__}")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FewbitError(f"{source}: not UTF-8 text (byte {e.start})") from None


def _check_solver(d, source: str) -> None:
    """The solver block is free-form but must stay plain, finite JSON."""
    if not isinstance(d, dict) or "solver" not in d:
        return

    budget = [100_000]      # YAML aliases can make a small file a huge tree

    def walk(v, where):
        budget[0] -= 1
        if budget[0] < 0:
            raise FewbitError(f"{source}: field 'solver' is too large")
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise FewbitError(f"{source}: field '{where}' has a non-string key {k!r}")
                walk(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise FewbitError(f"{source}: field '{where}' must be finite, got {v!r}")
        elif not (v is None or isinstance(v, (str, int, bool))):
            raise FewbitError(f"{source}: field '{where}' must be plain JSON, got {type(v).__name__}")

    walk(d["solver"], "solver")
