"""fewbit_activation's contract, on small hand-made tables (fast: the mutation run of
torch/functional.py runs this file once per mutant, tools/mutation.sh).

Each test pins a part of what the README and the docstrings promise: y is the torch op's
output with the table's parameters; the gradient is grad_y * q(x) in float32, cast to x's
dtype, in x's shape, for every dtype and on each CPU path (numba for 16/32-bit floats, the
torch path for float64 and under create_graph); exactly the packed codes are saved; the
Triton kernels never serve CPU tensors; a second backward raises the documented message;
no gradient needed, nothing is coded; export warns and exports the torch op.
"""

import math
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fewbit_design.table import Table  # noqa: E402
from fewbit_design.torch import cpu as cpu_path  # noqa: E402
from fewbit_design.torch import fewbit_activation, kernels, packed_nbytes  # noqa: E402
from fewbit_design.torch import functional as functional_mod  # noqa: E402
from fewbit_design.torch.functional import _DOUBLE_BACKWARD, _EXPORT_WARNING  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def hand_table(bits=3, levelset=False, activation="gelu", params=None):
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


def expected_grad(table, x, g):
    """g * q(x): q from Table.q (float64 -> float32), the product in float32, in x's dtype."""
    q = torch.from_numpy(table.q(x.detach().double().numpy()).astype(np.float32)).view(x.shape)
    return (g.float() * q).to(x.dtype)


def assert_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


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
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_gradient_exact_in_every_dtype(dtype, levelset, no_triton, calls):
    table = hand_table(3, levelset, activation="elu", params={"alpha": 0.5})
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
    table = hand_table(3, levelset=True)
    x = inputs(table, dtype, shape=(13, 5)).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    y = fewbit_activation(x, table)
    assert_equal(y, torch.nn.functional.gelu(x.detach()))
    y.backward(g)
    assert_equal(x.grad, expected_grad(table, x, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_create_graph_gradient_exact_and_second_backward_raises(dtype, no_triton, calls):
    table = hand_table(2, levelset=True, activation="silu")
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


def saved_storage_bytes(fn):
    """Bytes of the distinct storages that autograd saves while `fn` runs."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_saves_exactly_the_packed_codes(bits, no_triton):
    table = hand_table(bits, levelset=bits > 1)
    x = inputs(table, torch.float32, shape=(3, 341)).requires_grad_(True)
    nbytes, y = saved_storage_bytes(lambda: fewbit_activation(x, table))
    assert nbytes == packed_nbytes(x.numel(), bits)
    y.backward(torch.ones_like(y))
    assert_equal(x.grad, expected_grad(table, x, torch.ones_like(y)))


def test_no_gradient_needed_nothing_coded(no_triton, calls):
    table = hand_table(3, activation="elu", params={"alpha": 0.5})
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
    table = hand_table(3, activation="elu", params={"alpha": 0.5})
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
        fewbit_activation(torch.arange(3), hand_table(2))
    with pytest.raises(TypeError, match=r"^table must be a fewbit_design Table, got str$"):
        fewbit_activation(torch.randn(3), "gelu")
    with pytest.raises(ValueError, match=r"^activation 'nope' has no torch implementation in fewbit_design\.torch$"):
        fewbit_activation(torch.randn(3, requires_grad=True), hand_table(2, activation="nope"))


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
    table = hand_table(3, levelset=True, activation="leaky_relu", params={"negative_slope": 0.25})
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
    elu = hand_table(3, activation="elu", params={"alpha": 0.5})
    ye = fewbit_activation(xe, elu)
    assert_equal(ye, torch.nn.functional.elu(x.detach(), 0.5))
    assert asked == [] and launched == [("forward", None, {"alpha": 0.5})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_func_transforms(dtype, no_triton):
    # under torch.func the Function goes through autograd.Function.apply (the eager path
    # skips it): gradients and vjp equal grad_y * q(x), and a second derivative raises
    table = hand_table(3, levelset=True, activation="elu", params={"alpha": 0.5})
    x = inputs(table, dtype, shape=(6, 7))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    assert_equal(torch.func.grad(lambda z: fewbit_activation(z, table).sum())(x),
                 expected_grad(table, x, torch.ones_like(x)))
    y, vjp = torch.func.vjp(lambda z: fewbit_activation(z, table), x)
    assert_equal(y, torch.nn.functional.elu(x, 0.5))
    assert_equal(vjp(g)[0], expected_grad(table, x, g))
    with pytest.raises(RuntimeError, match=r"double backward through a few-bit activation \(elu\)"):
        torch.func.grad(lambda z: torch.func.grad(lambda u: fewbit_activation(u, table).sum())(z).sum())(x)
