"""The same design call gives the same table, bit for bit, in every process on one machine.

Across machines numpy's SIMD kernels (AVX2 or AVX-512) may round exp, erf, ... differently
by an ulp; README "Determinism" gives the bound that the shipped-tables test
(test_sweep.py) allows for.
"""

import os
import subprocess
import sys

import pytest

CALLS = [("gelu", 4, "normal:0,1", "auto"), ("tanh", 3, "normal:0,1", "levelset"),
         ("elu", 2, "uniform:-10,10", "contiguous"), ("silu", 3, "t:5", "auto")]

SCRIPT = f"""
import hashlib, fewbit_design as fd
from fewbit_design import formats
for act, bits, dist, part in {CALLS!r}:
    t = fd.design(act, bits, distribution=dist, partition=part)
    print(act, hashlib.sha256(formats.dumps(t, "json") + formats.dumps(t, "npz")).hexdigest())
"""


def _run(args, env=None):
    done = subprocess.run([sys.executable, *args], capture_output=True, env=env)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_design_is_bit_identical_across_processes():
    first = _run(["-c", SCRIPT])
    assert len(first.splitlines()) == len(CALLS)
    assert _run(["-c", SCRIPT]) == first


def test_cli_output_is_bit_identical_across_runs():
    args = ["-m", "fewbit_design", "gelu", "--bits", "3", "--format", "json"]
    assert _run(args) == _run(args)


@pytest.mark.parametrize("cpu", ["generic", "haswell"])
def test_numba_cpu_name_does_not_change_the_table(cpu, tmp_path):
    """numba's code for another target CPU (own cache, so it really compiles) gives the same bytes."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CACHE_DIR": str(tmp_path)}
    native = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    assert _run(["-c", SCRIPT], env=env) == _run(["-c", SCRIPT], env=native)
