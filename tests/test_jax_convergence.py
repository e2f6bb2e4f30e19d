"""benchmarks/convergence_jax.py: --quick runs, writes where it is told, never the committed JSON."""

import json
import os

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")

from benchmarks import convergence_jax  # noqa: E402


def test_quick_run_writes_its_out_path_only(tmp_path):
    committed = convergence_jax.DEFAULT_OUT
    before = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
    out = tmp_path / "c.json"
    convergence_jax.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    (row,) = result["per_seed"]
    assert 0.9 < row["val_loss_ratio"] < 1.1          # 1 seed, 3 epochs: a smoke test, not the claim
    after = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
    assert before == after


def test_committed_result_shows_3_bit_within_1_percent_of_exact():
    with open(convergence_jax.DEFAULT_OUT) as fh:
        result = json.load(fh)
    assert [r["seed"] for r in result["per_seed"]] == [0, 1, 2]
    assert abs(result["summary"]["val_loss_ratio_mean"] - 1.0) <= 0.01
