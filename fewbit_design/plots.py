"""Figures (Table -> plot step): relative error vs bits, and one table's step function against f'.

matplotlib is imported inside the functions (Agg backend), so the CLI starts without it.
The format follows the file's extension: .png, .svg or .pdf. Files are written atomically.
"""

from __future__ import annotations

import io
import os

import numpy as np

from .errors import FewbitError
from ._atomic import atomic_write
from .table import BITS, PARTITIONS, label

FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
ERROR_FLOOR = 1e-16        # relative errors below this (exact tables) are drawn at the floor
LINESTYLE = {"contiguous": "--", "levelset": "-", "auto": "-"}
MARKER = {"contiguous": "s", "levelset": "o", "auto": "o"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _figure_format(path: str) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FIGURE_FORMATS:
        raise FewbitError(f"{path}: figure format must be one of {', '.join(FIGURE_FORMATS)} (from the extension)")
    return FIGURE_FORMATS[ext]


def _save(fig, path: str) -> None:
    fmt = _figure_format(path)
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else ({"Date": None} if fmt == "svg" else {"CreationDate": None})
    fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight", metadata=meta)
    atomic_write(path, buf.getvalue())


def error_curves(activations, *, bits, distributions, partitions, params=None) -> list[dict]:
    """Design every (activation, distribution, partition) over `bits`; the relative errors.

    Returns a list of {"activation", "distribution", "partition", "bits", "relative_error"}.
    """
    from .activations import get_activation
    from .designer import design
    from .distributions import parse_distribution

    curves = []
    for name in activations:
        act = get_activation(name, params or None)
        for spec in distributions:
            dist = parse_distribution(spec)
            for p in partitions:
                errs = [design(act, b, distribution=dist, partition=p).relative_error for b in bits]
                label = str(act) if params else act.name      # parameters shown only when given
                curves.append({"activation": label, "distribution": dist.spec, "partition": p,
                               "bits": list(bits), "relative_error": errs})
    return curves


def plot_error(activations, *, bits=BITS, distributions=("normal:0,1",),
               partitions=PARTITIONS, params=None, path: str) -> list[dict]:
    """Relative error vs bits on a log scale; one colour per activation (or distribution).

    Contiguous tables are dashed with squares, level-set (and auto) solid with circles.
    Returns the curves drawn (see `error_curves`).
    """
    _figure_format(path)
    bits = list(bits)
    curves = error_curves(activations, bits=bits, distributions=distributions,
                          partitions=partitions, params=params)
    plt = _pyplot()
    by_dist = len(activations) == 1 and len(distributions) > 1
    keys = list(dict.fromkeys(c["distribution"] if by_dist else (c["activation"], c["distribution"])
                              for c in curves))
    colours = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for c in curves:
        key = c["distribution"] if by_dist else (c["activation"], c["distribution"])
        who = c["distribution"] if by_dist else (
            c["activation"] if len(distributions) == 1 else f"{c['activation']}, {c['distribution']}")
        y = np.maximum(np.asarray(c["relative_error"]), ERROR_FLOOR)
        ax.plot(c["bits"], y, LINESTYLE[c["partition"]], marker=MARKER[c["partition"]], markersize=4,
                color=colours(keys.index(key) % colours.N), label=f"{who} ({c['partition']})")
    ax.set_yscale("log")
    ax.set_xticks(bits)
    ax.set_xlabel("bits per element")
    ax.set_ylabel(r"relative error  $\int w\,(f'-q)^2 \,/\, \int w\,f'^2$")
    title = activations[0] if by_dist else ", ".join(distributions)
    ax.set_title(f"Optimal few-bit derivative tables: error vs bits ({title})")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    if any(np.min(c["relative_error"]) < ERROR_FLOOR for c in curves):
        ax.axhline(ERROR_FLOOR, color="0.6", lw=0.8, ls=":")
        ax.text(bits[0], ERROR_FLOOR * 1.6, "exact (error 0, drawn at 1e-16)", fontsize=7, color="0.4")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return curves


def _x_range(table, dist) -> tuple[float, float]:
    """Where the weight has mass: central 99.98 % for parametric weights, all samples otherwise."""
    values = getattr(dist, "values", None)
    if values is not None:
        lo, hi = float(values[0]), float(values[-1])
    else:
        lo, hi = dist.quantile_range(1e-4)
        lo, hi = max(lo, dist.support[0]), min(hi, dist.support[1])
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def plot_table(table, *, path: str, base: str | None = None, trust_activation_code: bool = False,
               source: str = "table") -> None:
    """f'(x) and the table's q(x) over x, the input weight shaded (twin axis), boundaries marked.

    A custom activation (module:function) is refused unless `trust_activation_code`; a
    relative samples path is taken relative to `base` (see check_table)."""
    from .designer import rebuild, refuse_custom_code

    _figure_format(path)
    if not trust_activation_code:
        refuse_custom_code(table, source)
    act, dist = rebuild(table, base=base, source=source)
    lo, hi = _x_range(table, dist)
    inner = table.boundaries[(table.boundaries > lo) & (table.boundaries < hi)]
    x = np.union1d(np.linspace(lo, hi, 2000), inner)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    wax = ax.twinx()
    if hasattr(dist, "values"):
        wax.hist(dist.values, bins=100, range=(lo, hi), weights=dist.weights, density=True, color="0.85", zorder=0)
    else:
        w = dist.pdf(x)
        wax.fill_between(x, w, color="0.88", lw=0, zorder=0)
    wax.set_ylim(bottom=0)
    wax.set_ylabel(f"input weight w(x): {dist.spec}", color="0.45")
    wax.tick_params(axis="y", colors="0.45")
    ax.set_zorder(wax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(x, act.df(x), color="C0", lw=1.6, label="f'(x)")
    # the step function, drawn interval by interval (vertical jumps left open)
    edges = np.concatenate([[lo], inner, [hi]])
    q = table.q(0.5 * (edges[:-1] + edges[1:]))
    ax.hlines(q, edges[:-1], edges[1:], color="C3", lw=2.0, label=f"q(x): {table.levels.size} levels")
    for b in inner:
        ax.axvline(b, color="C3", lw=0.6, ls=":", alpha=0.7)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("x")
    ax.set_ylabel("derivative")
    ax.set_title(f"{label(table.activation, table.params)}: {table.bits}-bit "
                 f"{table.partition} table, relative error {table.relative_error:.3g}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


__all__ = ["plot_error", "plot_table", "error_curves"]
