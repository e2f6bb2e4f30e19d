"""The numba CPU path against the torch path (its oracle): same bytes, same gradients."""

import json
import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from fewbit_design.table import Table  # noqa: E402
from fewbit_design.torch import cpu, cpu_kernels, cpu_team, default_table, fewbit_activation, functional  # noqa: E402
from fewbit_design.torch.reference import encode as reference_encode  # noqa: E402
from fewbit_design.torch.packing import pack_codes, unpack_codes  # noqa: E402
from fewbit_design.torch.tables import table_constants  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BLOCK = cpu_kernels._BLOCK
# tails of every kind: single elements, bytes, blocks; the last one is split over threads
LENGTHS = [1, 7, 8, 9, BLOCK - 1, BLOCK + 9, 3 * BLOCK + 5, cpu_team._PARALLEL_MIN + 8 * BLOCK + 3]


def _table(bits, codes, bounds, partition, levels=None):
    levels = np.linspace(-0.5, 1.5, 2 ** bits) if levels is None else np.asarray(levels, float)
    return Table(activation="gelu", bits=bits, boundaries=np.asarray(bounds, float), codes=np.asarray(codes),
                 levels=levels, mse=0.0, relative_error=0.0, partition=partition)


def contiguous_table(bits):
    """2^b intervals with awkward bounds: 0, subnormals, float32 values and values between."""
    m = 2 ** bits
    rng = np.random.default_rng(bits)
    special = [0.0, 1e-40, -3e-45, 1.0, np.float32(0.1).item(), 0.1, 1 + 2 ** -9]
    bounds = np.unique(np.concatenate([special, rng.normal(0, 2, m)]))
    return _table(bits, np.arange(m), np.sort(rng.choice(bounds, m - 1, replace=False)), "contiguous")


def levelset_table(bits):
    """The shipped level-set table from 3 bits; below, non-monotone codes by hand."""
    if bits >= 3:
        return default_table("gelu", bits)
    codes = [0, 1, 0] if bits == 1 else [2, 0, 3, 1, 2, 0]
    return _table(bits, codes, np.linspace(-2, 2, len(codes) - 1), "levelset")


def wrapping_table():
    """Codes jumping 255 -> 0 -> 255 (differences wrap mod 256), 30 intervals (compares)."""
    return _table(8, [255, 0] * 15, np.linspace(-3, 3, 29), "levelset")


def crowded_table():
    """40 bounds inside one float32 prefix: no bracket table, the binary search."""
    return _table(6, np.arange(41) % 64, 1.0 + np.arange(1, 41) * 2.0 ** -20, "levelset")


def test_large_tensors_run_on_torchs_openmp_team_and_match_one_thread(monkeypatch):
    """Where torch runs on OpenMP (Linux wheels), a large launch goes to GOMP_parallel of
    torch's own runtime with torch.get_num_threads() threads, each coding its share of the
    blocks; the bytes and gradients equal those of the calling thread working alone, and of
    the torch path (uneven shares: 40 blocks and a tail over 2 and 3 threads)."""
    team = cpu_team._team()
    if team is None:
        pytest.skip("torch does not run on an OpenMP runtime here: every launch is one thread")
    table = levelset_table(4)
    c = table_constants(table, "cpu")
    x = probe(table, torch.float32, 40 * BLOCK + 3)
    calls = []
    monkeypatch.setattr(cpu_team, "_TEAM", [(lambda *args: (calls.append(args[2:]), team[0](*args))[1], *team[1:])])
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 3):
            torch.set_num_threads(threads)
            packed = cpu.encode(x, c.bounds32, c.code_map, 4)
            results.append((packed, cpu.decode(packed, x, c.levels, 4)))
    finally:
        torch.set_num_threads(old)
    assert calls == [(2, 0), (2, 0), (3, 0), (3, 0)]
    (packed, grad), (packed3, grad3) = results
    assert torch.equal(packed3, packed) and torch.equal(grad3.view(torch.int32), grad.view(torch.int32))
    monkeypatch.setattr(cpu_team, "_TEAM", [None])                    # the calling thread alone
    assert torch.equal(cpu.encode(x, c.bounds32, c.code_map, 4), packed)
    assert torch.equal(cpu.decode(packed, x, c.levels, 4).view(torch.int32), grad.view(torch.int32))
    want_packed, want_grad = reference(x, x, c, 4)
    assert torch.equal(packed, want_packed)
    assert_same(grad, want_grad)


def test_the_team_is_the_runtime_torch_was_linked_with():
    """_find_team picks the OpenMP runtime mapped from torch's own lib folder (pip wheels ship
    one), not another one (numba's omppool brings the system's libgomp)."""
    team = cpu_team._team()
    if team is None:
        pytest.skip("torch does not run on an OpenMP runtime here")
    with open("/proc/self/maps") as maps:
        runtimes = {line.split(None, 5)[-1].strip() for line in maps if "gomp" in line or "omp.so" in line}
    own = [p for p in runtimes if p.startswith(str(Path(torch.__file__).parent))]
    if own:
        import ctypes
        runtime = ctypes.CDLL(own[0])
        assert [ctypes.cast(f, ctypes.c_void_p).value for f in (team[0], runtime.omp_get_thread_num,
                                                                runtime.omp_get_num_threads)] == [
            ctypes.cast(runtime.GOMP_parallel, ctypes.c_void_p).value, *team[1:]]


_FORK = """
import os, sys, torch
from fewbit_design.torch import cpu, default_table
from fewbit_design.torch.tables import table_constants
c = table_constants(default_table("gelu", 3), "cpu")
x = torch.randn(1 << 18)
want = cpu.encode(x, c.bounds32, c.code_map, 3)       # the parent used the team
pid = os.fork()
if pid == 0:     # as DataLoader workers do: one thread in a forked child
    torch.set_num_threads(1)
    os._exit(0 if torch.equal(cpu.encode(x, c.bounds32, c.code_map, 3), want) else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_with_one_thread_gives_the_same_bytes():
    """libgomp's team does not survive a fork (torch's own ops hang in a forked child that keeps
    several threads, as they do without fewbit); with torch.set_num_threads(1), which DataLoader
    workers set, the child codes alone and gets the parent's bytes."""
    done = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


TABLES = ([(f"contiguous-{b}", contiguous_table, b) for b in range(1, 9)]
          + [(f"levelset-{b}", levelset_table, b) for b in range(1, 9)]
          + [("wrapping", lambda b: wrapping_table(), 8), ("crowded", lambda b: crowded_table(), 6)])


def special_values(dtype):
    fi = torch.finfo(dtype)
    tiny = fi.smallest_normal
    sub = tiny * fi.eps                      # the smallest subnormal
    vals = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, sub, -sub, tiny - sub, -(tiny - sub),
            tiny, -tiny, fi.max, -fi.max]
    x = torch.tensor(vals, dtype=torch.float64).to(dtype)
    # NaN with other payloads and signs
    nans = {torch.float32: [0x7F800001, 0xFFC00001, 0x7FFFFFFF], torch.float16: [0x7C01, 0xFE01, 0x7FFF],
            torch.bfloat16: [0x7F81, 0xFFC1, 0x7FFF]}[dtype]
    if dtype == torch.float32:
        payload = torch.tensor(nans, dtype=torch.int64).to(torch.int32).view(torch.float32)
    else:
        payload = torch.tensor(nans, dtype=torch.int32).to(torch.int16).view(dtype)
    return torch.cat([x, payload])


def probe(table, dtype, n, seed=0):
    """n inputs: every boundary and its neighbours in dtype, special values, random bit patterns,
    normal values, shuffled."""
    gen = torch.Generator().manual_seed(seed)
    c = table_constants(table, "cpu")
    b = c.bounds32.to(dtype)
    up, down = torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)
    parts = [b, torch.nextafter(b, up), torch.nextafter(b, down), special_values(dtype)]
    if dtype == torch.float32:
        parts.append(torch.from_numpy(table.boundaries.astype(np.float32)))   # rounded to nearest
        bits = torch.randint(-2 ** 31, 2 ** 31, (512,), generator=gen, dtype=torch.int64).to(torch.int32)
    else:
        bits = torch.randint(-2 ** 15, 2 ** 15, (512,), generator=gen, dtype=torch.int32).to(torch.int16)
    parts.append(bits.view(dtype))
    x = torch.cat([p.to(dtype) for p in parts])
    x = torch.cat([x, (torch.randn(max(n - x.numel(), 0), generator=gen) * 3).to(dtype)])
    return x[torch.randperm(x.numel(), generator=gen)][:n]


def reference(x, g, c, bits):
    """The torch path: packed bytes and grad_x."""
    packed = pack_codes(reference_encode(x, c.bounds32, c.bounds64, c.code_map), bits)
    scale = c.levels.index_select(0, unpack_codes(packed, bits, x.numel()).int()).view(x.shape)
    return packed, (g.float() * scale).to(x.dtype)


def assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,make,bits", TABLES, ids=[t[0] for t in TABLES])
def test_bytes_and_grads_equal_the_torch_path(name, make, bits, dtype):
    table = make(bits)
    c = table_constants(table, "cpu")
    x = probe(table, dtype, LENGTHS[-1])
    g = probe(table, dtype, LENGTHS[-1], seed=1)      # grads with specials and random patterns too
    for n in LENGTHS if bits in (3, 8) else LENGTHS[::3]:
        want_packed, want_grad = reference(x[:n], g[:n], c, bits)
        packed = cpu.encode(x[:n], c.bounds32, c.code_map, bits)
        assert torch.equal(packed, want_packed), (name, dtype, n)
        assert_same(cpu.decode(want_packed, g[:n], c.levels, bits), want_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_every_16_bit_pattern(dtype):
    """Every input and every grad_out pattern, through the compares and the code table; levels
    that make rounding ties (1 + 2^-8, 1 + 2^-11), overflow (1e4) and subnormals (2^-20)."""
    every = torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int32).to(torch.int16).view(dtype)
    g = every[torch.randperm(every.numel(), generator=torch.Generator().manual_seed(0))]
    levels = [1 + 2 ** -8, 1 + 2 ** -11, 3.0, 2 ** -20, 1e4, -0.7, 0.0, 1.0]
    for table in (_table(3, np.arange(8), [-2, -1, -0.0, 1e-6, 0.5, 1, 2], "contiguous", levels),
                  levelset_table(8)):
        c = table_constants(table, "cpu")
        want_packed, want_grad = reference(every, g, c, table.bits)
        assert torch.equal(cpu.encode(every, c.bounds32, c.code_map, table.bits), want_packed)
        assert_same(cpu.decode(want_packed, g, c.levels, table.bits), want_grad)


def _forward_backward(x, table, g):
    """y, grad_x for grad_out g, grad_x for y.sum() (an expanded grad_out)."""
    x1, x2 = x.detach().requires_grad_(True), x.detach().requires_grad_(True)
    y = fewbit_activation(x1, table)
    y.backward(g)
    fewbit_activation(x2, table).sum().backward()
    return y, x1.grad, x2.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autograd_through_the_cpu_path(dtype, monkeypatch):
    """FewbitFunction on CPU: y and grads as on the torch path, for non-contiguous x and an
    expanded grad_out; the CPU kernels are the ones called."""
    table = levelset_table(3)
    base = probe(table, dtype, 3 * 4099).view(3, 4099)
    calls = []
    for name in ("encode", "decode"):
        monkeypatch.setattr(cpu, name, lambda *a, _f=getattr(cpu, name), _n=name: calls.append(_n) or _f(*a))
    for x in (base, base.t(), base[:, ::3]):
        g = torch.randn(x.shape).to(dtype)
        got = _forward_backward(x, table, g)
        monkeypatch.setattr(functional, "cpu", None)           # the torch path
        want = _forward_backward(x, table, g)
        monkeypatch.setattr(functional, "cpu", cpu)
        for a, b in zip(got, want):
            assert_same(a, b)
    assert calls.count("encode") == 6 and calls.count("decode") == 6


def test_two_threads_give_the_same_bytes():
    """Two threads coding and decoding at once (each splitting its blocks over the helper
    threads) give what one thread gives."""
    table = levelset_table(3)
    c = table_constants(table, "cpu")
    inputs = [probe(table, torch.float32, cpu_team._PARALLEL_MIN * 2 + 5, seed=s) for s in (0, 1)]
    want = [(cpu.encode(x, c.bounds32, c.code_map, 3), cpu.decode(cpu.encode(x, c.bounds32, c.code_map, 3),
                                                                   x, c.levels, 3)) for x in inputs]
    start, errors = threading.Barrier(2), []

    def work(i):
        try:
            start.wait()
            for _ in range(20):
                packed = cpu.encode(inputs[i], c.bounds32, c.code_map, 3)
                grad = cpu.decode(packed, inputs[i], c.levels, 3)
                assert torch.equal(packed, want[i][0])
                assert torch.equal(grad.view(torch.int32), want[i][1].view(torch.int32))   # bit for bit
        except BaseException as e:       # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_float64_and_double_backward_take_the_torch_path(monkeypatch):
    table = levelset_table(3)
    monkeypatch.setattr(cpu, "decode", None)           # fails if called
    x = torch.randn(100, requires_grad=True)
    g = torch.randn(100, requires_grad=True)
    (gx,) = torch.autograd.grad(fewbit_activation(x, table), x, g, create_graph=True)
    assert gx.requires_grad                            # differentiable in grad_out
    monkeypatch.setattr(cpu, "encode", None)
    x = torch.randn(100, dtype=torch.float64, requires_grad=True)
    fewbit_activation(x, table).sum().backward()
    assert x.grad.dtype == torch.float64


def test_a_failing_numba_falls_back_to_the_torch_path(monkeypatch):
    def broken(*args):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(cpu_team, "_make_cfunc", broken)
    monkeypatch.setattr(cpu_team, "_WORKERS", {})
    monkeypatch.setattr(cpu_team, "_BROKEN", [])
    table = levelset_table(3)
    c = table_constants(table, "cpu")
    x = probe(table, torch.float32, 1000)
    want_packed, want_grad = reference(x, x, c, 3)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        assert torch.equal(cpu.encode(x, c.bounds32, c.code_map, 3), want_packed)
    assert not cpu.serves(x)                         # off for good in this process
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(cpu.decode(want_packed, x, c.levels, 3), want_grad)


_PROBE = """
import json, threading, numba, torch
from fewbit_design.torch import cpu, cpu_team, default_table
from fewbit_design.torch.tables import table_constants
cpu.warm_up()
hits = {f"{kind} {dtype}": w.cache_hits for (kind, dtype), w in cpu_team._WORKERS.items()}
# two threads launching at once, each on its own OpenMP team
c = table_constants(default_table("gelu", 3), "cpu")
x = torch.randn(1 << 18)
want = cpu.encode(x, c.bounds32, c.code_map, 3)
same = []
def work():
    same.append(all(torch.equal(cpu.encode(x, c.bounds32, c.code_map, 3), want) for _ in range(30)))
threads = [threading.Thread(target=work) for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
try:   # no numba parallel region ran: no OpenMP/TBB workers spinning beside torch's threads
    layer = numba.threading_layer()
except ValueError:
    layer = None
print(json.dumps({"hits": hits, "layer": layer, "same": same, "team": cpu_team._team() is not None}))
"""


def test_kernels_load_from_the_disk_cache_threads_are_safe_and_no_numba_pool_starts():
    """A fresh process finds every kernel in numba's disk cache (no compilation in a training
    process after the first), two threads are safe, and numba's threading layer is never
    started (its workers spin after a launch and stall torch's own threads)."""
    cpu.warm_up()                                     # fills the cache if this checkout is fresh
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["hits"]) == 2 * len(DTYPES) and set(out["hits"].values()) == {1}, out   # loaded, not compiled
    assert out["layer"] is None and out["same"] == [True, True], out


def test_compiling_outside_warm_up_is_announced(monkeypatch, tmp_path):
    """A kernel that is not in numba's disk cache is compiled with a RuntimeWarning that names
    it and points to warm_up(), unless warm_up() itself asks; a cached one loads silently."""
    (tmp_path / "fewbit_probe_kernel.py").write_text("def probe(data):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    probe = importlib.import_module("fewbit_probe_kernel").probe
    with pytest.warns(RuntimeWarning, match="compiling"):
        first = cpu_team._make_cfunc(probe, "compiling the probe")
    assert first.cache_hits == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cpu_team._make_cfunc(probe, "compiling the probe")      # from the disk cache now
    assert again.cache_hits == 1

    asked = []
    monkeypatch.setattr(cpu_team, "_make_cfunc", lambda fn, message=None: asked.append(message) or first)
    monkeypatch.setattr(cpu_team, "_WORKERS", {})
    cpu.warm_up((torch.float32,))
    assert asked == [None, None]
    monkeypatch.setattr(cpu_team, "_WORKERS", {})
    cpu_team._worker("encode", torch.bfloat16)
    assert asked[-1] == cpu_team._COMPILING.format(kind="encode", dtype="bfloat16") and "warm_up()" in asked[-1]
