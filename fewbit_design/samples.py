"""Empirical input weights (input step): values with optional weights, read from files or arrays.

The objective over samples is the weighted mean Σ wᵢ (f'(xᵢ) − q(xᵢ))² / Σ wᵢ. Files are
checked (size, archive members) before they are read, and no code in them runs; .pt files are
read by fewbit_design.torch.samples, loaded only for them.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile

import numpy as np

from .errors import FewbitError


class Samples:
    """An empirical input distribution: values with optional non-negative weights.

    The objective is the weighted mean over the values, Σ wᵢ (f'(xᵢ) − q(xᵢ))² / Σ wᵢ, with
    wᵢ = 1 for plain samples (so integer weights are the same as repeated values).

    Attributes
    ----------
    values : numpy.ndarray
        Sorted, finite, read-only float64 values.
    weights : numpy.ndarray or None
        Positive, finite, read-only float64 weights aligned with `values`; None for plain samples.
    params : dict
        ``{"path": str, "count": int, "sha256": str}``, plus ``"weighted": 1`` with weights; the
        digest is over ``values.tobytes()`` (then ``weights.tobytes()``).
    spec : str
        ``"samples:PATH"``.
    """

    name = "samples"

    def __init__(self, values: np.ndarray, path: str, weights: np.ndarray | None = None):
        values = np.ascontiguousarray(values, dtype=np.float64)
        values.setflags(write=False)
        self.values = values
        h = hashlib.sha256(values.tobytes())
        if weights is not None:
            weights = np.ascontiguousarray(weights, dtype=np.float64)
            if weights.shape != values.shape:
                raise FewbitError(f"{path}: {weights.size} weights for {values.size} values")
            weights.setflags(write=False)
            h.update(weights.tobytes())
        self.weights = weights
        self.params = {"path": path, "count": int(values.size), "sha256": h.hexdigest()}
        if weights is not None:
            self.params["weighted"] = 1

    @property
    def spec(self) -> str:
        return f"samples:{self.params['path']}"

    def to_dict(self) -> dict:
        """``{"name": "samples", "params": {"path", "count", "sha256"[, "weighted"]}}``."""
        return {"name": self.name, "params": dict(self.params)}

    def __eq__(self, other) -> bool:
        return isinstance(other, Samples) and self.params["sha256"] == other.params["sha256"]

    def __hash__(self) -> int:
        return hash(self.params["sha256"])

    def __repr__(self) -> str:
        w = ", weighted" if self.weights is not None else ""
        return f"Samples({self.params['path']!r}, count={self.values.size}{w})"


def _checked(values, source: str, weights=None):
    """Flattened finite float64 values, sorted; FewbitError for anything unusable.

    With `weights` (same size, finite, >= 0) returns ``(values, weights)``: values without
    weight are dropped, and the weights follow their values through the sort.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise FewbitError(f"{source}: values must be numeric (int or float), got dtype {values.dtype}")
    values = values.astype(np.float64).ravel()
    n = values.size
    if n == 0:
        raise FewbitError(f"{source}: no values")
    if weights is not None:
        weights = _checked_weights(weights, n, source)
    finite = np.isfinite(values)
    k = n - int(finite.sum())
    if k == n:
        raise FewbitError(f"{source}: all {n} values are NaN or infinite")
    if k:
        warnings.warn(f"{source}: dropped {k} non-finite values of {n}", stacklevel=3)
        values = values[finite]
        weights = None if weights is None else weights[finite]
    if weights is not None:
        live = weights > 0
        if not live.any():
            raise FewbitError(f"{source}: every weight of a finite value is 0")
        order = np.argsort(values[live], kind="stable")
        values, weights = values[live][order], weights[live][order]
    else:
        values = np.sort(values)
    if values[0] == values[-1]:
        raise FewbitError(f"{source}: all values are equal ({values[0]!r}); need a spread")
    return values if weights is None else (values, weights)


def _checked_weights(weights, n: int, source: str) -> np.ndarray:
    weights = np.asarray(weights)
    if weights.dtype.kind not in "fiu":
        raise FewbitError(f"{source}: weights must be numeric (int or float), got dtype {weights.dtype}")
    weights = weights.astype(np.float64).ravel()
    if weights.size != n:
        raise FewbitError(f"{source}: {weights.size} weights for {n} values")
    if not np.all(np.isfinite(weights)):
        raise FewbitError(f"{source}: weights must be finite")
    if np.any(weights < 0):
        raise FewbitError(f"{source}: weights must be >= 0, got {weights.min()!r}")
    return weights


MAX_SAMPLES_BYTES = 2 ** 28     # 256 MiB of values (33M float64), checked before reading or inflating
_HEADER = re.compile(r"[\"']?[A-Za-z_][\w .\-]*[\"']?")


def _check_size(path: str, nbytes: int, what: str) -> None:
    if nbytes > MAX_SAMPLES_BYTES:
        raise FewbitError(f"{path}: {what} {nbytes / 2**20:.0f} MiB, over the samples limit of "
                          f"{MAX_SAMPLES_BYTES / 2**20:.0f} MiB")


def _check_zip_members(path: str) -> None:
    """Refuse archives whose members would inflate beyond the limit (checked before inflating)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            _check_size(path, sum(i.file_size for i in zf.infolist()), "inflates to")


def _read_text(path: str, csv: bool) -> np.ndarray:
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    values, header_ok = [], csv
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values.append(float(line))
        except ValueError:
            # only a first line that reads as a column name is a header; anything else is bad data
            if header_ok and not values and _HEADER.fullmatch(line):
                header_ok = False
                continue
            raise FewbitError(f"{path}: line {i} is not a number: {line[:40]!r}") from None
        header_ok = False
    return np.array(values, dtype=np.float64)


def _read_npy(path: str) -> np.ndarray:
    with open(path, "rb") as fh:   # our handle: np.load leaks its own on a corrupt file
        values = np.load(fh, allow_pickle=False)
    if not isinstance(values, np.ndarray):   # np.load also opens zip archives
        raise FewbitError(f"{path}: not a .npy array file (an .npz archive?)")
    return values


def _read_npz(path: str, key: str | None) -> np.ndarray:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
        keys = list(npz.files)
        if key is None and sorted(keys) == ["values", "weights"]:
            return npz["values"], npz["weights"]     # weighted samples
        if key is None and len(keys) != 1:
            raise FewbitError(f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                              f"pick one with samples:{path}#KEY")
        if key is not None and key not in keys:
            raise FewbitError(f"{path}: no array {key!r}; it holds {', '.join(keys) or 'none'}")
        return npz[keys[0] if key is None else key]


def _read_torch(path: str) -> np.ndarray:
    try:
        from .torch.samples import read_samples
    except ImportError:
        raise FewbitError(f"{path}: reading .pt/.pth files needs torch (pip install torch)") from None
    return read_samples(path)


def load_samples(path: str) -> np.ndarray:
    """Read sample values from a file: sorted finite float64, non-finite ones dropped with a warning.

    A weighted file (an ``.npz`` holding exactly ``values`` and ``weights``) is refused here:
    read it with `read_samples`.

    Parameters
    ----------
    path : str
        ``.npy``, ``.npz`` (``file.npz#KEY`` picks an array), ``.pt``/``.pth`` (a tensor, or a
        dict/list holding exactly one), ``.csv``/``.txt`` (one value a line, ``#`` comments; a
        ``.csv`` may start with a header line). Any shape is flattened; no code in the file runs.

    Raises
    ------
    FewbitError
        Missing, unreadable or corrupt file, unknown extension, non-numeric values, no finite
        values, or all values equal.
    """
    values = _load(path)
    if isinstance(values, tuple):
        raise FewbitError(f"{os.fspath(path)}: holds values and weights; read it with read_samples")
    return _checked(values, os.fspath(path))


def read_samples(path: str) -> Samples:
    """`Samples` from a file: plain values (see `load_samples`), or weighted ones from an
    ``.npz`` holding exactly two arrays, ``values`` and ``weights`` (same size, finite, >= 0).
    """
    path = os.fspath(path)
    data = _load(path)
    if isinstance(data, tuple):
        values, weights = _checked(data[0], path, data[1])
        return Samples(values, path, weights)
    return Samples(_checked(data, path), path)


def _load(path):
    """The raw array of a samples file, or (values, weights) for a weighted .npz."""
    path = os.fspath(path)
    file, key = path, None
    if "#" in path and path.rsplit("#", 1)[0].lower().endswith(".npz"):
        file, key = path.rsplit("#", 1)
    ext = os.path.splitext(file)[1].lower()
    if not os.path.exists(file):
        raise FewbitError(f"{file}: no such file")
    if os.path.isdir(file):
        raise FewbitError(f"{file}: is a directory, not a samples file")
    _check_size(file, os.path.getsize(file), "is")
    if ext in (".npz", ".pt", ".pth"):
        try:
            _check_zip_members(file)
        except FewbitError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            pass                          # not a readable archive: the reader says what is wrong
    readers = {".npy": lambda: _read_npy(file), ".npz": lambda: _read_npz(file, key),
               ".pt": lambda: _read_torch(file), ".pth": lambda: _read_torch(file),
               ".csv": lambda: _read_text(file, csv=True), ".txt": lambda: _read_text(file, csv=False)}
    if ext not in readers:
        raise FewbitError(f"{file}: unknown samples extension {ext or '(none)'!r}; "
                          f"use one of {', '.join(readers)}")
    try:
        values = readers[ext]()
    except FewbitError:
        raise
    except Exception as exc:  # corrupt or unreadable: report, never a traceback
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FewbitError(f"{file}: cannot read {ext} file: {detail}") from None
    return values


def samples_from_array(values, *, weights=None, source: str = "array") -> Samples:
    """A `Samples` from an array-like, with the same checks as `load_samples`.

    Parameters
    ----------
    values : array-like
        Numeric values of any shape.
    weights : array-like, optional
        Non-negative finite weights, one per value (any shape of the same size); values of
        weight 0 are dropped. Integer weights are the same as repeating values.
    source : str
        Name used in `params["path"]` and in messages.
    """
    if weights is None:
        return Samples(_checked(values, source), source)
    values, weights = _checked(values, source, weights)
    return Samples(values, source, weights)


__all__ = ["MAX_SAMPLES_BYTES", "Samples", "load_samples", "read_samples", "samples_from_array"]
