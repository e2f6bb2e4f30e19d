"""fewbit_design.jax under jax's transforms: the residual is b * ceil(n/8) bytes (read from the
vjp function and from print_saved_residuals), jit, vmap, grad, remat, bfloat16, second order
refused, flax modules, tables by name / file, and the same FewbitError messages as torch."""

import math
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax.ad_checkpoint import print_saved_residuals  # noqa: E402

import fewbit_design as fd  # noqa: E402
from fewbit_design.errors import FewbitError  # noqa: E402
from fewbit_design.formats import write_table  # noqa: E402
from fewbit_design.jax import fewbit_activation, jax_activation, packed_nbytes  # noqa: E402

GELU3 = fd.shipped_table("gelu", 3)


def x_of(shape, seed=0, dtype=jnp.float32):
    return (jax.random.normal(jax.random.PRNGKey(seed), shape) * 2).astype(dtype)


def q_grad(table, x, g):
    """g * q(x): q from Table.q (numpy float64 -> float32), multiplied in float32."""
    q = table.q(np.asarray(x.astype(jnp.float32), np.float64)).astype(np.float32)
    return (np.asarray(g, np.float32) * q).astype(x.dtype)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(1,), (7,), (1023,), (3, 341), (4096,)])
def test_vjp_keeps_b_bits_per_element(bits, shape):
    table = fd.shipped_table("silu", bits)
    x = x_of(shape, seed=bits)
    y, vjp = jax.vjp(lambda v: fewbit_activation(v, table), x)
    leaves = jax.tree_util.tree_leaves(vjp)
    n = math.prod(shape)
    assert sum(leaf.nbytes for leaf in leaves) == bits * math.ceil(n / 8) == packed_nbytes(n, bits)
    assert [leaf.dtype for leaf in leaves if leaf.size] == [jnp.uint8]      # x itself is not kept
    np.testing.assert_array_equal(np.asarray(vjp(jnp.ones_like(y))[0]), q_grad(table, x, jnp.ones_like(y)))


def test_print_saved_residuals_shows_only_the_code(capsys):
    x = x_of((1023,))
    print_saved_residuals(lambda v: fewbit_activation(v, GELU3), x)
    out = capsys.readouterr().out
    assert f"u8[{3 * 128}]" in out and "f32[1023]" not in out, out
    print_saved_residuals(jax.nn.gelu, x)                  # the native op keeps x (f32[1023])
    assert "f32[1023]" in capsys.readouterr().out


def test_forward_is_jax_op_and_jit_matches_eager():
    x = x_of((5, 77))
    f = lambda v: fewbit_activation(v, GELU3)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(f(x)), np.asarray(jax.nn.gelu(x, approximate=False)))
    g = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    loss = lambda v: jnp.sum(f(v) * g)  # noqa: E731
    eager = jax.grad(loss)(x)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.grad(loss))(x)), np.asarray(eager))
    np.testing.assert_array_equal(np.asarray(eager), q_grad(GELU3, x, g))


def test_vmap_of_grad_and_batched_residual():
    x = x_of((6, 100))
    row_grad = jax.grad(lambda v: jnp.sum(fewbit_activation(v, GELU3) ** 2))
    batched = jax.vmap(row_grad)(x)
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(row_grad(x[i])))
    _, vjp = jax.vmap(lambda v: jax.vjp(lambda u: fewbit_activation(u, GELU3), v))(x)
    assert [leaf.shape for leaf in jax.tree_util.tree_leaves(vjp) if leaf.size] == [(6, 3 * 13)]


def test_grad_through_an_mlp_uses_the_table():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    w1, w2, x = jax.random.normal(k1, (8, 16)), jax.random.normal(k2, (16, 1)), jax.random.normal(k3, (32, 8))

    def loss(params, act):
        return jnp.mean((act(x @ params[0]) @ params[1]) ** 2)

    def manual(params):    # the same gradient by hand: backprop with q(h) in place of f'(h)
        h = x @ params[0]
        y = jax.nn.gelu(h, approximate=False)
        d = 2 * (y @ params[1]) / y.shape[0]
        dh = (d @ params[1].T) * jnp.asarray(GELU3.q(np.asarray(h, np.float64)).astype(np.float32))
        return x.T @ dh, y.T @ d

    got = jax.jit(jax.grad(loss), static_argnums=1)((w1, w2), lambda h: fewbit_activation(h, GELU3))
    want = manual((w1, w2))
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_remat_recomputes_and_gives_the_same_gradient(capsys):
    x = x_of((2, 300))
    f = lambda v: jnp.sin(fewbit_activation(v * 2.0, GELU3))  # noqa: E731
    g1 = jax.grad(lambda v: f(v).sum())(x)
    g2 = jax.jit(jax.grad(lambda v: jax.checkpoint(f)(v).sum()))(x)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))
    policy = jax.checkpoint_policies.everything_saveable
    g3 = jax.grad(lambda v: jax.checkpoint(f, policy=policy)(v).sum())(x)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g3))
    print_saved_residuals(jax.checkpoint(f), x)      # remat keeps the input, no code
    out = capsys.readouterr().out                    # (and the table's few constants)
    assert f"u8[{3 * 75}]" not in out and "f32[2,300] from the argument" in out, out
    print_saved_residuals(f, x)                      # without remat: the code, not x
    out = capsys.readouterr().out
    assert f"u8[{3 * 75}]" in out and "f32[2,300] from the argument" not in out, out


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_under_jit(dtype):
    x = x_of((1023,), dtype=dtype)
    g = jnp.ones_like(x)
    y, grad = jax.jit(lambda v: jax.vjp(lambda u: fewbit_activation(u, GELU3), v)[1](g))(x), None
    grad = jax.jit(jax.grad(lambda v: jnp.sum(fewbit_activation(v, GELU3).astype(jnp.float32))))(x)
    assert grad.dtype == dtype and y[0].dtype == dtype
    np.testing.assert_array_equal(np.asarray(grad.astype(jnp.float32)),
                                  np.asarray(q_grad(GELU3, x, g).astype(np.float32)))
    assert fewbit_activation(x, GELU3).dtype == dtype


def test_second_order_is_refused():
    f = lambda v: jnp.sum(fewbit_activation(v, GELU3))  # noqa: E731
    x = x_of((10,))
    for second in (jax.grad(lambda v: jnp.sum(jax.grad(f)(v))), jax.hessian(f), jax.jacfwd(jax.grad(f))):
        with pytest.raises(NotImplementedError, match=r"second-order differentiation through a few-bit "
                                                      r"activation \(gelu\) is not supported"):
            second(x)
    # a second derivative that does not pass through x is fine: d/dc of grad_x(c * g)
    dc = jax.grad(lambda c: jnp.sum(jax.vjp(lambda v: fewbit_activation(v, GELU3), x)[1](c * x)[0]))(1.0)
    np.testing.assert_allclose(float(dc), float(np.sum(q_grad(GELU3, x, x))), rtol=1e-6)


def test_table_by_name_file_and_object(tmp_path):
    x = x_of((100,))
    want = np.asarray(jax.grad(lambda v: jnp.sum(fewbit_activation(v, GELU3)))(x))
    path = write_table(GELU3, tmp_path / "g3.json")
    for source in ("gelu", path, str(path)):
        got = jax.grad(lambda v: jnp.sum(fewbit_activation(v, source, bits=3)))(x)
        np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(FewbitError, match="bits=4 disagrees with the table's bits=3"):
        fewbit_activation(x, GELU3, bits=4)


def test_bad_tables_give_the_torch_messages(tmp_path):
    torch_modules = pytest.importorskip("fewbit_design.torch.modules")
    from fewbit_design.jax import modules as jm

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "fewbit-table", "version": 1, "bits": 3, "boundaries": [1, 0]')
    cases = [("GELU", {"table": fd.design("silu", 2, grid=64)}),
             ("LeakyReLU", {"table": fd.design("leaky_relu", 1, grid=64), "negative_slope": 0.2}),
             ("SiLU", {"bits": 3, "table": fd.shipped_table("silu", 2)}),
             ("SiLU", {"bits": 9}),
             ("SiLU", {"table": str(tmp_path / "missing.json")}),
             ("SiLU", {"table": str(corrupt)})]
    for cls, kwargs in cases:
        with pytest.raises(FewbitError) as jax_err:
            getattr(jm, cls)(**kwargs)
        with pytest.raises(FewbitError) as torch_err:
            getattr(torch_modules, cls)(**kwargs)
        assert str(jax_err.value) == str(torch_err.value), cls
    with pytest.raises(FewbitError, match="corrupt.json"):
        fewbit_activation(jnp.ones(3), corrupt)


def test_every_registry_activation_has_a_module():
    from fewbit_design.activations import REGISTRY
    from fewbit_design.jax import modules as jm

    assert sorted(jm.MODULES) == sorted(REGISTRY)
    x = x_of((50,))
    for name, cls in jm.MODULES.items():
        m = cls(bits=2)
        assert m.table.activation == name and m.table.bits == 2
        np.testing.assert_array_equal(np.asarray(m(x)), np.asarray(jax_activation(name, x, m.table.params)))
    slope = jm.LeakyReLU(negative_slope=0.2, table=fd.design("leaky_relu", 1, params={"negative_slope": 0.2}, grid=64))
    np.testing.assert_allclose(np.asarray(slope(-jnp.ones(2))), -0.2, rtol=1e-7)


def test_swap_activations_in_an_nnx_model():
    from flax import nnx

    from fewbit_design.jax import modules as jm

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.up, self.act, self.down = nnx.Linear(4, 16, rngs=rngs), jax.nn.silu, nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.down(self.act(self.up(x)))

    model = MLP(nnx.Rngs(0))
    x = x_of((8, 4))
    before = model(x)
    assert jm.swap_activations(model, bits=4) == ["act"]
    assert isinstance(model.act, jm.SiLU) and model.act.table.bits == 4
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(before))
    grads = nnx.jit(lambda m: nnx.grad(lambda m: m(x).sum())(m))(model)
    assert grads.up.kernel[...].shape == (4, 16)
    with pytest.raises(FewbitError, match="no activation function as an attribute"):
        jm.swap_activations(model)


def test_swap_follows_jax_defaults_and_partials():
    import functools

    from flax import nnx

    from fewbit_design.jax import modules as jm

    class Acts(nnx.Module):
        def __init__(self):
            self.a, self.b = jax.nn.gelu, functools.partial(jax.nn.gelu, approximate=False)
            self.c, self.d = functools.partial(jax.nn.leaky_relu, negative_slope=0.2), jax.nn.softplus
            self.e = functools.partial(jax.nn.elu, 1.0)          # positional: left alone

        def __call__(self, x):
            return self.a(x) + self.b(x) + self.c(x) + self.d(x) + self.e(x)

    model = Acts()
    x = x_of((64,))
    before = model(x)
    assert jm.swap_activations(model, bits=2) == ["a", "b", "c"]
    assert isinstance(model.a, jm.GELUTanh) and isinstance(model.b, jm.GELU)
    assert isinstance(model.c, jm.LeakyReLU) and model.c.table.params == {"negative_slope": 0.2}
    assert model.d is jax.nn.softplus
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(before), rtol=1e-6, atol=1e-6)


def test_import_fewbit_design_imports_neither_jax_nor_torch():
    code = ("import sys, fewbit_design as fd; t = fd.shipped_table('gelu', 3); "
            "heavy = [m for m in ('jax', 'flax', 'torch') if m in sys.modules]; assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code = "import sys, fewbit_design.jax; assert 'torch' not in sys.modules and 'flax' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_float64_under_x64_compares_against_the_float64_boundaries():
    code = ("import jax, numpy as np; jax.config.update('jax_enable_x64', True); import jax.numpy as jnp; "
            "import fewbit_design as fd; from fewbit_design.jax import fewbit_activation; "
            "t = fd.shipped_table('gelu', 4); b = t.boundaries; "
            "x = np.concatenate([b, np.nextafter(b, -np.inf), [np.nan, np.inf, -np.inf, -0.0, -5e-324], "
            "np.random.default_rng(0).standard_normal(1000)]); "
            "g = jax.grad(lambda v: fewbit_activation(v, t).sum())(jnp.asarray(x)); assert g.dtype == jnp.float64; "
            "assert np.array_equal(np.asarray(g), t.q(x).astype(np.float32).astype(np.float64))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
