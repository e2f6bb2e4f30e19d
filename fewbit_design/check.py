"""Checking a table (Table -> verdict step): validate, recompute its error, look for a better one.

``fewbit-design check`` prints what `check_table` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from .designer import design, evaluate, rebuild, refuse_custom_code
from .table import Table, label


@dataclass(frozen=True)
class CheckReport:
    """What `check_table` found: ok, the lines of the report, and the numbers.

    stored, recomputed : (mse, relative error) in the table and by exact quadrature.
    best : the table design() found (None when not asked).
    """

    ok: bool
    text: str
    stored: tuple
    recomputed: tuple
    best: Table | None


def _close(a: float, b: float, floor: float, rtol: float = 1e-9) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) or abs(a - b) <= floor


def check_table(table, *, against: str | None = "auto", base: str | None = None,
                trust_activation_code: bool = False, source: str = "table") -> CheckReport:
    """Recompute `table`'s error and (unless `against` is None) compare with design().

    Parameters
    ----------
    table : the Table to check (already validated by its reader).
    against : partition for design() to try: "auto", "contiguous", "levelset", "same" (the
        table's own), or None to only recompute the error.
    base : folder that a relative samples path is taken relative to (the table file's).
    trust_activation_code : allow a custom activation (module:function), which imports that
        module and runs it; refused (FewbitError) otherwise: a table file never runs code.
    source : the file name, for messages.

    Returns
    -------
    CheckReport; ``ok`` is False when the stored error is off or design() finds a better table.
    """
    if not trust_activation_code:
        refuse_custom_code(table, source)
    _, dist = rebuild(table, base=base, source=source)
    mse, rel = evaluate(table, dist=dist)
    total = mse / rel if rel > 0 else (table.mse / table.relative_error if table.relative_error > 0 else 1.0)
    floor = 1e-15 * total                       # below this an mse is round-off
    lines = [f"{'table':<14}{label(table.activation, table.params)}, {table.bits} bits, {dist.spec}, "
             f"{table.partition} partition, {table.n_intervals} intervals, {table.levels.size} levels",
             f"{'stored':<14}relative error {table.relative_error:.12e}  mse {table.mse:.12e}"]
    problems = []
    same = _close(table.mse, mse, floor) and _close(table.relative_error, rel, 1e-15)
    off = abs(table.mse - mse) / max(mse, floor, 1e-300)
    lines.append(f"{'recomputed':<14}relative error {rel:.12e}  mse {mse:.12e}  "
                 f"({'matches' if same else 'MISMATCH'}: differs by {off:.2g} relative)")
    if not same:
        problems.append(f"the stored error is off by {off:.3g} relative")
    best = None
    if against is not None:
        partition = table.partition if against == "same" else against
        best = design(table.activation, table.bits, distribution=dist, params=table.params, partition=partition)
        better = best.mse < mse - max(1e-9 * mse, floor)
        if better:
            gain = 1 - best.mse / mse
            verdict = f"BETTER by {gain:.3%} (a {best.partition} table)"
            problems.append(f"design() finds a table with {gain:.3%} lower error "
                            f"(relative error {best.relative_error:.6e} vs {rel:.6e})")
        else:
            verdict = "no better table"
        lines.append(f"{'design()':<14}relative error {best.relative_error:.12e}  "
                     f"(partition {partition} -> {best.partition}): {verdict}")
    lines.append(f"{'result':<14}" + ("OK" if not problems else "FAIL: " + "; ".join(problems)))
    return CheckReport(not problems, "\n".join(lines), (table.mse, table.relative_error), (mse, rel),
                       best)

