"""fewbit_activation: exact forward, grad == grad_out * q(x), b bits saved per element."""

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fewbit_design.activations import REGISTRY  # noqa: E402
from fewbit_design.designer import design  # noqa: E402
from fewbit_design.table import Table  # noqa: E402
from fewbit_design.torch import fewbit_activation, packed_nbytes, torch_activation  # noqa: E402
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
