"""Modules and convert(): torch.nn arguments, exact forward, tables checked, in-place swap."""

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fewbit_design.torch as ft  # noqa: E402
from fewbit_design.designer import design  # noqa: E402
from fewbit_design.errors import FewbitError  # noqa: E402

# (few-bit module, the torch reference computing the same f)
PAIRS = [
    (lambda **k: ft.ReLU(**k), nn.ReLU()),
    (lambda **k: ft.LeakyReLU(0.2, **k), nn.LeakyReLU(0.2)),
    (lambda **k: ft.ELU(0.5, **k), nn.ELU(0.5)),
    (lambda **k: ft.CELU(1.5, **k), nn.CELU(1.5)),
    (lambda **k: ft.SELU(**k), nn.SELU()),
    (lambda **k: ft.GELU(**k), nn.GELU()),
    (lambda **k: ft.GELU("tanh", **k), nn.GELU("tanh")),
    (lambda **k: ft.SiLU(**k), nn.SiLU()),
    (lambda **k: ft.Mish(**k), nn.Mish()),
    (lambda **k: ft.Softplus(2.0, 10.0, **k), nn.Softplus(2.0, 10.0)),
    (lambda **k: ft.Sigmoid(**k), nn.Sigmoid()),
    (lambda **k: ft.Tanh(**k), nn.Tanh()),
    (lambda **k: ft.Hardtanh(-2.0, 3.0, **k), nn.Hardtanh(-2.0, 3.0)),
    (lambda **k: ft.Hardsigmoid(**k), nn.Hardsigmoid()),
    (lambda **k: ft.Hardswish(**k), nn.Hardswish()),
    (lambda **k: ft.ReLU6(**k), nn.ReLU6()),
    (lambda **k: ft.Softsign(**k), nn.Softsign()),
    (lambda **k: ft.LogSigmoid(**k), nn.LogSigmoid()),
    (lambda **k: ft.Tanhshrink(**k), nn.Tanhshrink()),
    (lambda **k: ft.QuickGELU(**k), lambda x: x * torch.sigmoid(1.702 * x)),
    (lambda **k: ft.SquaredReLU(**k), lambda x: torch.square(torch.relu(x))),
]
IDS = [type(ref).__name__ if isinstance(ref, nn.Module) else f"fn{i}" for i, (_, ref) in enumerate(PAIRS)]


def q_grad(table, x, g):
    q = torch.from_numpy(table.q(x.detach().double().numpy()).astype(np.float32)).view(x.shape)
    return (g.float() * q).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make,ref", PAIRS, ids=IDS)
def test_module_forward_is_torch_and_grad_is_table(make, ref, dtype):
    mod = make(bits=2)
    x = (torch.randn(3, 257, generator=torch.Generator().manual_seed(1)) * 4).to(dtype).requires_grad_(True)
    g = torch.randn(3, 257, generator=torch.Generator().manual_seed(2)).to(dtype)
    y = mod(x)
    torch.testing.assert_close(y, ref(x.detach()), rtol=0, atol=0, equal_nan=True)
    y.backward(g)
    torch.testing.assert_close(x.grad, q_grad(mod.table, x, g), rtol=0, atol=0)
    assert mod.bits == mod.table.bits == 2


def test_torch_nn_arguments_and_repr():
    m = ft.LeakyReLU(0.2, True, bits=4)
    assert (m.negative_slope, m.inplace, m.bits) == (0.2, True, 4)
    assert m.table.params == {"negative_slope": 0.2}
    assert "negative_slope=0.2" in repr(m) and "bits=4" in repr(m) and "normal" in repr(m)
    g = ft.GELU(approximate="tanh")
    assert g.activation == "gelu_tanh" and g.bits == 3 and "approximate='tanh'" in repr(g)
    s = ft.Softplus(beta=2, threshold=5)
    assert (s.beta, s.threshold) == (2.0, 5.0)
    h = ft.Hardtanh(min_val=-2, max_val=2)
    assert (h.min_val, h.max_val) == (-2.0, 2.0)
    with pytest.raises(ValueError, match="approximate"):
        ft.GELU("fast")


def test_default_tables_are_cached():
    assert ft.GELU(bits=3).table is ft.GELU(bits=3).table
    assert ft.GELU(bits=3).table is ft.default_table("gelu", 3)


def test_table_object_and_file(tmp_path):
    table = design("silu", 2)
    path = tmp_path / "silu2.json"
    path.write_text(json.dumps(table.to_dict()))
    assert ft.SiLU(table=table).table is table
    from_file = ft.SiLU(table=str(path))
    assert from_file.table == table and from_file.bits == 2
    assert ft.SiLU(table=path, bits=2).bits == 2


def test_wrong_tables_are_refused():
    with pytest.raises(FewbitError, match="'silu', not 'gelu'"):
        ft.GELU(table=design("silu", 2))
    with pytest.raises(FewbitError, match="parameters"):
        ft.LeakyReLU(0.2, table=design("leaky_relu", 1))
    with pytest.raises(FewbitError, match="bits=3 disagrees"):
        ft.SiLU(bits=3, table=design("silu", 2))
    with pytest.raises(FewbitError, match="bits"):
        ft.SiLU(bits=9)
    with pytest.raises(FewbitError, match="missing.json"):
        ft.SiLU(table="missing.json")


def test_dtype_casts_do_not_touch_the_table():
    m = ft.GELU(bits=3)
    assert m.state_dict() == {}
    x = torch.randn(100, dtype=torch.float16, requires_grad=True)
    m.half()(x).sum().backward()
    torch.testing.assert_close(x.grad, q_grad(m.table, x, torch.ones_like(x)), rtol=0, atol=0)


class MyGELU(nn.Module):
    def forward(self, x):
        return torch.nn.functional.gelu(x)


def small_model():
    torch.manual_seed(0)
    shared = nn.Tanh()
    return nn.Sequential(
        nn.Linear(8, 16), nn.GELU(),
        nn.Sequential(nn.Linear(16, 16), nn.LeakyReLU(0.2), shared),
        nn.Linear(16, 16), MyGELU(), shared, nn.ReLU(),
        nn.Linear(16, 4))


def test_convert_and_unconvert():
    model = small_model()
    x = torch.randn(5, 8)
    before = model(x)
    originals = dict(model.named_modules(remove_duplicate=False))
    keys = list(model.state_dict())
    done = ft.convert(model, bits=2, extra={MyGELU: "gelu"}, exclude=lambda m, name: name == "6")
    assert list(model.state_dict()) == keys  # checkpoints load either way
    assert [(n, t) for n, t, _ in done] == [("1", "GELU"), ("2.1", "LeakyReLU"), ("2.2", "Tanh"),
                                             ("4", "MyGELU"), ("5", "Tanh")]
    assert all(isinstance(new, ft.FewbitActivation) and new.bits == 2 for _, _, new in done)
    assert model[2][2] is model[5] and isinstance(model[6], nn.ReLU)
    assert model[2][1].negative_slope == 0.2
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert ft.convert(model, bits=2, extra={MyGELU: "gelu"}, exclude=lambda m, name: name == "6") == []
    restored = ft.unconvert(model)
    assert [n for n, _, _ in restored] == ["1", "2.1", "2.2", "4", "5"]
    for name, mod in model.named_modules(remove_duplicate=False):
        assert originals[name] is mod


def test_convert_include_and_tables():
    model = small_model()
    t4 = design("tanh", 4)
    done = ft.convert(model, bits=1, tables={"tanh": t4}, include=lambda m, name: isinstance(m, nn.Tanh))
    assert [n for n, _, _ in done] == ["2.2", "5"]
    assert model[5].table is t4 and model[5].bits == 4


def test_convert_refuses_wrong_tables_and_changes_nothing():
    model = small_model()
    with pytest.raises(FewbitError, match="'silu', not 'gelu'"):
        ft.convert(model, tables={"gelu": design("silu", 2)})
    with pytest.raises(FewbitError, match="2.1"):
        ft.convert(model, tables={"leaky_relu": design("leaky_relu", 2)})  # slope 0.01 vs 0.2
    assert not any(isinstance(m, ft.FewbitActivation) for m in model.modules())


def test_deepcopy_and_checkpoint():
    from torch.utils.checkpoint import checkpoint
    model = small_model()
    ft.convert(model, bits=3, extra={MyGELU: "gelu"})
    twin = copy.deepcopy(model)
    assert twin[1].original is not model[1].original and twin[1].table == model[1].table
    x = torch.randn(6, 8)
    model(x).square().sum().backward()
    for reentrant in (False, True):
        twin.zero_grad()
        xx = x.clone().requires_grad_(reentrant)
        checkpoint(twin, xx, use_reentrant=reentrant).square().sum().backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0)


def test_torch_compile_gives_the_same_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), ft.GELU(bits=3), nn.Linear(32, 32), ft.SiLU(bits=2),
                          nn.Linear(32, 32), ft.Softplus(bits=4), nn.Linear(32, 4))
    x = torch.randn(16, 8)
    model(x).square().sum().backward()
    eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.compile(model)(x).square().sum().backward()
    for p, g in zip(model.parameters(), eager):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
