"""Tables over the saved output: how near f' comes back from y (and a branch bit), per dtype of y.

For every registry activation under N(0, 1) and every dtype y is saved in (float32, float16,
bfloat16): design_output's table (default pieces and degree), its error with y exact, with y
rounded to the dtype, and the floor that rounding imposes on the exact f'∘f⁻¹, each twice:
as the designer measures it (its own nodes) and by fewbit_design.output_check (an independent
quadrature: exact per rounding cell for 16-bit y). Then the sweep over pieces and degree that
chose the defaults: the smallest pieces x (degree + 1) whose error with y exact is at most
max(1 % of the float32 floor, 1e-11) for every activation.

    python -m benchmarks.output_tables                 # full run: writes benchmarks/results/output_tables.json
    python -m benchmarks.output_tables --quick         # a few activations, no sweep; writes a temporary file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from fewbit_design import __version__
from fewbit_design._atomic import atomic_write
from fewbit_design.activations import REGISTRY
from fewbit_design.errors import FewbitError
from fewbit_design.output_check import check_output
from fewbit_design.output_tables import DEFAULT_DEGREE, DEFAULT_PIECES, design_output

from benchmarks._harness import results_path

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = ("float32", "float16", "bfloat16")
BOUND = {"float32": 1e-9, "bfloat16": 1.2e-5, "float16": 8e-7}   # issue 22's "Must show", for MUST_SHOW
MUST_SHOW = ("gelu", "silu", "mish", "quick_gelu", "gelu_tanh")
SWEEP = {"pieces": (2, 4, 6, 8), "degree": (3, 4, 5, 6, 8)}
DISTRIBUTION = "normal:0,1"


def _row(name: str, dtype: str) -> dict:
    t0 = time.perf_counter()
    try:
        t = design_output(name, distribution=DISTRIBUTION, y_dtype=dtype)
    except FewbitError as e:
        return {"activation": name, "dtype": dtype, "refused": str(e)}
    seconds = time.perf_counter() - t0
    c = check_output(t)
    target = max(2 * c["floor"], 1e-9)
    return {"activation": name, "dtype": dtype, "kind": t.kind, "branch_bits": t.branch_bits,
            "branch_point": None if t.branch_point is None else list(t.branch_point),
            "pieces": list(t.pieces), "degree": t.degree, "powers": [b.power for b in t.branches],
            "flats": sum(len(b.flats) for b in t.branches),
            "designed": {"relative": t.relative_error, "rounded": t.rounded_error, "floor": t.floor},
            "independent": {k: c[k] for k in ("relative", "rounded", "floor")},
            "target": target, "within_target": bool(c["rounded"] <= target),
            "within_bound": bool(c["rounded"] <= BOUND[dtype]) if name in MUST_SHOW else None,
            "design_seconds": round(seconds, 3)}


def _sweep(names) -> list[dict]:
    out = []
    for pieces in SWEEP["pieces"]:
        for degree in SWEEP["degree"]:
            errs = {n: design_output(n, distribution=DISTRIBUTION, pieces=pieces, degree=degree).relative_error
                    for n in names}
            out.append({"pieces": pieces, "degree": degree, "relative": errs})
    return out


def _choice(sweep: list[dict], floors: dict) -> dict:
    """The smallest pieces·(degree + 1) with every error ≤ max(1 % of that activation's float32 floor, 1e-11)."""
    ok = [s for s in sweep if all(e <= max(0.01 * floors[n], 1e-11) for n, e in s["relative"].items())]
    best = min(ok, key=lambda s: (s["pieces"] * (s["degree"] + 1), s["pieces"])) if ok else None
    return {"rule": "smallest pieces x (degree + 1) with relative error (y exact) <= max(1 % of the float32 floor, "
                    "1e-11) for every activation",
            "chosen": None if best is None else {"pieces": best["pieces"], "degree": best["degree"]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.output_tables", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="every eighth activation, no sweep (writes a temporary file)")
    p.add_argument("--out", help="write the JSON here instead")
    a = p.parse_args(argv)
    names = list(REGISTRY)[::8] if a.quick else list(REGISTRY)
    t0 = time.perf_counter()
    rows = []
    for name in names:
        for dtype in DTYPES:
            rows.append(_row(name, dtype))
            r = rows[-1]
            if "refused" in r:
                print(f"{name:12s} {dtype:9s} refused: {r['refused']}", flush=True)
                continue
            print(f"{name:12s} {dtype:9s} bits {r['branch_bits']} pieces {r['pieces']} "
                  f"designed {r['designed']['rounded']:.3e} independent {r['independent']['rounded']:.3e} "
                  f"floor {r['independent']['floor']:.3e} {'ok' if r['within_target'] else 'OVER'}", flush=True)
    designed = [r["activation"] for r in rows if "refused" not in r and r["dtype"] == "float32"]
    result = {"machine": {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform()},
              "version": __version__, "distribution": DISTRIBUTION, "dtypes": list(DTYPES), "bounds": BOUND,
              "must_show": list(MUST_SHOW),
              "defaults": {"pieces": DEFAULT_PIECES, "degree": DEFAULT_DEGREE}, "results": rows}
    if not a.quick:
        floors = {r["activation"]: r["independent"]["floor"] for r in rows
                  if r["activation"] in designed and r["dtype"] == "float32"}
        result["sweep"] = _sweep(designed)
        result["choice"] = _choice(result["sweep"], floors)
        print("defaults by the sweep:", result["choice"]["chosen"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = results_path(a.out, os.path.join(HERE, "results", "output_tables.json"), full_run=not a.quick)
    atomic_write(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
