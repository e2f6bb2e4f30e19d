"""The text summary (Table -> file step): a table for people to read, write-only (format "text").

The first line names the weight as a --dist spec that pastes back; then the error, the other
partition's error, and one row per interval.
"""

from __future__ import annotations

from ..table import Table, label


def _dist_spec(table: Table) -> str:
    """The table's weight as a --dist spec that can be pasted back (shortest exact floats)."""
    p = table.dist_params
    if table.distribution == "samples":
        return f"samples:{p.get('path', '?')}"
    vals = [repr(float(v)) for v in p.values()]
    vals = [v[:-2] if v.endswith(".0") else v for v in vals]
    return f"{table.distribution}:{','.join(vals)}" if vals else table.distribution


def format_text(table: Table) -> str:
    """A readable table: header, error, then one row per interval."""
    lines = [
        f"{label(table.activation, table.params)}: {table.bits}-bit {table.partition} table "
        f"for inputs ~ {_dist_spec(table)}",
        f"relative error {table.relative_error:.6e}   (mse {table.mse:.6e})",
    ]
    other = table.solver.get("alternatives", {})
    for name, rel in other.items():
        ratio = f", {rel / table.relative_error:.4g}x the chosen" if table.relative_error > 0 else ""
        lines.append(f"  {name} partition: relative error {rel:.6e}{ratio}")
    lines.append(f"{len(table.levels)} levels, {table.n_intervals} intervals")
    lines.append("")
    lines.append(f"{'interval':>8}  {'from':>22}  {'to':>22}  {'code':>4}  {'level':>22}")
    edges = [-float("inf"), *table.boundaries.tolist(), float("inf")]
    for i, c in enumerate(table.codes.tolist()):
        lines.append(f"{i:>8}  {edges[i]:>22.15g}  {edges[i + 1]:>22.15g}  {c:>4}  {table.levels[c]:>22.15g}")
    return "\n".join(lines) + "\n"
