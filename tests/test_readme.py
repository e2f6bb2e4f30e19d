"""Every Python example in README.md and docs/ runs as shown (from a folder that has the checkout's tables/)."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fewbit_design import cells
from fewbit_design.activations import get_activation
from fewbit_design.cli import main
from fewbit_design.designer import design
from fewbit_design.distributions import parse_distribution

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [(page.relative_to(ROOT).as_posix(), i, code)
          for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S))]


def test_the_pages_have_examples():
    assert {p for p, _, _ in BLOCKS} >= {"README.md", "docs/usage.md", "docs/runtime.md", "docs/calibration.md",
                                         "docs/table-format.md"}


@pytest.mark.parametrize("code", [c for _, _, c in BLOCKS], ids=[f"{p}:block{i}" for p, i, _ in BLOCKS])
def test_python_example_runs(code, tmp_path):
    if re.search(r"^(import|from) torch|fewbit_design\.torch", code, re.M):
        pytest.importorskip("torch")
    if re.search(r"^(import|from) (jax|flax)|fewbit_design\.jax", code, re.M):   # the jax extra
        pytest.importorskip("jax")
        pytest.importorskip("flax")
    (tmp_path / "tables").symlink_to(ROOT / "tables")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


# ==================================================================================================
# Claims. README statements about the engine that no other test pins: the example output, the grid,
# the quadrature, and auto's tie rule.
# ==================================================================================================


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
NUMBER = re.compile(r"-?inf|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|\d+\.\d+x")


def _numbers(text):
    return [float(m.rstrip("x")) for m in NUMBER.findall(text)]


def test_readme_example_output_is_the_engines():
    block = README.read_text().split("$ fewbit-design gelu --bits 3\n", 1)[1].split("```", 1)[0]
    got = CliRunner().invoke(main, ["gelu", "--bits", "3"])
    assert got.exit_code == 0, got.output
    # stdout only: on a loaded machine the stderr heartbeat ("designing gelu at 3 bits: 2 s ...")
    # joins the output, which is not part of the example
    want_lines, got_lines = block.strip().splitlines(), got.stdout.strip().splitlines()
    assert len(want_lines) == len(got_lines)
    for w, g in zip(want_lines, got_lines):
        assert re.sub(NUMBER, "#", w).split() == re.sub(NUMBER, "#", g).split(), (w, g)   # same words
        # printed to 6 digits in the header; boundaries and levels to rounding of the optimum
        np.testing.assert_allclose(_numbers(g), _numbers(w), rtol=2e-6, atol=1e-13)


def test_grid_covers_the_quantiles_and_aligns_to_kinks_and_extrema():
    # "The core covers quantiles 1e-13 ... 1 - 1e-13; tail cells reach quantiles 1e-300",
    # "aligned to the kinks of f' and of w and to the extrema of f'", 8-point Gauss-Legendre
    dist = parse_distribution("laplace:0.5,1")
    act = get_activation("gelu")
    g = cells.make_grid(act, dist, 256)
    lo, hi = dist.quantile_range(1e-13)
    assert g.core_edges[0] == lo and g.core_edges[-1] == hi
    far = dist.quantile_range(1e-300)
    assert g.edges[0] == pytest.approx(far[0], rel=1e-12) and g.edges[-1] == pytest.approx(far[1], rel=1e-12)
    assert 0.5 in g.edges                                              # the kink of w
    x = np.linspace(-3, 0, 300001)
    xmin = x[np.argmin(act.df(x))]                                     # GELU' has its minimum near -0.75
    assert np.min(np.abs(g.edges - xmin)) < 1e-4
    relu = cells.make_grid(get_activation("relu6"), parse_distribution("normal"), 64)
    assert 0.0 in relu.edges and 6.0 in relu.edges
    assert cells.GL_ORDER == 8 and design("gelu", 2).solver["quadrature"] == "gauss-legendre-8 per cell"


def test_auto_keeps_contiguous_on_a_tie():
    assert design("relu", 2).partition == "contiguous"               # both exact
    assert design("gelu", 1).partition == "contiguous"               # both the same 2-level table
    assert design("relu6", 1).partition == "levelset"                # strictly better
    assert design("tanh", 3).partition == "levelset"
