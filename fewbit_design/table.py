"""The Table (designer output, runtime input): the one contract between the designer, the files
and the runtime.

Interval convention: the interval of x is the number of boundaries <= x
(``np.searchsorted(boundaries, x, side="right")``), so interval 0 is (-inf, b[0]) and
interval m-1 is [b[m-2], +inf). NaN falls in the last interval.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import FewbitError
from .labels import format_params, label   # noqa: F401  (re-exported: table.format_params, table.label)

FORMAT_NAME = "fewbit-table"
FORMAT_VERSION = 1

# The rules of the contract, defined here once and imported wherever they are checked or offered
MIN_BITS, MAX_BITS = 1, 8                   # code widths: 1..8 bits (uint8 codes, <= 256 levels)
BITS = range(MIN_BITS, MAX_BITS + 1)
PARTITIONS = ("contiguous", "levelset")     # what a Table can be
PARTITION_CHOICES = (*PARTITIONS, "auto")   # what design() takes: auto keeps the better of the two
FORMATS = ("json", "yaml", "npz", "csv", "h")   # table files (the formats package writes and reads each)


def check_bits(bits, what: str = "bits") -> int:
    """`bits` as an int when it is an integer in 1..8; else FewbitError (a ValueError) naming `what`."""
    # plain comparisons, which torch.compile traces (it does not trace `in range`)
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise FewbitError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits if isinstance(bits, int) else int(bits)


def parse_bits(spec) -> list[int]:
    """``"1-8"`` -> [1..8]; ``"1,2,4"``, ``3`` or ``[1, 2]`` likewise; each in 1..8."""
    if isinstance(spec, bool):
        raise FewbitError(f"bits: expected {MIN_BITS}..{MAX_BITS}, a range like 1-8 or a list, got {spec!r}")
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, list):
        items = []
        for v in spec:
            items += parse_bits(v)
    elif isinstance(spec, str):
        items = []
        for part in spec.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m:
                raise FewbitError(f"bits: cannot read {spec!r} (expected e.g. 1-8 or 1,2,4)")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo > hi:
                raise FewbitError(f"bits: empty range {part.strip()!r}")
            items += range(lo, hi + 1)
    else:
        raise FewbitError(f"bits: expected {MIN_BITS}..{MAX_BITS}, a range like 1-8 or a list, got {spec!r}")
    for b in items:
        if not MIN_BITS <= b <= MAX_BITS:
            raise FewbitError(f"bits: {b} is outside {MIN_BITS}..{MAX_BITS}")
    return sorted(set(items))


@dataclass(frozen=True, eq=False)
class Table:
    """An optimal (or given) piecewise-constant replacement q of f'.

    Attributes
    ----------
    activation, params : the activation's registry name and its parameter values.
    bits : code width b; at most 2**b levels.
    distribution, dist_params : the input weight the table was designed for.
    partition : "contiguous" (code = interval index) or "levelset" (a code may cover
        several intervals).
    boundaries : (m-1,) float64, strictly ascending.
    codes : (m,) int64, interval -> code, each in [0, len(levels)).
    levels : (L,) float64, code -> derivative value, L <= 2**bits.
    mse : E(q) = ∫ w (f' - q)^2.
    relative_error : mse / ∫ w f'^2 (0 when the denominator is 0).
    solver : how it was solved (grid, range, refinement, version, ...).
    """

    activation: str
    bits: int
    boundaries: np.ndarray
    codes: np.ndarray
    levels: np.ndarray
    mse: float
    relative_error: float
    params: dict = field(default_factory=dict)
    distribution: str = "normal"
    dist_params: dict = field(default_factory=dict)
    partition: str = "contiguous"
    solver: dict = field(default_factory=dict)

    def __post_init__(self):
        b = np.ascontiguousarray(self.boundaries, dtype=np.float64).reshape(-1)
        c = np.ascontiguousarray(self.codes, dtype=np.int64).reshape(-1)
        lv = np.ascontiguousarray(self.levels, dtype=np.float64).reshape(-1)
        for name, arr in (("boundaries", b), ("codes", c), ("levels", lv)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        validate_arrays(self.bits, b, c, lv, self.partition)
        for name in ("mse", "relative_error"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise FewbitError(f"table field '{name}' must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, v)

    # -- evaluation ---------------------------------------------------------------
    def interval(self, x) -> np.ndarray:
        """Interval index of each x: the number of boundaries <= x."""
        return np.searchsorted(self.boundaries, np.asarray(x, dtype=np.float64), side="right")

    def code(self, x) -> np.ndarray:
        """The b-bit code the runtime stores for each x."""
        return self.codes[self.interval(x)]

    def q(self, x) -> np.ndarray:
        """The piecewise-constant derivative q(x) = levels[code(x)]."""
        return self.levels[self.code(x)]

    @property
    def n_intervals(self) -> int:
        return int(self.codes.size)

    # -- canonical dictionary -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical, JSON-ready form (see README, "Table files")."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "activation": {"name": self.activation, "params": dict(self.params)},
            "bits": int(self.bits),
            "distribution": {"name": self.distribution, "params": dict(self.dist_params)},
            "partition": self.partition,
            "boundaries": [float(v) for v in self.boundaries],
            "codes": [int(v) for v in self.codes],
            "levels": [float(v) for v in self.levels],
            "error": {"mse": self.mse, "relative": self.relative_error},
            "solver": dict(self.solver),
        }

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "table") -> "Table":
        """Build and validate a Table from its canonical dictionary.

        Raises FewbitError naming `source` and the offending field.
        """
        def need(obj, key, where):
            if not isinstance(obj, dict) or key not in obj:
                raise FewbitError(f"{source}: missing field '{where}'")
            return obj[key]

        try:
            if not isinstance(d, dict):
                raise FewbitError(f"{source}: not a table (expected a mapping at the top level)")
            fmt = need(d, "format", "format")
            if fmt != FORMAT_NAME:
                raise FewbitError(f"{source}: field 'format' is {fmt!r}, expected {FORMAT_NAME!r}")
            ver = need(d, "version", "version")
            if not isinstance(ver, int) or isinstance(ver, bool) or ver != FORMAT_VERSION:
                raise FewbitError(f"{source}: unsupported schema 'version' {ver!r} (this reader knows {FORMAT_VERSION})")
            act = need(d, "activation", "activation")
            dist = need(d, "distribution", "distribution")
            err = need(d, "error", "error")
            bits = need(d, "bits", "bits")
            bits = check_bits(bits, f"{source}: field 'bits'")
            name = need(act, "name", "activation.name")
            dname = need(dist, "name", "distribution.name")
            if not isinstance(name, str) or not isinstance(dname, str):
                raise FewbitError(f"{source}: field 'activation.name' and 'distribution.name' must be strings")
            params = _params(act.get("params", {}), f"{source}: field 'activation.params'")
            dparams = _params(dist.get("params", {}), f"{source}: field 'distribution.params'", allow_str=True)
            partition = d.get("partition", "contiguous")
            arrays = {}
            for key in ("boundaries", "codes", "levels"):
                arrays[key] = _numeric_list(need(d, key, key), f"{source}: field '{key}'",
                                            integer=(key == "codes"))
            mse = _number(need(err, "mse", "error.mse"), f"{source}: field 'error.mse'")
            rel = _number(need(err, "relative", "error.relative"), f"{source}: field 'error.relative'")
            solver = d.get("solver", {})
            if not isinstance(solver, dict):
                raise FewbitError(f"{source}: field 'solver' must be a mapping")
            return cls(activation=name, params=params, bits=bits, distribution=dname,
                       dist_params=dparams, partition=partition, solver=solver,
                       mse=mse, relative_error=rel, **arrays)
        except FewbitError as e:
            msg = str(e)
            raise FewbitError(msg if msg.startswith(source) else f"{source}: {msg}") from None

    def __repr__(self) -> str:
        return (f"Table({label(self.activation, self.params)}, bits={self.bits}, "
                f"dist={label(self.distribution, self.dist_params)}, partition={self.partition}, "
                f"intervals={self.n_intervals}, levels={self.levels.size}, "
                f"relative_error={self.relative_error:.6g})")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Table):
            return NotImplemented
        return self.to_dict() == other.to_dict()


def validate_arrays(bits, boundaries, codes, levels, partition) -> None:
    """Check the structural invariants; raise FewbitError naming the field."""
    check_bits(bits, "field 'bits'")
    if partition not in PARTITIONS:
        raise FewbitError(f"field 'partition' must be one of {', '.join(PARTITIONS)}, got {partition!r}")
    if not np.all(np.isfinite(boundaries)):
        raise FewbitError("field 'boundaries' holds a non-finite number")
    if boundaries.size and not np.all(np.diff(boundaries) > 0):
        raise FewbitError("field 'boundaries' must be strictly ascending")
    if not np.all(np.isfinite(levels)):
        raise FewbitError("field 'levels' holds a non-finite number")
    with np.errstate(over="ignore"):
        big = np.isinf(levels.astype(np.float32))
    if big.any():
        raise FewbitError(f"field 'levels' holds {levels[big][0]:.6g}, beyond float32 "
                          "(the runtime applies levels in float32: the gradient would be inf)")
    if levels.size == 0 or levels.size > 2 ** bits:
        raise FewbitError(f"field 'levels' must hold 1..{2 ** bits} values for {bits} bits, got {levels.size}")
    if codes.size != boundaries.size + 1:
        raise FewbitError(f"field 'codes' must hold len(boundaries)+1 = {boundaries.size + 1} values, got {codes.size}")
    if codes.size and (codes.min() < 0 or codes.max() >= levels.size):
        raise FewbitError(f"field 'codes' must be in 0..{levels.size - 1}")
    if partition == "contiguous" and not np.array_equal(codes, np.arange(codes.size)):
        raise FewbitError("field 'codes' must be 0, 1, 2, ... for a contiguous table")


def _number(v, where) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise FewbitError(f"{where} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise FewbitError(f"{where} must be finite, got {v!r}")
    return v


def _numeric_list(v, where, *, integer=False) -> np.ndarray:
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise FewbitError(f"{where} must be a 1-D list")
        kinds = "iu" if integer else "iuf"
        if v.dtype.kind not in kinds:
            raise FewbitError(f"{where} must hold {'integers' if integer else 'numbers'}, got dtype {v.dtype}")
        out = v.astype(np.int64 if integer else np.float64)
        if not integer and not np.all(np.isfinite(out)):
            raise FewbitError(f"{where} holds a non-finite number")
        return out
    if not isinstance(v, (list, tuple)):
        raise FewbitError(f"{where} must be a list, got {type(v).__name__}")
    out = []
    for i, x in enumerate(v):
        if integer:
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not -2**62 < int(x) < 2**62:
                raise FewbitError(f"{where}[{i}] must be an integer of reasonable size, got {x!r}")
            out.append(int(x))
        else:
            out.append(_number(x, f"{where}[{i}]"))
    return np.asarray(out, dtype=np.int64 if integer else np.float64)


def _params(v, where, *, allow_str=False) -> dict:
    if not isinstance(v, dict):
        raise FewbitError(f"{where} must be a mapping")
    out = {}
    for k, x in v.items():
        if not isinstance(k, str):
            raise FewbitError(f"{where} has a non-string key {k!r}")
        if allow_str and isinstance(x, str):
            out[k] = x
        elif isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
            out[k] = float(x) if isinstance(x, (float, np.floating)) else int(x)
        else:
            raise FewbitError(f"{where}.{k} must be a number, got {x!r}")
    return out


