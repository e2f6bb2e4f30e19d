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
    assert list(m.state_dict()) == ["_extra_state"]  # the table as JSON bytes, no float buffers
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
    plain = model.state_dict()
    done = ft.convert(model, bits=2, extra={MyGELU: "gelu"}, exclude=lambda m, name: name == "6")
    # converted modules add their table; a checkpoint of the plain model still loads
    assert [k for k in model.state_dict() if k not in plain] == [f"{n}._extra_state" for n in ("1", "2.1", "2.2", "4", "5")]
    assert not model.load_state_dict(plain).missing_keys
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


def test_state_dict_carries_the_table(tmp_path):
    def net(bits, table=None):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), ft.GELU(bits=bits, table=table), nn.Linear(8, 2))
    two = net(2)
    torch.save(two.state_dict(), tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt")  # weights_only=True, torch's default
    assert state["1._extra_state"].dtype == torch.uint8
    net(2).load_state_dict(state)
    four = net(4)
    with pytest.raises(RuntimeError, match=r"1\._extra_state: the checkpoint's table Table\(gelu, bits=2"):
        four.load_state_dict(state)
    with pytest.raises(RuntimeError, match="differs"):  # same bits, another table
        net(2, design("gelu", 2, partition="levelset")).load_state_dict(state)
    with pytest.raises(RuntimeError, match="not a few-bit table"):
        net(2).load_state_dict({**state, "1._extra_state": torch.zeros(3)})
    # the unconverted model's checkpoint loads into the converted one, and back with strict=False
    plain = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    assert four.load_state_dict(plain.state_dict()).missing_keys == []
    assert plain.load_state_dict(state, strict=False).unexpected_keys == ["1._extra_state"]


def test_whole_model_pickle_loads_with_weights_only(tmp_path):
    model = small_model()
    ft.convert(model, bits=2, tables={"tanh": design("tanh", 4)}, extra={MyGELU: "gelu"})
    model(torch.randn(3, 8)).sum().backward()     # after use too: the modules' cached float views are not saved
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(tmp_path / "model.pt")
    classes = [nn.Sequential, nn.Linear, nn.GELU, nn.LeakyReLU, nn.Tanh, nn.ReLU, MyGELU]
    with torch.serialization.safe_globals([*ft.SAFE_GLOBALS, *classes]):
        loaded = torch.load(tmp_path / "model.pt")
    x = torch.randn(5, 8)
    for m in (model, loaded):
        m.zero_grad()
        m(x).square().sum().backward()
    assert loaded[5].table == model[5].table and loaded[5].bits == 4 and isinstance(loaded[1].original, nn.GELU)
    for p, q in zip(model.parameters(), loaded.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0)


def test_cached_views_follow_replaced_buffers():
    """The float views of the table buffers that forward reuses are made again when a buffer
    is replaced (.to(), _apply, load_state_dict(assign=True)), and never outlive it."""
    m = ft.GELU(bits=3)
    x = torch.randn(1000, requires_grad=True)
    (g1,) = torch.autograd.grad(m(x).sum(), x)
    m._apply(lambda t: t.clone())                  # every buffer is a new tensor
    views = m._table_tensors()
    assert views[0].data_ptr() == m._bounds32.data_ptr() and views[3].data_ptr() == m._levels.data_ptr()
    m._levels.view(torch.float32).mul_(2)          # in place on the buffer: the view sees it
    (g2,) = torch.autograd.grad(m(x).sum(), x)
    torch.testing.assert_close(g2, 2 * g1, rtol=0, atol=0)
    copy = __import__("copy").deepcopy(m)
    assert copy._table_tensors()[0].data_ptr() == copy._bounds32.data_ptr() != m._bounds32.data_ptr()


class SubGELU(nn.GELU):
    pass


class OwnGELU(nn.GELU):
    def forward(self, x):
        return super().forward(x) * 2


def test_convert_reports_what_it_cannot_do():
    # a subclass that keeps the forward is converted; one with its own forward is named in a warning
    model = nn.Sequential(nn.Linear(4, 4), SubGELU(approximate="tanh"), OwnGELU())
    with pytest.warns(UserWarning, match=r"2 \(OwnGELU, a subclass of GELU with its own forward\)"):
        done = ft.convert(model, bits=2)
    assert [(n, t) for n, t, _ in done] == [("1", "SubGELU")] and model[1].activation == "gelu_tanh"
    assert ft.convert(model, bits=2, extra={OwnGELU: "gelu"})[0][0] == "2"
    # a bare activation cannot be replaced in place
    for bare in (nn.GELU(), ft.GELU(bits=2), MyGELU()):
        with pytest.raises(FewbitError, match="the model itself is an activation"):
            ft.convert(bare, extra={MyGELU: "gelu"})
    # no activation module at all
    with pytest.warns(UserWarning, match="no activation module"):
        assert ft.convert(nn.Sequential(nn.Linear(2, 2))) == []


def test_convert_again_with_other_bits():
    model = small_model()
    originals = dict(model.named_modules(remove_duplicate=False))
    ft.convert(model, bits=2)
    assert ft.convert(model, bits=2) == []  # nothing to do
    again = ft.convert(model, bits=4, include=lambda m, name: name != "1")
    assert [n for n, _, _ in again] == ["2.1", "2.2", "5", "6"]
    assert model[1].bits == 2 and model[6].bits == 4 and model[2][2] is model[5]
    t3 = design("tanh", 3)
    assert [n for n, _, _ in ft.convert(model, bits=4, tables={"tanh": t3})] == ["1", "2.2", "5"]
    assert model[5].table is t3
    ft.unconvert(model)  # the modules from before the first conversion come back
    for name, mod in model.named_modules(remove_duplicate=False):
        assert originals[name] is mod
    own = nn.Sequential(nn.Linear(2, 2), ft.SiLU(bits=1))
    mine = own[1]
    assert ft.convert(own, bits=3)[0][2].bits == 3
    ft.unconvert(own)
    assert own[1] is mine  # a module built directly comes back as it was


def test_calibrated_tables_replace_a_converted_models_tables():
    from fewbit_design.torch.calibrate import calibrate
    model = small_model()
    originals = dict(model.named_modules(remove_duplicate=False))
    ft.convert(model, bits=4)
    batches = [torch.randn(32, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    bundle = calibrate(model, batches, bits=2)  # the few-bit modules are calibrated too
    assert list(bundle) == ["1", "2.1", "2.2", "6"]
    done = ft.convert(model, tables=bundle)
    assert sorted({n for n, _, _ in done}) == ["1", "2.1", "2.2", "5", "6"]
    assert model[1].table is bundle["1"] and model[5].table is bundle["2.2"]
    ft.unconvert(model)
    for name, mod in model.named_modules(remove_duplicate=False):
        assert originals[name] is mod
