"""numba entry points (for the DP and refinement steps) that start fast from a warm cache.

A ``cache=True`` dispatcher that finds its machine code on disk still initialises numba's
whole compiler first (``target_context.refresh()``: every typing and lowering registry, and
scipy.linalg for BLAS), which costs 0.5-0.8 s per process, more than the design itself. The
cached code needs none of it, only numba's runtime (NRT). ``kernel`` wraps a dispatcher so
that its first call loads the cached overload with just the runtime initialised, exactly as
the dispatcher's own cache hit does minus the refresh; on a cache miss, or if numba's
internals ever change, the call falls through to the dispatcher, which compiles (and caches)
as usual. Either way the same machine code runs.

Only entry points called from Python are wrapped; kernels called from jitted code stay plain
dispatchers (their code is linked into the caller's cached library).
"""

from __future__ import annotations

import functools

import numba

__all__ = ["kernel"]


def kernel(fn):
    """``numba.njit(cache=True)(fn)`` behind a wrapper that loads warm caches quickly."""
    dispatcher = numba.njit(cache=True)(fn)
    first = [True]

    @functools.wraps(fn)
    def call(*args):
        if first[0]:     # callers pass fixed types; any other types take numba's usual path
            first[0] = False
            _load_cached(dispatcher, args)
        return dispatcher(*args)

    call.dispatcher = dispatcher
    return call


def _load_cached(dispatcher, args) -> bool:
    """Install the cached overload for args' types without a compiler refresh; False if absent."""
    try:
        from numba.core.compiler_lock import global_compiler_lock

        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
        with global_compiler_lock:
            if sig in dispatcher.overloads:
                return True
            ctx = dispatcher.targetctx
            cres = from_disk(dispatcher._cache, sig, ctx)
            if cres is None or cres.objectmode:
                return False
            ctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            dispatcher.add_overload(cres)
            dispatcher._cache_hits[sig] += 1
            return True
    except Exception:   # any internal change in numba: the dispatcher's own path still works
        return False


def from_disk(cache, sig, ctx):
    """The compile result that numba's disk `cache` holds for `sig`, loaded with only the part
    of the target context's refresh() that cached code needs (the runtime); None if absent.
    Numba internals: callers catch any exception and fall back to numba's public path."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.runtime import rtsys

    with global_compiler_lock:   # reentrant: _load_cached holds it already
        rtsys.initialize(ctx)
        return cache._load_overload(sig, ctx)
