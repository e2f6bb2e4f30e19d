"""Tests for the activation registry: derivatives against numerical and torch references."""

import sys
import uuid
import warnings

import numpy as np
import pytest
from scipy.differentiate import derivative

from fewbit_design.activations import REGISTRY, Activation, get_activation, parse_params
from fewbit_design.errors import FewbitError

# every registry entry at its defaults, plus parameter values that move kinks or change jumps
VARIANTS = [(name, {}) for name in REGISTRY] + [
    ("leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu", {"negative_slope": 1.0}),
    ("elu", {"alpha": 0.5}),
    ("elu", {"alpha": -0.5}),
    ("celu", {"alpha": 0.5}),
    ("celu", {"alpha": 2.0}),
    ("softplus", {"beta": 2.0, "threshold": 10.0}),
    ("softplus", {"beta": 0.5, "threshold": 3.0}),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in p.items()) for name, p in VARIANTS]
EXTREMES = np.array([-1e300, -1e10, -1e-300, 0.0, 1e-300, 1e10, 1e300])


def _grid():
    # irregular points so that no grid point sits exactly on a kink, plus large |x|
    x = np.linspace(-12.0, 12.0, 1201) + 0.0037
    big = np.array([15.0, 25.0, 40.0, 100.0, 1e3, 1e5])
    return np.concatenate([x, big, -big])


def _away_from_kinks(x, act, margin):
    keep = np.ones(x.shape, bool)
    for k in act.kinks:
        keep &= np.abs(x - k) > margin
    return x[keep]


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_df_matches_numerical_derivative_of_f(name, params):
    act = get_activation(name, params)
    x = _away_from_kinks(_grid(), act, 0.02)
    dist = np.min([np.abs(x - k) for k in act.kinks], axis=0) if act.kinks else np.inf
    res = derivative(act.f, x, initial_step=np.minimum(0.5 * np.maximum(1.0, np.abs(x)), dist / 2),
                     tolerances=dict(rtol=1e-12, atol=1e-15))
    np.testing.assert_allclose(act.df(x), res.df, rtol=1e-7, atol=1e-9)


def _torch_functions():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    return torch, {
        "relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "celu": F.celu, "selu": F.selu,
        "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
        "mish": F.mish, "softplus": F.softplus, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
        "hardtanh": F.hardtanh, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
        "relu6": F.relu6, "softsign": F.softsign, "logsigmoid": F.logsigmoid,
        "tanhshrink": F.tanhshrink, "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t),
        "squared_relu": lambda t: F.relu(t) ** 2,
    }


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_f_and_df_match_torch_including_value_at_kinks(name, params):
    torch, functions = _torch_functions()
    act = get_activation(name, params)
    x = np.concatenate([np.linspace(-8.0, 8.0, 801) + 0.0013, act.kinks])
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = functions[name](t, **params)
    (grad,) = torch.autograd.grad(y.sum(), t)
    np.testing.assert_allclose(act.f(x), y.detach().numpy(), rtol=1e-12, atol=1e-14)
    rtol = 1e-7 if name == "hardsigmoid" else 1e-12  # torch's hardsigmoid backward uses a float32 1/6
    np.testing.assert_allclose(act.df(x), grad.numpy(), rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_kinks_sorted_and_jumps_are_kinks(name, params):
    act = get_activation(name, params)
    assert list(act.kinks) == sorted(set(act.kinks))
    assert set(act.jumps) <= set(act.kinks)
    assert all(isinstance(k, float) for k in act.kinks)


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_listed_kinks_are_real_and_jumps_are_exactly_the_discontinuities(name, params):
    act = get_activation(name, params)
    for k in act.kinks:
        eps = 1e-12 * max(1.0, abs(k))
        gap = abs(act.df(k + eps) - act.df(k - eps))
        if k in act.jumps:
            assert gap > 1e-9, f"f' should jump at {k}"
        else:
            assert gap < 1e-10, f"f' should be continuous at {k}"
            d = 1e-5  # one-sided slopes of f' must differ at a kink
            right = (act.df(k + 2 * d) - act.df(k + d)) / d
            left = (act.df(k - d) - act.df(k - 2 * d)) / d
            assert abs(right - left) > 1e-3, f"f' should have a corner at {k}"


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_df_is_smooth_away_from_listed_kinks(name, params):
    act = get_activation(name, params)
    h = 1e-3
    x = _away_from_kinks(np.arange(-10.0, 10.0, h) + 0.00031, act, 2 * h)
    second = act.df(x + h) - 2 * act.df(x) + act.df(x - h)  # ≈ f'''·h² where f' is smooth
    assert np.max(np.abs(second)) < 50 * h * h


@pytest.mark.parametrize("name, params", VARIANTS, ids=IDS)
def test_extreme_inputs_give_no_nan_and_no_warnings(name, params):
    act = get_activation(name, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, dy = act.f(EXTREMES), act.df(EXTREMES)
    assert not np.any(np.isnan(y))
    assert np.all(np.isfinite(dy))
    assert y.dtype == dy.dtype == np.float64


def test_shapes_are_preserved():
    act = get_activation("gelu")
    x = np.linspace(-3, 3, 12).reshape(3, 4).astype(np.float32)
    assert act.f(x).shape == act.df(x).shape == (3, 4)
    assert act.df(x).dtype == np.float64
    assert act.df(0.0).shape == ()
    assert act.df(0.0) == 0.5


def test_parameters_are_applied():
    elu = get_activation("elu", {"alpha": 0.5})
    assert elu.params == {"alpha": 0.5}
    assert elu.f(-1.0) == pytest.approx(0.5 * (np.exp(-1.0) - 1.0))
    assert elu.df(-1.0) == pytest.approx(0.5 * np.exp(-1.0))
    assert (elu.kinks, elu.jumps) == ((0.0,), (0.0,))
    assert get_activation("elu").jumps == ()
    assert get_activation("leaky_relu", {"negative_slope": 0.2}).df(-3.0) == 0.2
    assert get_activation("leaky_relu", {"negative_slope": 1.0}).kinks == ()
    softplus = get_activation("softplus", {"beta": 2})
    assert softplus.params == {"beta": 2.0, "threshold": 20.0}
    assert softplus.kinks == softplus.jumps == (10.0,)
    hardtanh = get_activation("hardtanh", {"min_val": -2, "max_val": 3})
    assert hardtanh.kinks == (-2.0, 3.0)
    assert hardtanh.df(np.array([-2.5, -2.0, 0.0, 3.0])).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_names_are_normalised_and_aliased():
    assert get_activation("Leaky-ReLU").name == "leaky_relu"
    assert get_activation(" swish ").name == "silu"
    assert get_activation("GELU_ERF").name == "gelu"
    assert get_activation("gelu-new").name == "gelu_tanh"


def test_registry_entries_describe_themselves():
    assert list(REGISTRY)[:3] == ["relu", "leaky_relu", "elu"]
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.doc and "\n" not in spec.doc
        assert get_activation(name).params == spec.defaults


def test_to_dict_round_trip_equality_and_hash():
    act = get_activation("softplus", {"beta": 2.0})
    d = act.to_dict()
    assert d == {"name": "softplus", "params": {"beta": 2.0, "threshold": 20.0}}
    again = get_activation(**d)
    assert again == act and hash(again) == hash(act)
    assert act != get_activation("softplus")
    assert str(act) == "softplus(beta=2, threshold=20)"
    assert isinstance(act, Activation)


def _error(name, params=None):
    with pytest.raises(FewbitError) as info:
        get_activation(name, params)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_name_suggests_close_matches():
    assert _error("gelo") == "unknown activation 'gelo'; did you mean gelu, elu, selu? (fewbit-design list shows all)"
    assert _error("qwertyuiop") == "unknown activation 'qwertyuiop' (fewbit-design list shows all)"


@pytest.mark.parametrize("name, params, fragment", [
    ("elu", {"beta": 1.0}, "activation 'elu' has no parameter 'beta' (parameters: alpha)"),
    ("relu", {"alpha": 1.0}, "activation 'relu' has no parameter 'alpha' (it takes none)"),
    ("elu", {"alpha": float("inf")}, "finite"),
    ("elu", {"alpha": float("nan")}, "finite"),
    ("elu", {"alpha": "abc"}, "must be a number"),
    ("elu", {"alpha": True}, "finite number"),
    ("celu", {"alpha": 0.0}, "alpha must be > 0"),
    ("softplus", {"beta": 0.0}, "beta must be > 0"),
    ("softplus", {"beta": -1.0}, "beta must be > 0"),
    ("hardtanh", {"min_val": 1.0, "max_val": 1.0}, "min_val must be < max_val"),
    ("hardtanh", {"min_val": 2.0}, "min_val must be < max_val"),
])
def test_bad_parameters_are_refused(name, params, fragment):
    assert fragment in _error(name, params)


def test_parse_params():
    assert parse_params(["alpha=0.2", " beta = 2 "]) == {"alpha": 0.2, "beta": 2.0}
    assert parse_params([]) == {}
    for items, fragment in [(["alpha"], "expected name=value"), (["=1"], "expected name=value"),
                            (["alpha=x"], "'x' is not a number"), (["a=1", "a=2"], "given twice")]:
        with pytest.raises(FewbitError, match=fragment):
            parse_params(items)


# ---------------------------------------------------------------- custom activations

CUSTOM_SOURCE = '''
import numpy as np
def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))
def softplus(x):
    return np.logaddexp(0.0, x)
def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))
def raises(x):
    raise ZeroDivisionError("no way")
def scalar(x):
    return float(np.sum(x))
def nonfinite(x):
    return np.log(x)
CONSTANT = 3.0
'''


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    """Write a module into tmp_path (the working directory) and return its unique name."""
    monkeypatch.chdir(tmp_path)
    names = []

    def write(source=CUSTOM_SOURCE):
        names.append(f"fewbit_custom_{uuid.uuid4().hex[:10]}")
        (tmp_path / f"{names[-1]}.py").write_text(source)
        return names[-1]

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_custom_function_gets_an_accurate_numerical_derivative(custom_module):
    mod, path_before = custom_module(), list(sys.path)
    act = get_activation(f"{mod}:softplus")
    assert sys.path == path_before
    assert (act.name, act.params, act.kinks, act.jumps) == (f"{mod}:softplus", {}, (), ())
    x = np.concatenate([np.linspace(-8.0, 8.0, 321), [-50.0, 50.0, 1e3]])
    sigmoid = get_activation("sigmoid").f(x)
    np.testing.assert_allclose(act.df(x), sigmoid, rtol=1e-10, atol=1e-12)
    gelu_tanh = get_activation(f"{mod}:gelu_tanh")
    np.testing.assert_allclose(gelu_tanh.df(x), get_activation("gelu_tanh").df(x), rtol=1e-10, atol=1e-12)
    assert gelu_tanh.df(x.reshape(-1, 1)).shape == (x.size, 1)


def test_custom_function_with_analytic_derivative(custom_module):
    mod = custom_module()
    act = get_activation(f"{mod}:softplus:sigmoid")
    x = np.linspace(-5, 5, 11)
    assert act.df(x).tolist() == (0.5 * (1.0 + np.tanh(0.5 * x))).tolist()
    assert act.to_dict() == {"name": f"{mod}:softplus:sigmoid", "params": {}}


@pytest.mark.parametrize("spec, fragment", [
    ("{mod}:missing", "has no attribute 'missing'"),
    ("{mod}:CONSTANT", "is not callable"),
    ("{mod}:raises", "raises failed: ZeroDivisionError: no way"),
    ("{mod}:scalar", "must be elementwise: returned shape ()"),
    ("{mod}:nonfinite", "returned non-finite values"),
    ("{mod}:softplus:raises", "raises failed: ZeroDivisionError"),
    ("{mod}:softplus:nonfinite", "non-finite"),
    ("{mod}:a:b:c", "must be module:function or module:function:derivative"),
    ("{mod}:", "must be module:function"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
])
def test_custom_function_failures(custom_module, spec, fragment):
    mod, path_before = custom_module(), list(sys.path)
    assert fragment in _error(spec.format(mod=mod))
    assert sys.path == path_before


def test_custom_module_import_errors_are_one_line(custom_module):
    broken = custom_module("def f(x:\n")
    assert "SyntaxError" in _error(f"{broken}:f")
    raising = custom_module("raise RuntimeError('boom\\nsecond line')\n")
    assert _error(f"{raising}:f").endswith("RuntimeError: boom")
    assert "takes no parameters" in _error(f"{custom_module()}:softplus", {"alpha": 1.0})


def test_custom_functions_that_print_exit_or_return_complex_are_caught(tmp_path, monkeypatch, capsys):
    name = f"fewbit_rude_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(
        "import sys, numpy as np\nprint('hello from import')\n"
        "def loud(x):\n    print('hello from call')\n    return np.tanh(x)\n"
        "def leave(x):\n    sys.exit(3)\n"
        "def cplx(x):\n    return x + 1j\n")
    monkeypatch.chdir(tmp_path)
    act = get_activation(f"{name}:loud")
    act.df(np.linspace(-1, 1, 5))
    assert "hello" not in capsys.readouterr().out          # stdout stays clean for -f json
    with pytest.raises(FewbitError, match="leave failed: SystemExit"):
        get_activation(f"{name}:leave")
    with pytest.raises(FewbitError, match="must return real numbers"):
        get_activation(f"{name}:cplx")
