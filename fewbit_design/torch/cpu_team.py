"""The CPU path's launcher: one numba C callback (cfunc) per (kind, dtype), made on first use
(from numba's disk cache, else compiled), run on torch's own OpenMP team.

A large launch goes to GOMP_parallel of the OpenMP runtime that torch's parallel_for uses, so
every thread of torch's team runs the cfunc on its share of the blocks (the split parallel_for
makes: the same core then computes f(x) on that part); below _PARALLEL_MIN elements, or where
torch does not run on OpenMP, the calling thread runs it alone. Either way no thread is added
beside torch's: an extra pool (numba's prange layers, or Python helper threads) spun or waited
for cores that torch's OpenMP workers were spinning on after each op, and the interleaved
forward and backward took twice as long. Each Python thread has its own launch records,
counters and scratch, so any number of Python threads may launch at once (each call runs with
the GIL released).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import warnings

import numpy as np
import torch
from numba import types

from .._jit import from_disk
from .cpu_kernels import _BLOCK, _SLOT, CFUNC_SOURCES, DecodeLaunch, EncodeLaunch

_PARALLEL_MIN = 1 << 16  # below this many elements a parallel launch costs more than it saves
_LOCK = threading.Lock()  # guards the first load of each worker and the team lookup
_RECORDS = {"encode": EncodeLaunch, "decode": DecodeLaunch}

_WORKERS: dict = {}    # (kind, dtype) -> numba CFunc, made (compiled or loaded from disk) on first use
_BROKEN: list = []     # the exception that turned the CPU path off, if any
_TEAM: list = []       # [GOMP_parallel of torch's OpenMP runtime, or None], looked up on first use

_COMPILING = ("fewbit_design: compiling the CPU path's {kind} kernel for {dtype} (once per machine: "
              "several seconds; numba caches it on disk). Call fewbit_design.torch.cpu.warm_up() "
              "before training to do this up front.")


def _worker(kind: str, dtype, announce: bool = True):
    """The cfunc for (kind, dtype): from numba's disk cache when there (without the compiler
    start-up that numba's own cache hit costs), else compiled and cached, with a warning
    when `announce` (compiling in the first training step should not go unnoticed)."""
    worker = _WORKERS.get((kind, dtype))
    if worker is None:
        with _LOCK:
            worker = _WORKERS.get((kind, dtype))
            if worker is None:
                fmt = str(dtype)[6:]
                message = _COMPILING.format(kind=kind, dtype=fmt) if announce else None
                worker = _WORKERS[(kind, dtype)] = _make_cfunc(CFUNC_SOURCES[(kind, fmt)], message)
    return worker


def _make_cfunc(fn, message: str | None = None):
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    cfunc = CFunc(fn, sigutils.normalize_signature(types.void(types.voidptr)), locals={}, options={})
    cfunc.enable_caching()
    try:
        cres = from_disk(cfunc._cache, cfunc._sig, cfunc._targetdescr.target_context)
        if cres is not None:   # what CFunc.compile does on a cache hit
            cfunc._library = cres.library
            cfunc._wrapper_name = cres.fndesc.llvm_cfunc_wrapper_name
            cfunc._wrapper_address = cres.library.get_pointer_to_function(cfunc._wrapper_name)
            cfunc._cache_hits += 1
            return cfunc
    except Exception:   # any internal change in numba: its public path below still works
        pass
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=5)
    cfunc.compile()
    return cfunc


def _team():
    """(GOMP_parallel(fn, data, threads, flags), address of omp_get_thread_num, of
    omp_get_num_threads) of the OpenMP runtime that torch's own parallel_for runs on, so that a
    launch uses torch's team of threads; None where torch does not run on OpenMP or its runtime
    is not found (the calling thread then works alone)."""
    if not _TEAM:
        with _LOCK:
            if not _TEAM:
                _TEAM.append(_find_team())
    return _TEAM[0]


def _find_team():
    if not sys.platform.startswith("linux") or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "/lib" in line}
    except OSError:
        return None
    runtimes = sorted(p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp", "libomp")))
    own = [p for p in runtimes if p.startswith(os.path.dirname(torch.__file__) + os.sep)]
    if len(own) != 1 and len(runtimes) != 1:   # torch's runtime cannot be told apart from another
        return None
    try:
        runtime = ctypes.CDLL((own or runtimes)[0])   # the loaded library, not a new copy
        parallel, thread_num, num_threads = runtime.GOMP_parallel, runtime.omp_get_thread_num, runtime.omp_get_num_threads
    except (OSError, AttributeError):
        return None
    parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None
    address = (lambda f: ctypes.cast(f, ctypes.c_void_p).value)
    return parallel, address(thread_num), address(num_threads)


_LOCAL = threading.local()   # per Python thread: its launch records and scratch, with their addresses


def record(kind: str):
    """This Python thread's launch record for `kind` (an EncodeLaunch or a DecodeLaunch), for
    the caller to fill before `launch`; one launch at a time per thread."""
    local = _LOCAL.__dict__
    rec = local.get(kind)
    if rec is None:
        rec = local[kind] = _RECORDS[kind]()
        local[kind + "_at"] = ctypes.addressof(rec)
    return rec


def launch(kind: str, dtype, n: int) -> bool:
    """Run the (kind, dtype) cfunc over n elements on this thread's record(kind): on torch's
    OpenMP team when n is large, else in this thread (the GIL released either way); the record's
    team part is filled here. False (and the CPU path off for good, with a warning) if numba fails."""
    try:
        worker = _worker(kind, dtype)
    except Exception as error:   # a numba that cannot compile these kernels: the torch path
        disable(error)
        return False
    team = _team() if n >= _PARALLEL_MIN else None
    threads = min(torch.get_num_threads(), (n + _BLOCK - 1) // _BLOCK) if team is not None else 1
    local = _LOCAL.__dict__
    if local.get("slots", 0) < threads:
        local["scratch"] = np.empty(threads * (_SLOT + 8), np.uint8)   # slots, then the counters
        local["scratch_at"], local["slots"] = local["scratch"].ctypes.data, threads
    counters = local["scratch_at"] + threads * _SLOT
    ctypes.memset(counters, 0, 8 * threads)
    t = local[kind].team
    t.scratch, t.counters = local["scratch_at"], counters
    t.thread_num, t.num_threads = team[1:] if threads > 1 else (0, 0)
    if threads > 1:
        team[0](worker.address, local[kind + "_at"], threads, 0)    # a team of at most `threads`
    else:
        worker.ctypes(local[kind + "_at"])                           # thread 0 of 1
    return True


def disable(error: BaseException) -> None:
    """Turn the CPU path off for this process, with a warning that names the error."""
    _BROKEN.append(error)
    warnings.warn(f"fewbit_design: the numba CPU path failed ({error!r}); the torch path serves CPU tensors",
                  RuntimeWarning, stacklevel=3)
