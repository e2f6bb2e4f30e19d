"""The warm-cache start-up path of fewbit_design._jit."""

import json
import subprocess
import sys

import numba
import numpy as np

from fewbit_design._jit import _load_cached, kernel

# After a design in a fresh process: which of numba's compiler modules got imported, and
# whether every kernel the design ran came from the cache. numba.np.linalg is imported only
# by the target context's refresh(), which the fast path skips.
_PROBE = """
import json, sys
from fewbit_design.cli import main
from fewbit_design import dp, refine, special
try:
    main(["gelu", "--bits", "3", "--dist", "t:5", "--format", "json"])
except SystemExit as e:
    assert e.code == 0, e.code
kernels = [dp._segment_dp_kernel, dp._kmeans_dp_kernel, refine._tridiagonal_solve,
           special._ndtr_kernel, special._t_lower_tail_kernel]
print(json.dumps({"refreshed": "numba.np.linalg" in sys.modules,
                  "hits": {k.__name__: sum(k.dispatcher._cache_hits.values()) for k in kernels},
                  "misses": {k.__name__: sum(k.dispatcher._cache_misses.values()) for k in kernels}}))
"""


def _probe():
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_warm_design_loads_kernels_without_the_compiler():
    _probe()                          # fills numba's cache if this checkout is fresh
    warm = _probe()
    assert not warm["refreshed"], warm
    assert all(h == 1 for h in warm["hits"].values()), warm
    assert all(m == 0 for m in warm["misses"].values()), warm


def _plus_one(x):
    return x + 1


def test_kernel_takes_numbas_usual_path_for_new_types():
    f = kernel(_plus_one)
    assert f(np.arange(3.0)).tolist() == [1.0, 2.0, 3.0]
    assert f(np.arange(3)).tolist() == [1, 2, 3]     # a second signature: compiled or cached
    assert f.__name__ == "_plus_one" and len(f.dispatcher.overloads) == 2


def test_load_cached_is_false_without_a_cache():
    d = numba.njit(_plus_one)         # no cache=True: nothing to load, no exception
    assert _load_cached(d, (1.0,)) is False
    assert d(1.0) == 2.0
