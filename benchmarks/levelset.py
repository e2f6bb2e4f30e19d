"""Level-set vs contiguous tables for every registry activation, bits 1-4.

    python benchmarks/levelset.py

Prints, for normal:0,1 and normal:0,3, the relative errors of both partitions, their ratio
(contiguous / level-set) and the level-set table's interval count; then the warm time of
an 8-bit level-set design.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _harness import fmt, timeit  # noqa: E402

from fewbit_design.activations import REGISTRY  # noqa: E402
from fewbit_design.designer import design  # noqa: E402


def main():
    for dist in ("normal:0,1", "normal:0,3"):
        print(f"\n{dist}\n")
        print("| activation | bits | contiguous | level-set | ratio | intervals |")
        print("|---|---|---|---|---|---|")
        for name in REGISTRY:
            for bits in (1, 2, 3, 4):
                c = design(name, bits, distribution=dist, partition="contiguous")
                ls = design(name, bits, distribution=dist, partition="levelset")
                exact = 1e-15            # relative errors below this are 0 to rounding
                if ls.relative_error < exact:
                    ratio = "both exact" if c.relative_error < exact else "level-set exact"
                else:
                    ratio = f"{c.mse / ls.mse:.2f}"
                print(f"| {name} | {bits} | {c.relative_error:.3e} | {ls.relative_error:.3e} | {ratio} | "
                      f"{ls.n_intervals} |")
    print("\n| 8-bit level-set design, warm | time: median [20 %, 80 %] |")
    print("|---|---|")
    for name in ("gelu", "tanh", "sigmoid", "silu"):
        t, _ = timeit(lambda: design(name, 8, partition="levelset"), repeat=5)
        print(f"| {name} | {fmt(t)} |")


if __name__ == "__main__":
    main()
