"""Run mutmut's mutants of one module, each in a fresh pytest subprocess (no fork).

mutmut 3 forks a process per mutant from a parent that has the tests imported; with torch
loaded the forked children did not finish. This script uses mutmut only to generate the
mutants (the `mutants/` tree and its `.meta` file, from the `[mutmut]` section of setup.cfg
in the current directory, as tools/mutation.sh writes it), then runs

    MUTANT_UNDER_TEST=<name> python -m pytest -x <tests> [-k <select>]

in `mutants/` for every mutant, `--jobs` at a time, and stores each exit code in the `.meta`
file, so `mutmut results`, `mutmut show` and `mutmut export-cicd-stats` read the results as
if `mutmut run` had made them. A run past `--timeout` seconds counts as killed (timeout).
With --survivors it generates nothing and runs the survivors of an earlier run again (copy
new tests into mutants/tests first). tools/mutation.sh calls it for torch/functional:

    python tools/mutation_subprocess.py --jobs 2 --timeout 120 -k EXPR tests/a.py tests/b.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def generate() -> list[Path]:
    """mutmut's generation step only; returns the .meta files of the mutated modules."""
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    create_mutants(1)
    return sorted(Path("mutants").rglob("*.py.meta"))


def run_one(name: str, tests: list[str], select: str | None, timeout: float) -> tuple[str, int, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=no", *tests]  # no tensor reprs
    if select:
        cmd += ["-k", select]
    env = dict(os.environ, MUTANT_UNDER_TEST=name, PYTHONPATH=os.path.abspath("mutants"))
    start = time.monotonic()
    try:
        rc = subprocess.run(cmd, cwd="mutants", env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 24  # mutmut's code for a timeout (counted as killed)
    return name, rc, time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tests", nargs="+")
    ap.add_argument("-k", dest="select")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--survivors", action="store_true",
                    help="no generation: run the survivors of an earlier run again (after new tests)")
    a = ap.parse_args()
    metas = sorted(Path("mutants").rglob("*.py.meta")) if a.survivors else generate()
    # the unmutated tree must pass, or every mutant would count as killed
    _, rc, secs = run_one("", a.tests, a.select, a.timeout)
    print(f"clean run: exit {rc} in {secs:.0f} s", flush=True)
    if rc != 0:
        sys.exit("the tests fail without a mutant; nothing run")
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        if a.survivors:
            meta["exit_code_by_key"] = {n: None if c == 0 else c for n, c in meta["exit_code_by_key"].items()}
        names = [n for n, code in meta["exit_code_by_key"].items() if code is None]
        with ThreadPoolExecutor(a.jobs) as pool:
            for i, (name, rc, secs) in enumerate(
                    pool.map(lambda n: run_one(n, a.tests, a.select, a.timeout), names), 1):
                meta["exit_code_by_key"][name] = 0 if rc == 0 else (rc if rc in (24, 5) else 1)
                meta["durations_by_key"][name] = secs
                meta_path.write_text(json.dumps(meta, indent=4))  # results so far survive a budget stop
                print(f"{i}/{len(names)} {name}: {'survived' if rc == 0 else 'killed'} ({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
