"""Time the whole shipped sweep: every activation × 1..8 bits × the shipped distributions.

    python -m benchmarks.sweep [--jobs 2]

Designs into a temporary folder (nothing in tables/ or the package changes), --force, and
prints the wall time against the 120 s goal, with the time inside design() per bit width.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from fewbit_design.sweep import load_config, run_sweep

GOAL_S = 120.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--config", default=os.path.join(ROOT, "tables", "sweep.yaml"))
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    cfg.bundle_path = None                      # leave the package's bundle alone
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        cpu0 = os.times()
        result = run_sweep(cfg, out, jobs=args.jobs, force=True)
        wall = time.perf_counter() - t0
        cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.children_user - cpu0.children_user) \
        + (cpu1.system - cpu0.system) + (cpu1.children_system - cpu0.children_system)

    by_bits = defaultdict(float)
    for job in cfg.jobs:
        by_bits[job.bits] += result.design_seconds.get(job.stem) or 0.0
    dists = sorted({j.distribution for j in cfg.jobs})
    acts = sorted({j.activation for j in cfg.jobs})
    print(f"shipped sweep: {len(acts)} activations x {len(by_bits)} bit widths x {len(dists)} distributions "
          f"({', '.join(dists)}), partitions {sorted({j.partition for j in cfg.jobs})}")
    print(f"machine: {os.cpu_count()} CPUs visible, --jobs {args.jobs}")
    print()
    print(f"{'bits':>6} {'tables':>7} {'design() s':>11}  (wall time inside the workers)")
    for b in sorted(by_bits):
        print(f"{b:>6} {sum(j.bits == b for j in cfg.jobs):>7} {by_bits[b]:>11.2f}")
    print(f"{'all':>6} {len(cfg.jobs):>7} {sum(by_bits.values()):>11.2f}")
    print()
    print(f"wall time {wall:.1f} s for {result.designed} tables ({wall / max(1, result.designed) * 1000:.0f} ms "
          f"each); CPU {cpu:.1f} s; goal <= {GOAL_S:.0f} s: {'met' if wall <= GOAL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
