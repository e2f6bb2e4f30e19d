"""fewbit_design.jax against the torch runtime: the same residual bytes and the same gradients,
for every registry activation x 1..8 bits, float32 and bfloat16, ragged lengths, special values."""

import functools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402

import fewbit_design as fd  # noqa: E402
from fewbit_design.activations import REGISTRY  # noqa: E402
from fewbit_design.jax import JAX_FORWARD, fewbit_activation, packed_nbytes  # noqa: E402
from fewbit_design.runtime_tables import round_up_f32  # noqa: E402
from fewbit_design.table import Table  # noqa: E402
from fewbit_design.torch import fewbit_activation as torch_fewbit  # noqa: E402

ACTIVATIONS = sorted(REGISTRY)
SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45,
                    1.1754944e-38, 1.0, -1.0, 3.0, -3.0, 6.0, 20.0], np.float32)


def shipped(name, bits):
    return fd.shipped_table(name, bits)


def probe_inputs(table, n=1023, seed=0):
    """(n,) float32: every boundary (rounded up to float32) and the float32 just below it, the
    special values, then normal samples; shuffled."""
    rng = np.random.default_rng(seed)
    b32 = round_up_f32(table.boundaries)
    probes = np.concatenate([b32, np.nextafter(b32, np.float32(-np.inf)), SPECIAL])
    rest = (rng.standard_normal(max(n - probes.size, 0)) * 3).astype(np.float32)
    x = np.concatenate([probes, rest])
    return rng.permutation(x)[:n] if x.size > n else rng.permutation(x)


def torch_run(table, x, g, dtype):
    """(packed uint8 bytes that autograd saved, grad_x as float32 numpy)."""
    saved = []

    def pack(t):
        if t.dtype == torch.uint8:
            saved.append(t.detach().clone())
        return t

    xt = torch.from_numpy(x).to(dtype).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = torch_fewbit(xt, table)
    y.backward(torch.from_numpy(g).to(dtype))
    assert len(saved) == 1
    return saved[0].numpy().tobytes(), xt.grad.float().numpy()


def jax_run(table, x, g, dtype):
    """(packed uint8 bytes that jax.vjp keeps, read from the vjp function's leaves, grad_x)."""
    y, vjp = jax.vjp(lambda v: fewbit_activation(v, table), jnp.asarray(x).astype(dtype))
    residuals = [leaf for leaf in jax.tree_util.tree_leaves(vjp) if leaf.dtype == jnp.uint8]
    assert len(residuals) == 1
    (grad,) = vjp(jnp.asarray(g).astype(dtype))
    return np.asarray(residuals[0]).tobytes(), np.asarray(grad.astype(jnp.float32))


def test_every_registry_activation_has_a_jax_forward():
    assert sorted(JAX_FORWARD) == ACTIVATIONS


CASES = [(name, bits, "float32") for name in ACTIVATIONS for bits in range(1, 9)]
CASES += [(name, bits, "bfloat16") for name in ACTIVATIONS for bits in (3, 8)]   # bf16: 2 widths keep it < 60 s


@pytest.mark.parametrize("name,bits,dtype", CASES)
def test_residual_bytes_and_grads_equal_torch(name, bits, dtype):
    table = shipped(name, bits)
    x = probe_inputs(table, seed=bits)
    g = np.random.default_rng(7).standard_normal(x.size).astype(np.float32)
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    t_bytes, t_grad = torch_run(table, x, g, tdt)
    j_bytes, j_grad = jax_run(table, x, g, getattr(jnp, dtype))
    assert len(j_bytes) == packed_nbytes(x.size, bits)
    assert j_bytes == t_bytes
    np.testing.assert_allclose(j_grad, t_grad, rtol=0, atol=1e-6 if dtype == "float32" else 0)
    np.testing.assert_array_equal(j_grad, t_grad)   # in fact bit for bit


def hand_table(bits, m, seed):
    """A level-set table with m intervals and ragged codes (exercises > 16 intervals)."""
    rng = np.random.default_rng(seed)
    bounds = np.sort(rng.uniform(-5, 5, m - 1))
    bounds[m // 2] = 0.0   # a boundary at 0: where -0.0 and 0.0 meet
    bounds = np.unique(bounds)
    codes = rng.integers(0, 2 ** bits, bounds.size + 1)
    codes[: 2 ** bits] = np.arange(2 ** bits) if bounds.size + 1 >= 2 ** bits else codes[: 2 ** bits]
    levels = rng.uniform(-1, 2, 2 ** bits)
    return Table(activation="silu", bits=bits, boundaries=bounds, codes=codes, levels=levels, mse=0.0,
                 relative_error=0.0, partition="levelset")


@pytest.mark.parametrize("n", [1, 7, 8, 9, 341, 1023, 4097])
@pytest.mark.parametrize("bits,m", [(1, 5), (3, 40), (5, 3), (8, 300)])
def test_ragged_lengths_and_many_intervals(bits, m, n):
    table = hand_table(bits, m, seed=bits * 1000 + n)
    x = probe_inputs(table, n=n, seed=n)
    g = np.random.default_rng(n).standard_normal(x.size).astype(np.float32)
    t_bytes, t_grad = torch_run(table, x, g, torch.float32)
    j_bytes, j_grad = jax_run(table, x, g, jnp.float32)
    assert len(j_bytes) == bits * math.ceil(x.size / 8)
    assert j_bytes == t_bytes
    np.testing.assert_array_equal(j_grad, t_grad)


def test_special_values_follow_the_interval_convention():
    table = hand_table(3, 12, seed=1)
    x = SPECIAL
    y, vjp = jax.vjp(lambda v: fewbit_activation(v, table), jnp.asarray(x))
    (grad,) = vjp(jnp.ones_like(y))
    want = table.q(x.astype(np.float64)).astype(np.float32)   # numpy searchsorted: NaN last
    np.testing.assert_array_equal(np.asarray(grad), want)


def test_packing_worked_example():
    from fewbit_design.jax import pack_codes, unpack_codes

    codes = jnp.array([5, 3, 0, 7, 1, 6, 2, 4, 6], jnp.uint8)
    packed = pack_codes(codes, 3)
    assert bytes(np.asarray(packed)) == bytes([0x1B, 0x00, 0x6A, 0x01, 0xA9, 0x01])
    np.testing.assert_array_equal(np.asarray(unpack_codes(packed, 3, 9)), np.asarray(codes))


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_round_trip(bits):
    from fewbit_design.jax import pack_codes, unpack_codes

    codes = np.random.default_rng(bits).integers(0, 2 ** bits, 1001).astype(np.uint8)
    packed = pack_codes(jnp.asarray(codes), bits)
    assert packed.shape == (packed_nbytes(1001, bits),)
    np.testing.assert_array_equal(np.asarray(unpack_codes(packed, bits, 1001)), codes)


@functools.lru_cache(maxsize=None)
def _params_table(name, params):
    return fd.design(name, 3, params=dict(params), grid=64)


@pytest.mark.parametrize("name,params", [("leaky_relu", (("negative_slope", 0.2),)), ("elu", (("alpha", 0.5),)),
                                         ("softplus", (("beta", 2.0), ("threshold", 5.0))),
                                         ("hardtanh", (("max_val", 2.0), ("min_val", -0.5)))])
def test_parameters_are_honoured(name, params):
    table = _params_table(name, params)
    x = probe_inputs(table, n=500)
    y = fewbit_activation(jnp.asarray(x), table)
    want = REGISTRY[name]._f(x.astype(np.float64), **dict(params))
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-6, atol=1e-6, equal_nan=True)
    g = np.ones_like(x)
    t_bytes, t_grad = torch_run(table, x, g, torch.float32)
    j_bytes, j_grad = jax_run(table, x, g, jnp.float32)
    assert j_bytes == t_bytes
    np.testing.assert_array_equal(j_grad, t_grad)
