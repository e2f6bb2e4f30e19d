"""The convergence and model-memory benchmarks run end to end (pipeline checks, not their numbers)."""

import importlib.util
import json
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load(name):
    if BENCH not in sys.path:   # the scripts import their shared helpers (_harness, _models) as top-level modules
        sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_convergence_quick(tmp_path, capsys):
    pytest.importorskip("sklearn")
    conv = load("convergence")
    out, fig = tmp_path / "c.json", tmp_path / "c.png"
    conv.main(["--quick", "--jobs", "1", "--out", str(out), "--plot", str(fig)])
    result = json.loads(out.read_text())
    plan = conv.QUICK
    configs = [conv._label(cfg) for cfg in conv.configs(plan)]
    assert configs[:3] == ["exact", "1 bit", "3 bit"]
    assert set(result["runs"]) == {"lm", "digits"}
    for task, by_cfg in result["runs"].items():
        assert list(by_cfg) == configs
        for cfg, by_seed in by_cfg.items():
            for seed in plan.seeds:
                run = by_seed[str(seed)]
                assert len(run["val"]) == plan.evals and run["val"][-1][1] == run["final_val_loss"]
                assert all(math.isfinite(v) for v in run["train_loss"])
                assert 0 <= run["final_val_acc"] <= 1
        # same start, different backward: the losses agree at step 0 and part after it
        exact, one = by_cfg["exact"]["0"]["train_loss"], by_cfg["1 bit"]["0"]["train_loss"]
        assert exact[0] == one[0] and exact[1:] != one[1:]
        assert result["summary"][task]["exact"]["val_loss_vs_exact"] == 0.0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| digits MLP (SiLU) | 3 bit |" in capsys.readouterr().out


class Args:
    layers, batch, seq, image, repeat = 1, 1, 16, 32, 1


@pytest.mark.parametrize("regime", ["trainable", "lora"])
def test_memory_models_counts(regime):
    pytest.importorskip("peft")
    mm = load("memory_models")
    cpu = torch.device("cpu")
    rows = ["native", "few-bit 1 bit", "few-bit 3 bit", "checkpoint MLP", "few-bit 3 bit + checkpoint MLP"]
    r = {row: mm.measure("bert-base", row, regime, Args, torch.bfloat16, cpu) for row in rows}
    n = Args.batch * Args.seq * 3072  # one layer, BERT-base's MLP width
    for bits in (1, 3):
        got = r[f"few-bit {bits} bit"]
        assert got["activation_calls"] == 1 and got["activation_elements"] == n
        assert got["code_bytes"] == got["expected_code_bytes"] == bits * math.ceil(n / 8)
        # F.gelu keeps its bf16 input; few-bit keeps the code instead and nothing else changes
        assert r["native"]["saved_bytes"] - got["saved_bytes"] == 2 * n - bits * math.ceil(n / 8)
    assert r["checkpoint MLP"]["code_bytes"] == 0
    # a checkpoint recomputes the codes too: combining them keeps what the checkpoint keeps
    assert r["few-bit 3 bit + checkpoint MLP"]["saved_bytes"] == r["checkpoint MLP"]["saved_bytes"]
    assert r["checkpoint MLP"]["saved_bytes"] < r["native"]["saved_bytes"]


def test_memory_models_main(tmp_path, capsys):
    pytest.importorskip("peft")
    mm = load("memory_models")
    out = tmp_path / "m.json"
    mm.main(["--models", "gpt2-small", "--regimes", "lora", "--layers", "1", "--batch", "1", "--seq", "8",
             "--repeat", "1", "--threads", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [r["row"] for r in report["results"]] == list(mm.ROWS)
    assert all(r["code_bytes"] == r["expected_code_bytes"] for r in report["results"])
    text = capsys.readouterr().out
    assert "| gpt2-small | few-bit 4 bit |" in text and "NO" not in text


def test_memory_models_refuses_unknown_model(capsys):
    mm = load("memory_models")
    with pytest.raises(SystemExit) as e:
        mm.main(["--models", "bert-huge"])
    assert e.value.code == 2 and "bert-huge" in capsys.readouterr().err


def test_cpu_runtime_runs(capsys):
    """benchmarks/cpu_runtime.py's parts run and print their tables (its README numbers come from it)."""
    bench = load("cpu_runtime")

    class Tiny:
        dim, heads, layers, seq, batch = 16, 2, 1, 8, 2

    bench.focus(4)
    bench.breakdown(3)
    bench.overhead(3)
    rows = bench.activation_rows("silu", torch.bfloat16, 1000, [1, 3], 2)
    res = bench.training_rows(Tiny, 2)
    out = capsys.readouterr().out
    assert "| 3 bit |" in out and "page faults per call" in out and "1024 float32 elements" in out
    assert "| 3 bit: coding pass (cpu.encode) |" in out and "| native, backward |" in out
    assert set(rows) == {"forward", "backward", "forward+backward"}
    assert set(rows["forward+backward"]) == {"native", "1 bit", "3 bit", "3 bit, torch path"}
    assert set(res) == {"exact GELU", "3-bit GELU"} and all(t[0] > 0 for t in res.values())
