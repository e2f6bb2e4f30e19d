"""fewbit_activation: exact forward, grad == grad_out * q(x), b bits saved per element."""

import functools
import math
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fewbit_design.activations import REGISTRY  # noqa: E402
from fewbit_design.designer import design  # noqa: E402
from fewbit_design.table import Table  # noqa: E402
from fewbit_design.torch import cpu as cpu_path  # noqa: E402
from fewbit_design.torch import fewbit_activation, kernels, packed_nbytes, torch_activation  # noqa: E402
from fewbit_design.torch import functional as functional_mod  # noqa: E402
from fewbit_design.torch.functional import _DOUBLE_BACKWARD, _EXPORT_WARNING  # noqa: E402
from fewbit_design.torch.reference import TORCH_FORWARD  # noqa: E402
from fewbit_design.runtime_tables import round_up_f32  # noqa: E402

ACTIVATIONS = sorted(REGISTRY)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@functools.lru_cache(maxsize=None)
def table_for(name, bits):
    return design(name, bits, grid=64)  # a coarse grid keeps 21 x 8 designs fast


def hand_table(bits, levels=None, codes=None, lo=-4.0, hi=4.0, activation="gelu"):
    m = 2 ** bits if codes is None else len(codes)
    lv = np.linspace(-0.5, 1.5, 2 ** bits) if levels is None else np.asarray(levels, float)
    codes = np.arange(m) if codes is None else np.asarray(codes)
    return Table(activation=activation, bits=bits, boundaries=np.linspace(lo, hi, m - 1), codes=codes,
                 levels=lv, mse=0.0, relative_error=0.0,
                 partition="contiguous" if np.array_equal(codes, np.arange(m)) else "levelset")


def probe_inputs(table, dtype, n=2000, seed=0):
    """Normal inputs plus every boundary and its neighbours in `dtype` (where rounding bites)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    b = torch.from_numpy(table.boundaries.copy())
    if dtype == torch.float32:
        b32 = torch.from_numpy(round_up_f32(table.boundaries))
        probes = [b32, torch.nextafter(b32, torch.tensor(-math.inf))]
    else:
        bd = b.to(dtype)
        probes = [bd, torch.nextafter(bd, torch.tensor(math.inf, dtype=dtype)),
                  torch.nextafter(bd, torch.tensor(-math.inf, dtype=dtype))]
    x = torch.cat([x.to(dtype)] + [p.to(dtype) for p in probes])
    return x[torch.randperm(x.numel(), generator=gen)]


def expected_grad(table, x, g):
    """grad_out * q(x): q from Table.q in float64, cast to float32, multiplied in float32."""
    q = torch.from_numpy(table.q(x.detach().double().numpy()).astype(np.float32)).view(x.shape)
    return (g.float() * q).to(x.dtype)


def run(table, x, g):
    x = x.detach().requires_grad_(True)
    y = fewbit_activation(x, table)
    y.backward(g)
    return y, x.grad


def assert_equal(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_every_registry_activation_has_a_torch_forward():
    assert sorted(TORCH_FORWARD) == ACTIVATIONS


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_grad_is_grad_out_times_q(name, bits):
    table = table_for(name, bits)
    x = probe_inputs(table, torch.float32, seed=bits)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    y, grad = run(table, x, g)
    assert_equal(y, torch_activation(name, x, table.params))
    assert_equal(grad, expected_grad(table, x, g))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_grad_and_forward_in_other_dtypes(name, dtype):
    table = table_for(name, 3)
    x = probe_inputs(table, dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
    y, grad = run(table, x, g)
    assert y.dtype == grad.dtype == dtype
    assert_equal(y, torch_activation(name, x, table.params))
    assert_equal(grad, expected_grad(table, x, g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_exact_table_matches_torch_autograd(name, dtype):
    # relu' and leaky_relu' take two values: the 1-bit table is f' itself (except at x == 0)
    table = design(name, 1)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(3)).to(dtype)
    x = x[x != 0]
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    _, grad = run(table, x, g)
    ref = x.clone().requires_grad_(True)
    torch_activation(name, ref, table.params).backward(g)
    assert_equal(grad, ref.grad)


@pytest.mark.parametrize("bits", range(1, 9))
def test_eight_bit_codes_and_level_set_tables(bits):
    # every code value in use; then a level-set table (codes not 0..m-1) with the same levels
    m = 2 ** bits
    lv = np.random.default_rng(bits).normal(size=m)
    for codes in (np.arange(m), np.random.default_rng(bits).integers(0, m, size=m + 3)):
        table = hand_table(bits, lv, codes)
        x = probe_inputs(table, torch.float32, n=4000)
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
        assert_equal(run(table, x, g)[1], expected_grad(table, x, g))


def saved_storage_bytes(fn):
    """Bytes of the distinct storages that autograd saves while `fn` runs."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 7, 341, 1023, 4096])
def test_saved_bytes_are_b_bits_per_element(bits, n):
    table = hand_table(bits)
    x = torch.randn(n, requires_grad=True)
    nbytes, y = saved_storage_bytes(lambda: fewbit_activation(x, table))
    assert nbytes == packed_nbytes(n, bits) <= math.ceil(n * bits / 8) + 64
    y.sum().backward()  # the saved codes still give the gradient
    assert_equal(x.grad, expected_grad(table, x, torch.ones(n)))


def test_nothing_saved_without_grad():
    table = hand_table(3)
    x = torch.randn(100)
    assert saved_storage_bytes(lambda: fewbit_activation(x, table))[0] == 0
    x.requires_grad_(True)
    with torch.no_grad():
        nbytes, y = saved_storage_bytes(lambda: fewbit_activation(x, table))
    assert nbytes == 0 and not y.requires_grad
    assert_equal(y, torch.nn.functional.gelu(x))


def test_non_contiguous_input():
    table = table_for("silu", 3)
    base = torch.randn(6, 40, 8, generator=torch.Generator().manual_seed(5)) * 3
    x = base.transpose(0, 2)[:, ::3]  # (8, 14, 6), strided
    assert not x.is_contiguous()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).transpose(0, 1).contiguous().transpose(0, 1)
    y, grad = run(table, x, g)
    assert_equal(y, torch.nn.functional.silu(x))
    assert grad.shape == x.shape
    assert_equal(grad, expected_grad(table, x, g))


@pytest.mark.parametrize("shape", [(0,), (3, 0, 5)])
def test_empty_input(shape):
    x = torch.empty(shape, requires_grad=True)
    y = fewbit_activation(x, table_for("gelu", 2))
    y.sum().backward()
    assert y.shape == x.grad.shape == shape


@pytest.mark.parametrize("bits", [2, 8])  # the compare and the binary-search paths
def test_nan_and_inf_take_the_outer_levels(bits):
    table = hand_table(bits)
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, -1e30], requires_grad=True)
    y = fewbit_activation(x, table)
    y.backward(torch.ones(7))
    assert_equal(y, torch.nn.functional.gelu(x.detach()))
    lv = torch.tensor(table.levels, dtype=torch.float32)
    assert_equal(x.grad[:3], lv[[-1, -1, 0]])  # NaN and +inf: last level; -inf: first
    assert x.grad[3] == x.grad[4]  # -0.0 is 0.0
    assert_equal(x.grad, expected_grad(table, x, torch.ones(7)))


def test_cpu_bf16_autocast_matches_native():
    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(16, 64), torch.nn.Linear(64, 8)
    table = table_for("gelu", 4)
    x = torch.randn(32, 16)
    g = torch.randn(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin1(x)
        y_native = torch.nn.functional.gelu(h)
        y = fewbit_activation(h, table)
        out = lin2(y)
    assert h.dtype == y.dtype == torch.bfloat16
    assert_equal(y, y_native)
    gy, gh = torch.autograd.grad(out, (y, h), g)
    assert gh.dtype == torch.bfloat16
    assert_equal(gh, expected_grad(table, h, gy))


def test_double_backward_raises_instead_of_dropping_f2():
    # only codes are kept, so d(grad_x)/dx (the f'' term) is unknown: every second backward
    # through a few-bit activation must fail loudly, whether grad_out depends on x or not
    table = table_for("gelu", 3)
    x = torch.randn(30, dtype=torch.float64, requires_grad=True)
    w = torch.randn(30, dtype=torch.float64, requires_grad=True)
    for loss in (lambda y: y.sum(), lambda y: (y * x).sum()):   # grad_out constant / depends on x
        (gx,) = torch.autograd.grad(loss(fewbit_activation(x * w, table)), x, create_graph=True)
        with pytest.raises(RuntimeError, match=r"double backward through a few-bit activation \(gelu\)"):
            gx.square().sum().backward()   # a gradient penalty
    with pytest.raises(RuntimeError, match="f''"):
        torch.autograd.gradgradcheck(lambda z: fewbit_activation(z, table), (x,))
    g = torch.randn(30, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(fewbit_activation(x, table), x, g, create_graph=True)
    with pytest.raises(RuntimeError, match="unconvert"):
        torch.autograd.grad(gx.sum(), g)
    # one backward with create_graph=True is still fine and exact
    assert_equal(gx.detach(), expected_grad(table, x, g.detach()))


def test_torch_func_grad_and_vjp():
    table = table_for("silu", 2)
    x = torch.randn(40, dtype=torch.float32)
    g = torch.randn(40)
    want = expected_grad(table, x, torch.ones(40))
    assert_equal(torch.func.grad(lambda z: fewbit_activation(z, table).sum())(x), want)
    y, vjp = torch.func.vjp(lambda z: fewbit_activation(z, table), x)
    assert_equal(y, torch_activation("silu", x))
    assert_equal(vjp(g)[0], expected_grad(table, x, g))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.func.grad(lambda z: torch.func.grad(lambda u: fewbit_activation(u, table).sum())(z).sum())(x)


def test_round_up_to_float32():
    b = np.concatenate([np.random.default_rng(0).normal(size=1000) * 5, [0.0, -0.0, 1.0, 1e-40, -1e-40]])
    b32 = round_up_f32(b)
    assert b32.dtype == np.float32
    assert np.all(b32.astype(np.float64) >= b)
    below = np.nextafter(b32, np.float32(-np.inf)).astype(np.float64)
    assert np.all(below < b)


def test_bad_inputs():
    with pytest.raises(TypeError, match="floating"):
        fewbit_activation(torch.arange(3), hand_table(2))
    with pytest.raises(TypeError, match="Table"):
        fewbit_activation(torch.randn(3), "gelu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [3, 8])  # compare and binary-search paths
def test_cuda_matches_cpu(bits, dtype):
    table = table_for("gelu", bits)
    x = torch.cat([probe_inputs(table, dtype), torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)])
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(11)).to(dtype)
    y, grad = run(table, x, g)
    y_cuda, grad_cuda = run(table, x.cuda(), g.cuda())
    assert_equal(grad_cuda.cpu(), grad)
    assert_equal(grad, expected_grad(table, x, g))
    assert_equal(y_cuda, torch.nn.functional.gelu(x.cuda()))


# ==================================================================================================
# Claims. fewbit_activation's contract, on small hand-made tables (fast: the mutation run of
# torch/functional.py runs these tests once per mutant, tools/mutation.sh).
#
# Each test pins a part of what the README and the docstrings promise: y is the torch op's
# output with the table's parameters; the gradient is grad_y * q(x) in float32, cast to x's
# dtype, in x's shape, for every dtype and on each CPU path (numba for 16/32-bit floats, the
# torch path for float64 and under create_graph); exactly the packed codes are saved; the
# Triton kernels never serve CPU tensors; a second backward raises the documented message;
# no gradient needed, nothing is coded; export warns and exports the torch op.
# ==================================================================================================


EVERY_DTYPE = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def small_table(bits=3, levelset=False, activation="gelu", params=None):
    """2**bits intervals on [-3, 3] (levelset: codes in a shuffled order, one code unused)."""
    m = 2 ** bits
    rng = np.random.default_rng(bits)
    levels = rng.normal(size=m)
    codes = rng.integers(0, m - 1, size=m) if levelset else np.arange(m)
    return Table(activation=activation, params=params or {}, bits=bits,
                 boundaries=np.linspace(-3.0, 3.0, m - 1), codes=codes, levels=levels,
                 mse=0.0, relative_error=0.0, partition="levelset" if levelset else "contiguous")


def inputs(table, dtype, shape=(37, 11), seed=0):
    """Normal inputs in `shape`, with every boundary, its neighbours and the special values."""
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    b = torch.from_numpy(table.boundaries.copy())
    special = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0], dtype=torch.float64)
    probes = torch.cat([b, b + 1e-3, b - 1e-3, special]).to(dtype)
    x = (torch.randn(n, generator=gen, dtype=torch.float64) * 2).to(dtype)
    x[:probes.numel()] = probes
    return x[torch.randperm(n, generator=gen)].view(shape)


@pytest.fixture
def no_triton(monkeypatch):
    """The fused Triton kernels must not run for CPU tensors (even under TRITON_INTERPRET)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a Triton kernel was called for CPU tensors")
    monkeypatch.setattr(kernels, "fused_forward", refuse)
    monkeypatch.setattr(kernels, "fused_backward", refuse)
    monkeypatch.setattr(kernels, "fused_y_exact", refuse)


@pytest.fixture
def calls(monkeypatch):
    """Counts of the numba CPU path's encode and decode calls."""
    count = {"encode": 0, "decode": 0}
    for name in count:
        def spy(*args, _name=name, _orig=getattr(cpu_path, name)):
            count[_name] += 1
            return _orig(*args)
        monkeypatch.setattr(cpu_path, name, spy)
    return count


@pytest.mark.parametrize("levelset", [False, True])
@pytest.mark.parametrize("dtype", EVERY_DTYPE)
def test_forward_and_gradient_exact_in_every_dtype(dtype, levelset, no_triton, calls):
    table = small_table(3, levelset, activation="elu", params={"alpha": 0.5})
    x = inputs(table, dtype).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = fewbit_activation(x, table)
    assert_equal(y, torch.nn.functional.elu(x.detach(), 0.5))   # the table's alpha, not the default
    y.backward(g)
    assert_equal(x.grad, expected_grad(table, x, g))
    lv = torch.tensor(table.levels[table.codes], dtype=torch.float32)
    flat, gflat = x.detach().view(-1), g.float().view(-1)
    for value, interval in ((math.nan, -1), (math.inf, -1), (-math.inf, 0)):
        i = int(torch.nonzero(flat == value if not math.isnan(value) else flat.isnan())[0])
        assert x.grad.view(-1)[i] == (gflat[i] * lv[interval]).to(dtype)
    # 16/32-bit floats take the numba pass both ways; float64 the torch path
    served = 0 if dtype == torch.float64 else 1
    assert calls == {"encode": served, "decode": served}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_without_numba_the_torch_path_serves_every_dtype(dtype, monkeypatch, no_triton):
    # numba unusable (functional.cpu is None): the torch path codes and decodes 16/32-bit x too
    monkeypatch.setattr(functional_mod, "cpu", None)
    table = small_table(3, levelset=True)
    x = inputs(table, dtype, shape=(13, 5)).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    y = fewbit_activation(x, table)
    assert_equal(y, torch.nn.functional.gelu(x.detach()))
    y.backward(g)
    assert_equal(x.grad, expected_grad(table, x, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_create_graph_gradient_exact_and_second_backward_raises(dtype, no_triton, calls):
    table = small_table(2, levelset=True, activation="silu")
    x = inputs(table, dtype, shape=(5, 8)).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    (gx,) = torch.autograd.grad(fewbit_activation(x, table), x, g, create_graph=True)
    assert_equal(gx.detach(), expected_grad(table, x, g))
    assert calls["decode"] == 0            # create_graph: the torch path (a graph through g)
    assert gx.requires_grad                # tied to x through the saved anchor
    with pytest.raises(RuntimeError) as e:
        gx.sum().backward()                # grad_out did not need grad: still a second backward
    assert str(e.value) == _DOUBLE_BACKWARD.format(name="silu")
    gr = g.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(fewbit_activation(x, table), x, gr, create_graph=True)
    with pytest.raises(RuntimeError) as e:
        torch.autograd.grad(gx.sum(), gr)  # d(grad_x)/d(grad_y) passes through the same guard
    assert str(e.value) == _DOUBLE_BACKWARD.format(name="silu")


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_saves_exactly_the_packed_codes(bits, no_triton):
    table = small_table(bits, levelset=bits > 1)
    x = inputs(table, torch.float32, shape=(3, 341)).requires_grad_(True)
    nbytes, y = saved_storage_bytes(lambda: fewbit_activation(x, table))
    assert nbytes == packed_nbytes(x.numel(), bits)
    y.backward(torch.ones_like(y))
    assert_equal(x.grad, expected_grad(table, x, torch.ones_like(y)))


def test_no_gradient_needed_nothing_coded(no_triton, calls):
    table = small_table(3, activation="elu", params={"alpha": 0.5})
    x = inputs(table, torch.float32, shape=(50,))
    want = torch.nn.functional.elu(x, 0.5)
    for needs_grad, grad_mode in ((False, True), (False, False), (True, False)):
        xi = x.clone().requires_grad_(needs_grad)
        with torch.set_grad_enabled(grad_mode):
            nbytes, y = saved_storage_bytes(lambda: fewbit_activation(xi, table))
        assert nbytes == 0 and y.grad_fn is None
        assert_equal(y, want)
    assert calls == {"encode": 0, "decode": 0}


def test_export_warns_and_returns_the_torch_op(monkeypatch, no_triton, calls):
    # torch.export inlines the Function's forward and drops its backward: fewbit_activation
    # warns and returns the plain op (tests/test_torch_compile.py runs
    # a real export)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    table = small_table(3, activation="elu", params={"alpha": 0.5})
    x = inputs(table, torch.float32, shape=(50,)).requires_grad_(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = fewbit_activation(x, table)
    assert [(str(w.message), w.category) for w in caught] == [(_EXPORT_WARNING, UserWarning)]
    # attributed to the caller's line, never to a line inside fewbit_design (the exact frame
    # is this file; under mutmut's trampolines it is mutmut's, so the test asks only this)
    assert not caught[0].filename.startswith(os.path.dirname(os.path.dirname(functional_mod.__file__)))
    assert_equal(y, torch.nn.functional.elu(x.detach(), 0.5))
    assert "Elu" in type(y.grad_fn).__name__ and calls["encode"] == 0


def test_bad_input_messages():
    with pytest.raises(TypeError, match=r"^fewbit activations take a floating tensor, got torch\.int64$"):
        fewbit_activation(torch.arange(3), small_table(2))
    with pytest.raises(TypeError, match=r"^table must be a fewbit_design Table, got str$"):
        fewbit_activation(torch.randn(3), "gelu")
    with pytest.raises(ValueError, match=r"^activation 'nope' has no torch implementation in fewbit_design\.torch$"):
        fewbit_activation(torch.randn(3, requires_grad=True), small_table(2, activation="nope"))


FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@pytest.mark.skipif(not kernels.triton_available(torch.device("cpu")), reason="needs TRITON_INTERPRET=1 (set by conftest without a GPU)")
@pytest.mark.parametrize("y_exact", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_branch_through_the_interpreter(dtype, y_exact, monkeypatch):
    # The CUDA branch of forward and backward, run on CPU tensors by Triton's interpreter:
    # where the fused kernels serve x, forward asks fused_y_exact about (name, dtype, device,
    # params), lets the kernel compute y only when it says exact (else torch's op), and both
    # directions give the same y, codes and gradient as everywhere else.
    asked, launched = [], []
    fused_forward, fused_backward = kernels.fused_forward, kernels.fused_backward

    def y_exact_fake(*args):
        asked.append(args)
        return y_exact

    def forward_spy(x, bounds32, code_map, bits, act, params):
        launched.append(("forward", act, params))
        return fused_forward(x, bounds32, code_map, bits, act, params)

    def backward_spy(packed, grad_y, levels, bits, *, dtype):
        launched.append(("backward", dtype))
        return fused_backward(packed, grad_y, levels, bits, dtype=dtype)

    monkeypatch.setattr(functional_mod, "_use_kernels", lambda t: t.dtype in FUSED_DTYPES)
    monkeypatch.setattr(kernels, "fused_y_exact", y_exact_fake)
    monkeypatch.setattr(kernels, "fused_forward", forward_spy)
    monkeypatch.setattr(kernels, "fused_backward", backward_spy)
    table = small_table(3, levelset=True, activation="leaky_relu", params={"negative_slope": 0.25})
    x = inputs(table, dtype, shape=(9, 7)).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    y = fewbit_activation(x, table)
    assert_equal(y, torch.nn.functional.leaky_relu(x.detach(), 0.25))
    assert asked == [("leaky_relu", dtype, x.device, {"negative_slope": 0.25})]
    y.backward(g)
    assert_equal(x.grad, expected_grad(table, x, g))
    assert launched == [("forward", "leaky_relu" if y_exact else None, {"negative_slope": 0.25}),
                        ("backward", dtype)]
    asked.clear()
    launched.clear()
    # x not contiguous: the torch / numba path forward; an activation without a fused kernel:
    # fused_y_exact not asked, the kernel only codes
    xs = x.detach()[:, ::2].requires_grad_(True)
    fewbit_activation(xs, table).sum().backward()
    assert asked == [] and launched == [("backward", dtype)]   # grad_y is served by the kernel
    assert_equal(xs.grad, expected_grad(table, xs, torch.ones_like(xs)))
    launched.clear()
    xe = x.detach().requires_grad_(True)
    elu = small_table(3, activation="elu", params={"alpha": 0.5})
    ye = fewbit_activation(xe, elu)
    assert_equal(ye, torch.nn.functional.elu(x.detach(), 0.5))
    assert asked == [] and launched == [("forward", None, {"alpha": 0.5})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_func_transforms(dtype, no_triton):
    # under torch.func the Function goes through autograd.Function.apply (the eager path
    # skips it): gradients and vjp equal grad_y * q(x), and a second derivative raises
    table = small_table(3, levelset=True, activation="elu", params={"alpha": 0.5})
    x = inputs(table, dtype, shape=(6, 7))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    assert_equal(torch.func.grad(lambda z: fewbit_activation(z, table).sum())(x),
                 expected_grad(table, x, torch.ones_like(x)))
    y, vjp = torch.func.vjp(lambda z: fewbit_activation(z, table), x)
    assert_equal(y, torch.nn.functional.elu(x, 0.5))
    assert_equal(vjp(g)[0], expected_grad(table, x, g))
    with pytest.raises(RuntimeError, match=r"double backward through a few-bit activation \(elu\)"):
        torch.func.grad(lambda z: torch.func.grad(lambda u: fewbit_activation(u, table).sum())(z).sum())(x)
