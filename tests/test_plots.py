"""Figures: the files are written in the format their extension names, atomically."""

import os

import numpy as np
import pytest

from fewbit_design import plots
from fewbit_design.designer import design
from fewbit_design.errors import FewbitError

MAGIC = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}


def test_error_curves_are_the_designed_errors():
    curves = plots.error_curves(["tanh"], bits=[1, 2], distributions=["normal:0,1"],
                                partitions=["contiguous", "levelset"])
    assert [(c["partition"], c["bits"]) for c in curves] == [("contiguous", [1, 2]), ("levelset", [1, 2])]
    for c in curves:
        want = [design("tanh", b, partition=c["partition"]).relative_error for b in c["bits"]]
        assert c["relative_error"] == want
    assert curves[1]["relative_error"][1] < curves[0]["relative_error"][1]   # level-set wins for tanh


def test_plot_error_by_distribution_with_exact_tables(tmp_path):
    out = tmp_path / "e.svg"
    curves = plots.plot_error(["hardtanh"], bits=[1, 2], distributions=["normal:0,1", "uniform:-10,10"],
                              partitions=["levelset"], path=str(out))
    assert len(curves) == 2 and min(curves[0]["relative_error"]) < plots.ERROR_FLOOR
    text = out.read_text()
    assert text.startswith("<?xml") and "uniform:-10,10" in text


@pytest.mark.parametrize("ext", sorted(MAGIC))
def test_plot_table_formats(tmp_path, ext):
    t = design("tanh", 2, partition="levelset")
    out = tmp_path / f"t{ext}"
    plots.plot_table(t, path=str(out))
    assert out.read_bytes().startswith(MAGIC[ext])
    assert os.listdir(tmp_path) == [out.name]


def test_plot_table_for_samples(tmp_path):
    samples = tmp_path / "acts.npy"
    np.save(samples, np.random.default_rng(0).standard_normal(2000) * 1.5 + 0.3)
    t = design("silu", 2, distribution=f"samples:{samples}")
    plots.plot_table(t, path=str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").read_bytes().startswith(MAGIC[".png"])


def test_unknown_extension_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "error_curves", lambda *a, **k: pytest.fail("computed before checking"))
    with pytest.raises(FewbitError, match=r"x\.jpg"):
        plots.plot_error(["gelu"], path=str(tmp_path / "x.jpg"))
    with pytest.raises(FewbitError, match="figure format"):
        plots.plot_table(design("gelu", 1), path=str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []
