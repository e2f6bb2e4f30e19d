"""torch.compile (fullgraph, no graph breaks) and torch.export of converted models, on CPU."""

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fewbit_design.torch as ft  # noqa: E402
from fewbit_design.torch.tables import default_table  # noqa: E402

from benchmarks._models import Block  # noqa: E402


def saved_bytes(fn, x):
    """fn(x) and {storage: (bytes, dtype)} of what autograd keeps for backward."""
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), t.dtype)
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return fn(x), kept


def test_compiled_block_is_one_graph_with_eager_gradients():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = Block(32, 4)
    assert [n for n, _, _ in ft.convert(block, bits=3)] == ["mlp.1"]
    x = torch.randn(4, 16, 32)
    explained = torch._dynamo.explain(block)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons

    out, eager_kept = saved_bytes(block, x)
    out.square().sum().backward()
    eager = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    out, compiled_kept = saved_bytes(torch.compile(block, fullgraph=True), x)
    out.square().sum().backward()
    for p, g in zip(block.parameters(), eager):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)  # inductor reorders LayerNorm/SDPA sums
    # compiled, the MLP still keeps 3 bits per hidden element, not its float32 input
    codes = 3 * 4 * 16 * 128 // 8
    assert sum(n for n, dt in eager_kept.values() if dt == torch.uint8) == codes
    assert sum(n for n, dt in compiled_kept.values() if dt == torch.uint8) == codes
    assert sum(n for n, dt in compiled_kept.values() if dt == torch.float32) <= \
        sum(n for n, dt in eager_kept.values() if dt == torch.float32)


def test_compiled_activation_gradient_is_bit_for_bit_eager():
    torch._dynamo.reset()
    table = default_table("silu", 4)
    x = torch.randn(1000, dtype=torch.float64)
    g = torch.randn(1000, dtype=torch.float64)

    def grad(fn):
        z = x.clone().requires_grad_()
        y = fn(z)
        y.backward(g)
        return y.detach(), z.grad

    want = grad(lambda z: ft.fewbit_activation(z, table))
    got = grad(torch.compile(lambda z: ft.fewbit_activation(z, table), backend="aot_eager", fullgraph=True))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_export_warns_and_exports_the_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), ft.GELU(bits=3), nn.Linear(32, 4))
    x = torch.randn(16, 8)
    with pytest.warns(UserWarning, match="torch.export does not carry a few-bit backward"):
        program = torch.export.export(model, (x,))
    code = program.graph_module.code
    assert "gelu" in code and "rshift" not in code  # the torch op, no dead coding and packing
    torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)
    strict = torch.export.export(model, (x,), strict=True)  # Dynamo drops the warning; same graph
    assert "gelu" in strict.graph_module.code and "rshift" not in strict.graph_module.code
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.export.export(model, (x,))
    assert not [w for w in caught if "few-bit" in str(w.message)]  # no gradients, nothing to warn about
