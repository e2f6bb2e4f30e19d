"""calibrate(): the hooks see exactly the activation inputs, tables per module, convert(tables=bundle)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fewbit_design.calibration import Calibration  # noqa: E402
from fewbit_design.errors import FewbitError  # noqa: E402
from fewbit_design.torch import FewbitActivation, calibrate, convert  # noqa: E402
from fewbit_design.torch.calibrate import record_inputs  # noqa: E402


class Net(nn.Module):
    """GELU, a SiLU shared by two places, an in-place ReLU, and a Tanh inside a ModuleList."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act = nn.GELU()
        self.shared = nn.SiLU()
        self.relu = nn.ReLU(inplace=True)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.Tanh())])

    def forward(self, x, trace=None):
        steps = [("act", self.act), ("shared", self.shared), ("blocks.0.1", None),
                 ("shared", self.shared), ("relu", self.relu)]
        h = self.fc1(x)
        for name, f in steps:
            if name == "blocks.0.1":
                h = self.blocks[0][0](h)
                f = self.blocks[0][1]
            if trace is not None:
                trace.setdefault(name, []).append(h.detach().clone())
            h = f(h)
            if name == "act":
                h = self.fc2(h)
        return self.fc3(h)


def _batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5 + i, 6, generator=g) * 2 for i in range(n)]


def _manual_inputs(model, batches):
    trace = {}
    with torch.no_grad():
        for b in batches:
            model(b, trace=trace)
    return {k: torch.cat([t.reshape(-1) for t in v]).double().numpy() for k, v in trace.items()}


def test_hooks_collect_exactly_the_activation_inputs():
    torch.manual_seed(0)
    model, batches = Net(), _batches()
    layers = record_inputs(model, batches)
    want = _manual_inputs(model, batches)
    assert list(layers) == ["act", "shared", "relu", "blocks.0.1"]     # convert's order, shared once
    for name, data in layers.items():
        np.testing.assert_array_equal(np.sort(data.values), np.sort(want[name]))
        assert data.count == want[name].size and data.weights is None
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())   # removed


def test_gradient_weights_are_the_output_gradients_squared():
    torch.manual_seed(1)
    model, batches = Net(), _batches()
    loss_fn = lambda out, b: (out ** 2).sum()          # noqa: E731
    layers = record_inputs(model, batches, loss_fn=loss_fn)
    # reference: the gradient of the loss with respect to each activation's output, by hand
    for name in ("act", "blocks.0.1", "relu"):
        pairs = {}
        for b in batches:
            outs = []
            module = model.get_submodule(name)
            h = module.register_forward_hook(lambda m, a, o: outs.append(o))
            loss = loss_fn(model(b), b)
            h.remove()
            x_in = _manual_inputs(model, [b])[name]
            (g,) = torch.autograd.grad(loss, outs)
            pairs.update(zip(x_in.tolist(), (g.double().reshape(-1) ** 2).tolist()))
        data = layers[name]
        assert data.values.size == len(pairs)
        np.testing.assert_array_equal(data.weights, np.array([pairs[v] for v in data.values.tolist()]))
    assert all(p.grad is None for p in model.parameters())       # no .grad touched


def test_reservoir_is_a_bounded_subset():
    torch.manual_seed(2)
    model, batches = Net(), _batches(6)
    layers = record_inputs(model, batches, samples=50)
    want = _manual_inputs(model, batches)
    for name, data in layers.items():
        assert data.values.size == 50 and data.count == want[name].size
        assert np.isin(data.values, want[name]).all()
        assert np.unique(data.values).size == 50       # without replacement
    again = record_inputs(model, batches, samples=50)
    assert all(np.array_equal(again[n].values, layers[n].values) for n in layers)   # seeded


def test_calibrate_and_convert_with_the_bundle(tmp_path):
    torch.manual_seed(3)
    model, batches = Net(), _batches()
    cal = calibrate(model, batches, bits=2)
    assert isinstance(cal, Calibration) and list(cal) == ["act", "shared", "relu", "blocks.0.1"]
    for c in cal.layers.values():
        assert c.mse <= c.default_mse and c.table.bits == 2
    path = str(tmp_path / "bundle.json")
    cal.save(path)
    ref = Net()
    ref.load_state_dict(model.state_dict())
    done = convert(model, tables=path)
    assert sorted({q for q, _, _ in done}) == sorted(cal)
    assert model.act.table.boundaries.tolist() == cal["act"].boundaries.tolist()
    assert model.blocks[0][1].table.levels.tolist() == cal["blocks.0.1"].levels.tolist()
    assert isinstance(model.shared, FewbitActivation) and model.shared.table.bits == 2
    x = batches[0]
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)     # forward stays exact


def test_budget_through_the_model():
    torch.manual_seed(4)
    model, batches = Net(), _batches()
    cal = calibrate(model, batches, budget_bits=2.5, loss_fn=lambda out, b: out.square().mean())
    assert cal.budget_bits == 2.5 and cal.average_bits <= 2.5
    assert all(c.weighted for c in cal.layers.values())


def test_mismatched_bundles_are_refused():
    torch.manual_seed(5)
    cal = calibrate(Net(), _batches(), bits=3)
    other = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 2))
    with pytest.raises(FewbitError, match=r"not activations of the model: act, shared, relu, blocks\.0\.1; "
                                          r"no table for: 1"):
        convert(other, tables=cal)
    assert isinstance(other[1], nn.GELU)                             # nothing replaced
    swapped = Net()
    swapped.act = nn.Tanh()                                          # same names, another activation
    with pytest.raises(FewbitError, match=r"act: table is for activation 'gelu', not 'tanh'"):
        convert(swapped, tables=cal)
    assert isinstance(swapped.act, nn.Tanh)
    # a bundle made for a subset works with the matching include filter
    part = calibrate(Net(), _batches(), bits=3, include=lambda m, q: q.startswith("blocks"))
    assert list(part) == ["blocks.0.1"]
    with pytest.raises(FewbitError, match="no table for: act, shared, relu"):
        convert(Net(), tables=part)
    assert len(convert(Net(), tables=part, include=lambda m, q: q.startswith("blocks"))) == 1


def _no_batches_expected():
    raise AssertionError("the model ran before the options were checked")
    yield


@pytest.mark.parametrize("kwargs, batches, match", [
    ({}, [], "no batches"),
    ({"budget_bits": 0.5}, None, r"budget_bits must be in \[1, 8\]"),
    ({"budget_bits": 8.5}, None, r"budget_bits must be in \[1, 8\]"),
    ({"bits": 0}, None, "bits must be an integer in 1..8"),
    ({"samples": 3}, None, "samples must be an integer >= 16"),
    ({}, [torch.tensor([[1.0, float("nan"), 0, 0, 0, 0]])], r"act: 16 of 16 activation inputs are NaN or infinite"),
    ({"loss_fn": lambda out, b: out}, [torch.ones(2, 6)], "loss_fn must return a scalar"),
])
def test_bad_inputs(kwargs, batches, match):
    torch.manual_seed(6)
    model = Net()
    with pytest.raises(FewbitError, match=match):
        calibrate(model, _no_batches_expected() if batches is None else batches, **kwargs)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_models_without_activations_or_gradients():
    with pytest.raises(FewbitError, match="Sequential has no activation modules to calibrate"):
        calibrate(nn.Sequential(nn.Linear(3, 3)), [torch.ones(1, 3)])
    frozen = nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 1)).requires_grad_(False)
    with pytest.raises(FewbitError, match="1: output does not require grad"):
        calibrate(frozen, [torch.ones(2, 3)], loss_fn=lambda out, b: out.sum())
    unused = nn.ModuleDict({"a": nn.GELU(), "b": nn.SiLU()})
    with pytest.raises(FewbitError, match="b: never called"):
        calibrate(_Only(unused), [torch.randn(4, 3)])


class _Only(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x):
        return self.d["a"](x)
