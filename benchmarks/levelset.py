"""Level-set vs contiguous tables for every registry activation, bits 1-4.

    python -m benchmarks.levelset

Prints, for normal:0,1 and normal:0,3, the relative errors of both partitions, their ratio
(contiguous / level-set) and the level-set table's interval count; then the warm time of
an 8-bit level-set design.
"""


import argparse

from benchmarks._harness import fmt, timeit

from fewbit_design.activations import REGISTRY
from fewbit_design.designer import design


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="gelu and tanh, 1-2 bits, one weight, one timed design")
    a = p.parse_args(argv)
    names = ("gelu", "tanh") if a.quick else tuple(REGISTRY)
    dists, widths = (("normal:0,1",), (1, 2)) if a.quick else (("normal:0,1", "normal:0,3"), (1, 2, 3, 4))
    for dist in dists:
        print(f"\n{dist}\n")
        print("| activation | bits | contiguous | level-set | ratio | intervals |")
        print("|---|---|---|---|---|---|")
        for name in names:
            for bits in widths:
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
    for name in ("gelu",) if a.quick else ("gelu", "tanh", "sigmoid", "silu"):
        t, _ = timeit(lambda: design(name, 8, partition="levelset"), repeat=1 if a.quick else 5)
        print(f"| {name} | {fmt(t)} |")


if __name__ == "__main__":
    main()
