"""The methods' result (DP -> refinement step): one candidate table, and the solver record a Table carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._version import __version__


class Steps(NamedTuple):
    """A piecewise-constant q: ascending boundaries, the code of each interval, the level of each
    code, and the error E(q)."""

    boundaries: np.ndarray
    codes: np.ndarray
    levels: np.ndarray
    mse: float


@dataclass(frozen=True)
class Candidate:
    """One method's table before it becomes a Table, and how it was found."""

    partition: str        # "contiguous" or "levelset"
    boundaries: np.ndarray
    codes: np.ndarray
    levels: np.ndarray
    mse: float
    method: str           # how the cuts were found
    cells: dict           # what the DP cut (Cells.describe)
    refinement: dict      # what refinement did (Refinement.metadata, or the exchange sweeps)


def method_name(names: tuple[str, str, str], cells, bins) -> str:
    """The record's "method": names[0] over a grid, names[1] over every sample, names[2] over bins."""
    return names[0] if cells.continuous else names[1] if bins is None else names[2]


def solver_record(best: Candidate, alternatives: dict) -> dict:
    """The Table's `solver` entry: how `best` was found, the relative errors of the other
    partitions tried, and the version (no wall time: the same call gives the same table, bit for bit)."""
    record = {"method": best.method, **best.cells, "refinement": best.refinement}
    if alternatives:
        record["alternatives"] = alternatives
    record["version"] = __version__
    return record
