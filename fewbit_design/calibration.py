"""Calibration: per-layer tables designed on the inputs each layer really sees, bits under a budget.

A layer's data are values x (the inputs of its activation, or a uniform sample of them) with
optional weights w. With w = g², the squared gradient that meets f'(x) in backward, the
objective Σ w (f'(x) − q(x))² / Σ w is exactly the squared error of grad_in. Every layer gets
the best table of either partition for its data (`designer.design` on weighted `Samples`);
`allocate_bits` chooses bits per layer under an average-bits budget by an exact DP.
No torch here: `fewbit_design.torch.calibrate` records the data, the CLI reads it from a file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .activations import get_activation
from .cells import samples_error
from .errors import FewbitError
from .runtime_tables import default_table
from .samples import samples_from_array
from .table import BITS, Table, check_bits


@dataclass(frozen=True)
class LayerData:
    """What one layer saw: `values` (any shape), optional `weights` of the same size (>= 0),
    and `count`, the number of elements seen in all (default: values.size)."""

    activation: str
    values: np.ndarray
    weights: np.ndarray | None = None
    count: int | None = None
    params: dict | None = None


@dataclass(frozen=True)
class LayerCalibration:
    """One module's calibrated table and how it does on the module's data.

    mse, default_mse : Σ w (f' − q)² / Σ w of the table and of the default table (designed
        for normal:0,1 at the same bits) under the layer's data; relative_* divide by Σ w f'² / Σ w.
    predicted : count · mean(w) · mse, the predicted total squared error over every element
        seen (for w = g²: Σ g² (f' − q)², the squared error of grad_in summed over the data).
    kept_default : the default table was kept because the design was not better on the data
        (possible only where the designer bins, beyond its exact range).
    """

    name: str
    table: Table
    count: int
    kept: int
    weighted: bool
    mse: float
    default_mse: float
    relative_error: float
    default_relative_error: float
    predicted: float
    kept_default: bool = False

    def record(self) -> dict:
        """The JSON-ready record stored beside the table in a bundle."""
        return {"name": self.name, "count": self.count, "kept": self.kept, "weighted": self.weighted,
                "mse": self.mse, "default_mse": self.default_mse, "relative_error": self.relative_error,
                "default_relative_error": self.default_relative_error, "predicted": self.predicted,
                "kept_default": self.kept_default}


class Calibration(Mapping):
    """Module names -> calibrated tables (a read-only mapping), with each layer's errors.

    Attributes
    ----------
    layers : dict[str, LayerCalibration]
    budget_bits : float or None
        The average-bits budget the bits were chosen under, if any.
    """

    def __init__(self, layers, budget_bits: float | None = None):
        self.layers = {layer.name: layer for layer in layers}
        self.budget_bits = budget_bits

    def __getitem__(self, name: str) -> Table:
        return self.layers[name].table

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def average_bits(self) -> float:
        """Σ count · bits / Σ count: the bits per saved element over all layers."""
        n = sum(c.count for c in self.layers.values())
        return sum(c.count * c.table.bits for c in self.layers.values()) / n if n else 0.0

    def save(self, path) -> str:
        """Write the bundle (tables + per-module records) as one JSON file, atomically."""
        from .formats import write_bundle

        path = os.fspath(path)
        layers = list(self.layers.values())
        modules = [c.record() for c in layers]
        if self.budget_bits is not None:
            modules = [{**m, "budget_bits": self.budget_bits} for m in modules]
        return write_bundle([c.table for c in layers], path, modules=modules)

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read a bundle written by `save`; FewbitError naming the file and field otherwise."""
        from .formats import read_bundle

        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise FewbitError(f"{path}: cannot read ({e.strerror or e})") from None
        tables, records = read_bundle(data, source=path, modules=True)
        layers, budget = [], None
        for i, (t, m) in enumerate(zip(tables, records)):
            try:
                layers.append(LayerCalibration(
                    name=m["name"], table=t, count=int(m["count"]), kept=int(m["kept"]),
                    weighted=bool(m["weighted"]), mse=float(m["mse"]), default_mse=float(m["default_mse"]),
                    relative_error=float(m["relative_error"]),
                    default_relative_error=float(m["default_relative_error"]),
                    predicted=float(m["predicted"]), kept_default=bool(m.get("kept_default", False))))
            except (KeyError, TypeError, ValueError) as e:
                raise FewbitError(f"{path}: modules[{i}] is incomplete or malformed ({e!r})") from None
            budget = m.get("budget_bits", budget)
        names = [c.name for c in layers]
        if len(set(names)) != len(names):
            raise FewbitError(f"{path}: repeated module names in 'modules'")
        return cls(layers, budget_bits=budget)

    def __repr__(self) -> str:
        head = f"Calibration({len(self)} modules, average {self.average_bits:.3g} bits"
        head += f", budget {self.budget_bits:g})" if self.budget_bits is not None else ")"
        w = max([len("module")] + [len(n) for n in self.layers])
        rows = [head, f"  {'module':<{w}}  {'activation':<10} bits  {'partition':<10} "
                      f"{'rel. error':>10}  {'default':>10}  {'ratio':>6}  weights"]
        for c in self.layers.values():
            ratio = c.default_mse / c.mse if c.mse > 0 else math.inf
            rows.append(f"  {c.name:<{w}}  {c.table.activation:<10} {c.table.bits:>4}  "
                        f"{c.table.partition:<10} {c.relative_error:>10.4g}  "
                        f"{c.default_relative_error:>10.4g}  {ratio:>6.3g}  {'g²' if c.weighted else '1'}")
        return "\n".join(rows)


# -- design ---------------------------------------------------------------------------------

def check_budget(budget_bits) -> float:
    if isinstance(budget_bits, bool) or not isinstance(budget_bits, (int, float, np.integer, np.floating)):
        raise FewbitError(f"budget_bits must be a number in [1, 8], got {budget_bits!r}")
    b = float(budget_bits)
    if not 1.0 <= b <= 8.0:
        raise FewbitError(f"budget_bits must be in [1, 8] (average bits per saved element), got {b!r}")
    return b


def calibrate_layers(layers: Mapping, bits: int = 3, *, budget_bits: float | None = None,
                     partition: str = "auto", grid: int | None = None) -> Calibration:
    """Design one table per layer on its data; with `budget_bits`, choose bits per layer too.

    Parameters
    ----------
    layers : mapping of name -> LayerData
    bits : code width for every layer (1..8); ignored when `budget_bits` is given.
    budget_bits : average bits per saved element, in [1, 8]: bits per layer (1..8) then minimise
        the total predicted error Σ count · mean(w) · mse subject to Σ count · bits ≤
        budget · Σ count, exactly (`allocate_bits`). Every layer is designed at all 8 widths.
    partition, grid : passed to `design` ("auto": the better partition per layer).

    Returns
    -------
    Calibration
    """
    if not layers:
        raise FewbitError("no layers to calibrate")
    widths = list(BITS) if budget_bits is not None else [check_bits(bits)]
    if budget_bits is not None:
        budget_bits = check_budget(budget_bits)
    per_layer = {}
    for name, data in layers.items():
        per_layer[name] = [_calibrate_one(name, data, b, partition, grid) for b in widths]
    if budget_bits is None:
        return Calibration([options[0] for options in per_layer.values()])
    names = list(per_layer)
    errors = np.array([[c.predicted for c in per_layer[n]] for n in names])
    counts = [per_layer[n][0].count for n in names]
    chosen, _ = allocate_bits(errors, counts, budget_bits)
    return Calibration([per_layer[n][b - 1] for n, b in zip(names, chosen)], budget_bits=budget_bits)


def _calibrate_one(name, data: LayerData, bits, partition, grid) -> LayerCalibration:
    from .designer import design

    act = get_activation(data.activation, data.params or {})
    values = np.asarray(data.values)
    if values.size == 0:
        raise FewbitError(f"{name}: no activation inputs recorded")
    if values.dtype.kind not in "fiu":
        raise FewbitError(f"{name}: activation inputs must be numeric, got dtype {values.dtype}")
    bad = values.size - int(np.isfinite(values).sum())
    if bad:
        raise FewbitError(f"{name}: {bad} of {values.size} activation inputs are NaN or infinite")
    samples = samples_from_array(values, weights=data.weights, source=name)
    table = design(act, bits, distribution=samples, partition=partition, grid=grid)
    default = default_table(act.name, bits, act.params)   # what convert uses
    d_mse, denom = samples_error(act, samples, default.boundaries, default.levels[default.codes])
    mse = table.mse
    kept_default = mse > d_mse
    if kept_default:            # only possible where the designer bins: never worse than the default
        table, mse = default, d_mse
    count = values.size if data.count is None else int(data.count)
    mean_w = 1.0 if samples.weights is None else float(np.sum(samples.weights)) / values.size
    rel = lambda e: e / denom if denom > 0 else 0.0  # noqa: E731
    return LayerCalibration(name=name, table=table, count=count, kept=int(values.size),
                            weighted=data.weights is not None, mse=mse, default_mse=d_mse,
                            relative_error=rel(mse), default_relative_error=rel(d_mse),
                            predicted=count * mean_w * mse, kept_default=bool(kept_default))


def read_layer_arrays(path) -> dict:
    """{name: array} from an .npz holding one array of activation inputs per layer name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FewbitError(f"{path}: no such file")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise FewbitError(f"{path}: not an .npz archive (expected one array per layer name)")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FewbitError:
        raise
    except Exception as exc:   # corrupt, truncated, pickled objects: one line, no traceback
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FewbitError(f"{path}: cannot read .npz file: {detail}") from None
    if not arrays:
        raise FewbitError(f"{path}: holds no arrays (expected one array per layer name)")
    return arrays


def calibrate_file(path, activation: str, bits: int = 3, *, params: dict | None = None,
                   weights_path=None, budget_bits: float | None = None, partition: str = "auto",
                   grid: int | None = None) -> Calibration:
    """A calibration from saved activation inputs: `path` is an .npz with one array per layer
    name (all layers of `activation`); `weights_path`, optionally, an .npz with the same names
    holding one weight per input (e.g. g²)."""
    arrays = read_layer_arrays(path)
    weights = read_layer_arrays(weights_path) if weights_path is not None else {}
    if weights_path is not None and set(weights) != set(arrays):
        raise FewbitError(f"{os.fspath(weights_path)}: layer names differ from {os.fspath(path)}'s "
                          f"(only in one: {', '.join(sorted(set(weights) ^ set(arrays)))})")
    layers = {}
    for name, values in arrays.items():
        w = weights.get(name)
        if w is not None and w.size != values.size:
            raise FewbitError(f"{os.fspath(weights_path)}: {name} holds {w.size} weights for {values.size} inputs")
        layers[name] = LayerData(activation=activation, params=params, values=values, weights=w)
    return calibrate_layers(layers, bits, budget_bits=budget_bits, partition=partition, grid=grid)


# -- bits under a budget ----------------------------------------------------------------------

def allocate_bits(errors, counts, budget_bits: float) -> tuple[list[int], float]:
    """Bits per layer minimising Σ errors[i, b-1] subject to Σ counts[i]·b ≤ budget·Σ counts.

    Exact: a DP over layers that keeps the Pareto front of (cost, error) of every prefix
    (a state survives only if no cheaper-or-equal state has a lower or equal error), pruning
    states that cannot finish within the budget at 1 bit per remaining element. Costs are
    integers and the capacity is floor(Fraction(budget) · Σ counts), so the budget is never
    exceeded through rounding. Ties go to the cheaper choice.

    Parameters
    ----------
    errors : (L, 8) array, errors[i, b-1] = predicted error of layer i at b bits.
    counts : L positive integers (elements per layer).
    budget_bits : average bits per element, in [1, 8].

    Returns
    -------
    (bits per layer, total error)
    """
    budget = check_budget(budget_bits)
    errors = np.asarray(errors, dtype=np.float64)
    counts = [int(c) for c in counts]
    if errors.ndim != 2 or errors.shape != (len(counts), 8) or not counts:
        raise FewbitError(f"errors must have shape (layers, 8), got {errors.shape} for {len(counts)} layers")
    if min(counts) <= 0:
        raise FewbitError("every layer needs a positive element count")
    cap = math.floor(Fraction(budget) * sum(counts))
    rest = np.cumsum([0] + counts[::-1])[::-1]              # rest[i] = Σ counts[i:]
    cost, err = np.zeros(1, dtype=np.int64), np.zeros(1)
    back = []
    widths = np.arange(1, 9, dtype=np.int64)
    for i, n in enumerate(counts):
        c = (cost[:, None] + n * widths[None, :]).ravel()      # state s, width b -> s*8 + b-1
        e = (err[:, None] + errors[i][None, :]).ravel()
        idx = np.flatnonzero(c + int(rest[i + 1]) <= cap)
        c, e = c[idx], e[idx]
        order = np.lexsort((e, c))                              # by cost, then error
        c, e, idx = c[order], e[order], idx[order]
        best_before = np.minimum.accumulate(e)
        keep = np.concatenate([[True], e[1:] < best_before[:-1]])    # strictly better than any cheaper
        cost, err = c[keep], e[keep]
        back.append(idx[keep])
    s = int(np.argmin(err))          # err is strictly decreasing along the front: the last, cheapest best
    total = float(err[s])
    chosen = []
    for i in range(len(counts) - 1, -1, -1):
        flat = int(back[i][s])
        chosen.append(flat % 8 + 1)
        s = flat // 8
    return chosen[::-1], total


__all__ = ["LayerData", "LayerCalibration", "Calibration", "calibrate_layers", "calibrate_file",
           "read_layer_arrays", "allocate_bits", "check_budget"]
