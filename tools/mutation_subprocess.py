"""Run mutmut's mutants of one module, each in a fresh pytest subprocess (no fork).

mutmut 3 forks a process per mutant from a parent that has the tests imported; with torch
loaded the forked children did not finish. This script uses mutmut only to generate the
mutants (the `mutants/` tree and its `.meta` file, from the `[mutmut]` section of setup.cfg
in the current directory, as tools/mutation.sh writes it), then runs

    MUTANT_UNDER_TEST=<name> python -m pytest -x <tests> [-k <select>]

in `mutants/` for every mutant, `--jobs` at a time, and stores each exit code in the `.meta`
file, so `mutmut results`, `mutmut show` and `mutmut export-cicd-stats` read the results as
if `mutmut run` had made them. A run past `--timeout` seconds counts as killed (timeout).
With --survivors it generates nothing and runs the survivors and the mutants no test reached
of an earlier run again (copy new tests into mutants/tests first).

With --preload MODULE[:FUNCTION] (repeatable) the parent imports those modules (from
`mutants/`, with tests/conftest.py's environment), calls FUNCTION, runs the tests once with
no mutant active, then forks one child per mutant that runs pytest.main in-process: each
child starts from the same clean, warm state (no mutant is active in the parent; a child's
changes die with it), and the per-mutant cost drops from the imports and first calls
(torch, Triton's interpreter, numba's dispatchers) to the tests themselves. The parent runs no torch op first (set_num_threads(1): no OpenMP pool
to inherit); that is what made mutmut's own fork hang. tools/mutation.sh calls it for
torch/functional, with -k picking the claims tests of tests/test_torch_functional.py:

    python tools/mutation_subprocess.py --jobs 1 --timeout 120 \
        --preload fewbit_design.torch.cpu:warm_up -k "$SELECT" tests/test_torch_functional.py
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
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


def preload(specs: list[str]) -> None:
    """Import MODULE (and call FUNCTION) for each MODULE[:FUNCTION], as the tests would see them."""
    sys.path.insert(0, os.path.abspath("mutants"))
    os.environ["PYTHONPATH"] = os.path.abspath("mutants")
    if Path("mutants/tests/conftest.py").exists():
        runpy.run_path("mutants/tests/conftest.py")   # its environment (e.g. TRITON_INTERPRET)
    import torch
    torch.set_num_threads(1)   # no intra-op thread pool in the parent: children fork cleanly
    for spec in specs:
        module, _, function = spec.partition(":")
        mod = importlib.import_module(module)
        if function:
            getattr(mod, function)()


def run_in_parent(tests: list[str], select: str | None) -> int:
    """The tests once in this process, no mutant active: a check, and it loads what the tests
    load (numba dispatchers, Triton's interpreter, lookup tables), so children start warm."""
    import pytest
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=short", *tests]
    if select:
        args += ["-k", select]
    here, out, err = os.getcwd(), os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.environ["MUTANT_UNDER_TEST"] = ""
    try:
        os.chdir("mutants")
        os.dup2(null, 1)
        os.dup2(null, 2)
        return int(pytest.main(args))
    finally:
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.chdir(here)


def run_forked(names: list[str], tests: list[str], select: str | None, timeout: float, jobs: int):
    """Yield (name, exit code, seconds) for each mutant, each run by pytest.main in a forked child."""
    args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=no", *tests]
    if select:
        args += ["-k", select]
    pending, running = list(names), {}   # pid -> (name, start)
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            pid = os.fork()
            if pid == 0:   # child: the mutant, the tests, the exit code
                code = 1
                try:
                    os.environ["MUTANT_UNDER_TEST"] = name
                    os.chdir("mutants")
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, 1)
                    os.dup2(null, 2)
                    import pytest
                    code = int(pytest.main(args))
                finally:
                    os._exit(code)
            running[pid] = (name, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            name, start = running.pop(pid)
            yield name, os.waitstatus_to_exitcode(status), time.monotonic() - start
            continue
        for pid, (name, start) in list(running.items()):
            if time.monotonic() - start > timeout:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                running.pop(pid)
                yield name, 24, time.monotonic() - start   # mutmut's code for a timeout (killed)
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tests", nargs="+")
    ap.add_argument("-k", dest="select")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--preload", action="append", default=[], metavar="MODULE[:FUNCTION]",
                    help="import in the parent, then fork one pytest.main per mutant (see above)")
    ap.add_argument("--only", metavar="TEXT",
                    help="run only the mutants whose name contains TEXT (e.g. a function's name)")
    ap.add_argument("--survivors", action="store_true",
                    help="no generation: run the survivors (and no-test mutants) of an earlier run again (after new tests)")
    a = ap.parse_args()
    metas = sorted(Path("mutants").rglob("*.py.meta")) if a.survivors else generate()
    # the unmutated tree must pass, or every mutant would count as killed; this first run
    # also fills numba's disk cache for the mutants/ copy (minutes of compiling on a busy machine)
    _, rc, secs = run_one("", a.tests, a.select, 10 * a.timeout)
    print(f"clean run: exit {rc} in {secs:.0f} s", flush=True)
    if rc != 0:
        sys.exit("the tests fail without a mutant; nothing run")
    if a.preload:
        preload(a.preload)
        start = time.monotonic()
        rc = run_in_parent(a.tests, a.select)   # warms the caches every child then inherits
        print(f"clean run in the parent: exit {rc} in {time.monotonic() - start:.1f} s", flush=True)
        _, rc2, secs = next(run_forked([""], a.tests, a.select, a.timeout, 1))
        print(f"clean run, forked: exit {rc2} in {secs:.1f} s", flush=True)
        if rc != 0 or rc2 != 0:
            sys.exit("the tests fail without a mutant (in the parent or a forked child); nothing run")
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        if a.survivors:
            meta["exit_code_by_key"] = {n: None if c in (0, 33) else c   # survived, no tests
                                        for n, c in meta["exit_code_by_key"].items()}
        names = [n for n, code in meta["exit_code_by_key"].items()
                 if code is None and (a.only is None or a.only in n)]
        with ThreadPoolExecutor(a.jobs) as pool:
            results = (run_forked(names, a.tests, a.select, a.timeout, a.jobs) if a.preload else
                       pool.map(lambda n: run_one(n, a.tests, a.select, a.timeout), names))
            for i, (name, rc, secs) in enumerate(results, 1):
                meta["exit_code_by_key"][name] = 0 if rc == 0 else (rc if rc in (24, 5) else 1)
                meta["durations_by_key"][name] = secs
                meta_path.write_text(json.dumps(meta, indent=4))  # results so far survive a budget stop
                print(f"{i}/{len(names)} {name}: {'survived' if rc == 0 else 'killed'} ({secs:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
