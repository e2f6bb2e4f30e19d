"""Every benchmark runs end to end in its smallest configuration (pipeline checks, not their numbers).

The benchmarks are the package `benchmarks`, imported as such (pytest puts the repository root on
sys.path: `pythonpath = .` in setup.cfg); no folder of scripts goes on sys.path.
"""

import importlib
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    return importlib.import_module(f"benchmarks.{name}")


def test_convergence_quick(tmp_path, capsys, monkeypatch):
    """`--quick` as a user would first try it: it runs, and writes to a temporary folder, never over the
    committed 3-seed results and figure."""
    pytest.importorskip("sklearn")
    conv = load("convergence")
    committed = [os.path.join(ROOT, "benchmarks", "results", "convergence.json"),
                 os.path.join(ROOT, "plots", "convergence.png")]
    before = [open(p, "rb").read() for p in committed]
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    conv.main(["--quick", "--jobs", "1"])
    assert [open(p, "rb").read() for p in committed] == before
    out, fig = tmp_path / "fewbit-benchmarks" / "convergence.json", tmp_path / "fewbit-benchmarks" / "convergence.png"
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


def test_memory_models_partial_run_writes_to_a_temporary_folder(monkeypatch, tmp_path, capsys):
    pytest.importorskip("peft")
    mm = load("memory_models")
    committed = os.path.join(ROOT, "benchmarks", "results", "memory_models.json")
    before = open(committed, "rb").read()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    mm.main(["--models", "bert-base", "--regimes", "lora", "--layers", "1", "--repeat", "1", "--batch", "2",
             "--seq", "32", "--threads", "1"])
    assert open(committed, "rb").read() == before
    report = json.loads((tmp_path / "fewbit-benchmarks" / "memory_models.json").read_text())
    assert report["complete"] and {r["model"] for r in report["results"]} == {"bert-base"}


def test_levelset_quick(capsys):
    load("levelset").main(["--quick"])
    out = capsys.readouterr().out
    assert "| gelu | 2 |" in out and "| tanh | 1 |" in out and "8-bit level-set design" in out


def test_design_speed_quick(capsys):
    load("design_speed").main(["--quick"])
    out = capsys.readouterr().out
    assert "process `fewbit-design gelu --bits 3`" in out and "| 2 bits |" in out


def test_sweep_runs_a_small_config(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("activations: [gelu, tanh]\nbits: 1-2\ndistributions: ['normal:0,1']\n")
    load("sweep").main(["--jobs", "1", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert "2 activations x 2 bit widths x 1 distributions" in out and "4 tables" in out


def test_memory_small(capsys):
    load("memory").main(["--batch", "1", "--seq", "8", "--dim", "16", "--heads", "2"])
    assert "distinct storages saved for backward" in capsys.readouterr().out


def test_calibration_quick(capsys):
    pytest.importorskip("peft")
    load("calibration").main(["--quick", "--warmup", "2", "--steps", "1"])
    assert "calibrate(" in capsys.readouterr().out


def test_gpu_kernels_without_cuda_says_so_or_dry_runs(capsys):
    bench = load("gpu_kernels")
    if not torch.cuda.is_available():
        assert bench.main([]) == 0
        assert "CUDA (and Triton) required" in capsys.readouterr().out
    from fewbit_design.torch import kernels
    if kernels.triton_available("cpu") and kernels.interpreted():   # the docstring's dry run, in the interpreter
        bench.DEVICE = "cpu"
        bench.speed_table([10])
        assert "| native |" in capsys.readouterr().out


def test_memory_models_counts_code_maps_apart_from_codes():
    """A compiled graph saves the level-set table's code map (uint8, as a graph constant: a copy) besides
    the codes; count_saved counts only the codes as codes, and both as saved bytes."""
    import types

    import fewbit_design.torch as ft

    mm = load("memory_models")
    act = ft.FewbitActivation("gelu", bits=3)
    assert act.table.partition == "levelset"
    code_map = torch.from_numpy(act.table.codes.astype("uint8"))

    class Keep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(code_map.clone(), torch.zeros(5, dtype=torch.uint8))
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act, self.lin = act, torch.nn.Linear(4, 4)

        def forward(self, x):
            return types.SimpleNamespace(last_hidden_state=Keep.apply(self.lin(x)))

    counted = mm.count_saved(Model(), {"x": torch.randn(2, 4)})
    assert counted["codes"] == 5
    assert counted["saved"] >= 5 + code_map.numel()
