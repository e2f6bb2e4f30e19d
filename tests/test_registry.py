"""The activation registry is the one place an activation is written, and what is derived from it
agrees with torch.nn, transformers and jax.

An activation name (or alias, or a transformers name the registry lists) is a string literal in
one module of the package, activations.py; the torch modules, convert's maps, the kernels' flags
and both runtimes' forwards are derived from its entries and checked here against the libraries.
"""

import ast
import collections
import importlib.metadata
import inspect
import io
import pathlib

import pytest

import fewbit_design
from fewbit_design.activations import REGISTRY

PACKAGE = pathlib.Path(fewbit_design.__file__).parent
ENTRIES = list(REGISTRY.values())


def entry_ids(items):
    return [item.name if hasattr(item, "name") else "-".join(map(str, item)) for item in items]


def string_literals(path: pathlib.Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_activation_name_is_a_literal_in_one_module():
    names = set()
    for spec in ENTRIES:
        names |= {spec.name, *spec.aliases, *spec.hf_classes, *spec.hf_keys}
    where = collections.defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        for text in string_literals(path) & names:
            where[text].add(path.relative_to(PACKAGE).as_posix())
    wrong = {name: sorted(where[name]) for name in sorted(names) if where[name] != {"activations.py"}}
    assert not wrong, f"names written outside the registry (or not in it): {wrong}"


def test_aliases_and_names_are_unique():
    names = [n for spec in ENTRIES for n in (spec.name, *spec.aliases)]
    assert len(names) == len(set(names))
    hf = [c for spec in ENTRIES for c in spec.hf_classes] + [k for spec in ENTRIES for k in spec.hf_keys]
    assert len(hf) == len(set(hf))


def test_cli_list_shows_every_entry_and_alias():
    from click.testing import CliRunner

    from fewbit_design.cli import main

    out = CliRunner().invoke(main, ["list"]).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for spec in ENTRIES:
        assert spec.doc in rows[spec.name] and all(a in rows[spec.name] for a in spec.aliases)


# ------------------------------------------------------------------ torch

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fewbit_design.torch as ft  # noqa: E402
from fewbit_design.torch import kernels  # noqa: E402
from fewbit_design.torch.convert import activation_of  # noqa: E402
from fewbit_design.torch.modules import MODULES  # noqa: E402
from fewbit_design.torch.reference import TORCH_FORWARD  # noqa: E402

TORCH_ENTRIES = [s for s in ENTRIES if s.module is not None and s.in_torch_nn]
FUSED = [s for s in ENTRIES if s.fused]
UNFUSED = [s for s in ENTRIES if not s.fused]


def probe(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.linspace(-8.0, 8.0, 2049, dtype=torch.float64), 4 * torch.randn(1023, generator=gen,
                   dtype=torch.float64), torch.tensor([0.0, -0.0, -3.0, 3.0, 6.0, 20.0, 1e-30])])
    return x.to(dtype)


def other_params(spec) -> dict:
    """Parameter values other than the defaults (valid for every entry: min_val < max_val, > 0)."""
    return {k: v + 0.25 for k, v in spec.defaults.items()}


def nn_arguments(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if k not in ("bits", "table") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@pytest.mark.parametrize("spec", TORCH_ENTRIES, ids=entry_ids(TORCH_ENTRIES))
def test_entry_against_torch_nn(spec):
    ours, theirs = getattr(ft, spec.module), getattr(nn, spec.module)
    assert MODULES[spec.name] is ours and (ours.__module__, ours.__qualname__) == ("fewbit_design.torch.modules",
                                                                                   spec.module)
    mine, torch_args = nn_arguments(ours), nn_arguments(theirs)
    assert list(mine) == [k for k in torch_args if k in mine]     # torch.nn's order
    assert {k: torch_args[k] for k in mine} == mine               # names and defaults
    assert all(v is None for k, v in torch_args.items() if k not in mine)   # Hardtanh's deprecated aliases
    assert set(mine) == {*spec.defaults, *spec.select, *(("inplace",) if spec.inplace else ())}
    assert all(mine[k] == v for k, v in spec.defaults.items())
    for params in ({}, other_params(spec)) if spec.defaults else ({},):
        args = {**spec.defaults, **params, **spec.select}
        reference = theirs(**args)
        assert activation_of(reference) == (spec.name, {**spec.defaults, **params})   # convert's map
        module = ours(**args, bits=1 if params else 3)
        assert module.activation == spec.name and type(ft.make_module(spec.name, params, bits=1)) is ours
        x = probe().requires_grad_()
        torch.testing.assert_close(module(x).detach(), reference(x.detach()), rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(TORCH_FORWARD[spec.name](x.detach(), **{**spec.defaults, **params}),
                                   reference(x.detach()), rtol=0, atol=0, equal_nan=True)


def test_every_module_class_pickles_and_loads_with_weights_only():
    classes = ft.SAFE_GLOBALS[1:]
    assert {cls.__name__ for cls in classes} == {s.module for s in ENTRIES if s.module}
    for cls in classes:
        buf = io.BytesIO()
        torch.save(cls(bits=2), buf)
        buf.seek(0)
        with torch.serialization.safe_globals(list(ft.SAFE_GLOBALS)):
            back = torch.load(buf, weights_only=True)
        assert type(back) is cls and back.table == cls(bits=2).table and repr(back) == repr(cls(bits=2))


def kernel_branches() -> list:
    """The ACT ids triton_kernels._activation branches on (`ACT == k`); its last `else` is one more."""
    from fewbit_design.torch import triton_kernels

    tree = ast.parse(inspect.getsource(triton_kernels))
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_activation")
    return sorted(n.comparators[0].value for n in ast.walk(body) if isinstance(n, ast.Compare)
                  and isinstance(n.left, ast.Name) and n.left.id == "ACT")


def test_fused_ids_are_the_kernels_branches():
    ids = sorted(s.fused for s in FUSED)
    branches = kernel_branches()
    assert ids == [*branches, branches[-1] + 1]                  # one entry per branch, the else included
    for spec in ENTRIES:
        assert spec.fused_param is None or (spec.fused and spec.fused_param in spec.defaults)
        assert len(spec.defaults) == 0 or not spec.fused or spec.fused_param is not None
    assert kernels.FUSED_ACTIVATIONS == {s.name: s.fused for s in FUSED}


@pytest.mark.skipif(not kernels.triton_available("cpu"), reason="needs TRITON_INTERPRET=1 (set by conftest)")
@pytest.mark.parametrize("spec", FUSED, ids=entry_ids(FUSED))
def test_fused_kernel_computes_the_entry(spec):
    x = probe()
    params = other_params(spec)                                  # the kernel must read the parameter
    y, _ = kernels.fused_forward(x, torch.zeros(0), None, 1, spec.name, params)
    torch.testing.assert_close(y, TORCH_FORWARD[spec.name](x, **params), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("spec", UNFUSED, ids=entry_ids(UNFUSED))
def test_entries_without_a_kernel_are_refused_by_it(spec):
    with pytest.raises(ValueError, match="no fused kernel"):
        kernels.fused_forward(probe(), torch.zeros(0), None, 1, spec.name)


# ------------------------------------------------------------------ transformers

HF_KEYS = [(s.name, k) for s in ENTRIES for k in s.hf_keys]
HF_CLASSES = [(s.name, c) for s in ENTRIES for c in s.hf_classes]


def assert_computes(module, name):
    x = probe()
    torch.testing.assert_close(module(x), TORCH_FORWARD[name](x, **REGISTRY[name].defaults), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,key", HF_KEYS, ids=entry_ids(HF_KEYS))
def test_hf_key_computes_the_entry(name, key):
    acts = pytest.importorskip("transformers.activations")
    if key not in acts.ACT2CLS:
        pytest.skip(f"this transformers has no ACT2FN[{key!r}]")
    module = acts.ACT2FN[key]
    assert activation_of(module) == (name, REGISTRY[name].defaults)
    assert_computes(module, name)


@pytest.mark.parametrize("name,cls_name", HF_CLASSES, ids=entry_ids(HF_CLASSES))
def test_hf_class_computes_the_entry(name, cls_name):
    acts = pytest.importorskip("transformers.activations")
    if not hasattr(acts, cls_name):
        pytest.skip(f"this transformers has no {cls_name}")
    module = getattr(acts, cls_name)()
    assert activation_of(module) == (name, {})
    assert_computes(module, name)


def test_every_hf_key_convert_knows_is_listed():
    acts = pytest.importorskip("transformers.activations")
    known = {key: activation_of(acts.ACT2FN[key]) for key in acts.ACT2CLS}
    listed = {key: name for name, key in HF_KEYS}
    assert {k: v[0] for k, v in known.items() if v is not None} == {k: v for k, v in listed.items() if k in known}
    # every listed class is in the newest transformers (4.x has no SiLUActivation: its silu is nn.SiLU)
    if int(importlib.metadata.version("transformers").split(".")[0]) >= 5:
        for spec in ENTRIES:
            assert not spec.hf_classes or any(hasattr(acts, c) for c in spec.hf_classes)


# ------------------------------------------------------------------ jax

def test_entries_against_jax():
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    import numpy as np

    from fewbit_design.jax import modules as jm
    from fewbit_design.jax.functional import JAX_FORWARD

    targets = jm._swap_targets()
    for spec in ENTRIES:
        for path in spec.jax_functions:
            fn = jm._jax_function(path)
            assert fn is not None or path.startswith("flax."), path
            if fn is not None:
                assert set(spec.jax_select) <= set(inspect.signature(fn).parameters), path
                assert spec in targets[fn]
        x = probe()
        params = other_params(spec)
        want = TORCH_FORWARD[spec.name](x, **params).numpy()
        got = np.asarray(JAX_FORWARD[spec.name](jax.numpy.asarray(x.numpy()), **params))
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6, err_msg=spec.name)
        assert jm.MODULES[spec.name].__name__ == spec.jax_module
    gelu = [s for s in ENTRIES if "jax.nn.gelu" in s.jax_functions]   # the default picks one entry
    default = inspect.signature(jax.nn.gelu).parameters["approximate"].default
    assert jm._target(jax.nn.gelu, targets)[0] == next(s.name for s in gelu if s.jax_select["approximate"] == default)
