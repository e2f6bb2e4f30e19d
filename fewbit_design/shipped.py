"""Shipped tables (Table files in the package; the runtime's defaults): every registry activation
× 1..8 bits for normal:0,1.

They live in one compact bundle, ``fewbit_design/data/tables_normal.json``, written by
``fewbit-design sweep tables/sweep.yaml -o tables`` next to the browsable copies in ``tables/``.
The runtime uses them as its default tables, so nothing is designed at import time.
"""

from __future__ import annotations

import functools
import os

from .formats import read_bundle
from .table import Table, check_bits

BUNDLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tables_normal.json")


@functools.lru_cache(maxsize=None)
def _bundle(path: str = BUNDLE_PATH) -> dict:
    """{(activation, bits, distribution, dist params): best Table}, read and validated once."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return {}
    out: dict = {}
    for t in read_bundle(data, source=path):
        key = (t.activation, t.bits, t.distribution, _frozen(t.dist_params), _frozen(t.params))
        if key not in out or t.mse < out[key].mse:
            out[key] = t
    return out


def _frozen(d: dict) -> tuple:
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in d.items()))


def shipped_tables() -> list[Table]:
    """Every shipped table (empty if the bundle is missing)."""
    return list(_bundle().values())


def shipped_table(activation: str, bits: int, *, params: dict | None = None,
                  distribution: str = "normal:0,1") -> Table | None:
    """The shipped table for this activation, bits and distribution, or None.

    Parameters
    ----------
    activation : registry name or alias ("swish" finds silu).
    bits : 1..8.
    params : activation parameters; a table is shipped only for the defaults, so any other
        value gives None. Parameters left out take their defaults.
    distribution : the input weight spec; "normal:0,1" is the one shipped.

    Raises
    ------
    FewbitError : unknown activation, bad parameter, or a malformed distribution spec.
    """
    from .activations import get_activation
    from .distributions import parse_distribution

    bits = check_bits(bits)
    act = get_activation(activation, params)
    dist = parse_distribution(distribution)
    key = (act.name, bits, dist.name, _frozen(dist.params), _frozen(act.params))
    return _bundle().get(key)


__all__ = ["BUNDLE_PATH", "shipped_table", "shipped_tables"]
