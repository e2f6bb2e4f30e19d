"""The design and list commands through click's CliRunner: output, errors, files."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fewbit_design.cli import main


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


def assert_bad_input(res, *words):
    out = res.output + (res.stderr if hasattr(res, "stderr") else "")
    assert res.exit_code == 2, out
    assert "Traceback" not in out, out
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error:"), out
    for w in words:
        assert w in lines[0], out


def test_design_text_output():
    res = run("gelu", "--bits", "3", "--partition", "contiguous")
    assert res.exit_code == 0, res.output
    assert "relative error" in res.stdout and "3-bit contiguous table" in res.stdout
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("  ") and ln.split()[0].isdigit()]
    assert len(rows) == 8


def test_auto_reports_both_errors():
    res = run("tanh", "-b", "2")
    assert res.exit_code == 0, res.output
    assert "levelset table" in res.stdout and "contiguous partition: relative error" in res.stdout


def test_json_and_yaml_are_canonical():
    res = run("silu", "-b", "2", "--format", "json", "--partition", "contiguous")
    d = json.loads(res.stdout)
    assert d["bits"] == 2 and d["activation"]["name"] == "silu" and len(d["levels"]) == 4
    import yaml

    res = run("silu", "-b", "2", "--format", "yaml")
    assert yaml.safe_load(res.stdout)["partition"] in ("contiguous", "levelset")


def test_output_file_is_written(tmp_path):
    out = tmp_path / "t.json"
    res = run("gelu", "-b", "2", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["bits"] == 2 and res.stdout == ""


def test_params_and_dist_are_applied():
    res = run("elu", "-b", "1", "--param", "alpha=0.5", "--dist", "normal:0,2", "--format", "json")
    d = json.loads(res.stdout)
    assert d["activation"]["params"] == {"alpha": 0.5}
    assert d["distribution"] == {"name": "normal", "params": {"mean": 0.0, "std": 2.0}}


def test_list_and_version_and_help():
    res = run("list")
    assert res.exit_code == 0 and "gelu" in res.stdout and "student-t" in res.stdout
    assert run("--version").stdout.strip().endswith("0.1.0")
    for args in (["--help"], ["design", "--help"], ["list", "--help"]):
        r = run(*args)
        assert r.exit_code == 0 and "Example" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["gelo", "-b", "3"], ["unknown activation 'gelo'", "gelu"]),
    (["gelu", "-b", "0"], ["bits"]),
    (["gelu", "-b", "9"], ["bits"]),
    (["gelu", "-b", "x"], ["bits"]),
    (["gelu"], ["bits"]),
    (["gelu", "-b", "2", "--dist", "normal:0,1,2"], ["normal"]),
    (["gelu", "-b", "2", "--dist", "normal:0,-1"], ["std"]),
    (["gelu", "-b", "2", "--dist", "gauss:0,1"], ["gauss"]),
    (["gelu", "-b", "2", "--dist", "uniform:3,1"], ["uniform"]),
    (["gelu", "-b", "2", "--param", "alpha"], ["alpha"]),
    (["elu", "-b", "2", "--param", "alpha=x"], ["alpha"]),
    (["elu", "-b", "2", "--param", "beta=1"], ["beta"]),
    (["gelu", "-b", "2", "--dist", "samples:/nonexistent/acts.npy"], ["acts.npy"]),
    (["nosuchmodule_xyz:f", "-b", "2"], ["nosuchmodule_xyz"]),
    (["gelu", "-b", "2", "--dist", "t:0.01"], ["df must be >= 0.05"]),
    (["squared_relu", "-b", "2", "--dist", "t:2"], ["infinite", "squared_relu"]),
    (["gelu", "-b", "8", "--grid", "20000"], ["--grid 12500 or less"]),
    (["gelu", "-b", "2", "--grid", "8"], ["grid"]),
    (["gelu", "-b", "2", "--partition", "spiral"], ["spiral"]),
])
def test_bad_input_is_one_line_exit_2(args, words):
    assert_bad_input(run(*args), *words)


@pytest.fixture
def samples_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("empty.npy", np.array([]))
    np.save("nan.npy", np.array([np.nan, np.nan]))
    np.save("const.npy", np.full(10, 2.0))
    np.save("obj.npy", np.array(["a", None], dtype=object), allow_pickle=True)
    (tmp_path / "bad.csv").write_text("1.0\n2.0\nhello\n")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage that is not an array")
    np.save("some_nan.npy", np.array([0.1, np.nan, -1.0, 2.0, np.inf]))
    (tmp_path / "wrongshape.py").write_text("import numpy as np\ndef f(x):\n    return np.zeros(3)\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom')\n")
    return tmp_path


@pytest.mark.parametrize("spec,words", [
    ("samples:empty.npy", ["empty.npy"]),
    ("samples:nan.npy", ["nan.npy"]),
    ("samples:const.npy", ["const.npy"]),
    ("samples:obj.npy", ["obj.npy"]),
    ("samples:bad.csv", ["bad.csv"]),
    ("samples:junk.npy", ["junk.npy"]),
    ("samples:missing.npy", ["missing.npy"]),
])
def test_bad_samples_files(samples_dir, spec, words):
    out = samples_dir / "out.json"
    out.write_text("keep me")
    assert_bad_input(run("gelu", "-b", "2", "--dist", spec, "-o", str(out)), *words)
    assert out.read_text() == "keep me"                       # existing file intact


def test_non_finite_samples_are_dropped_with_a_warning(samples_dir):
    res = run("gelu", "-b", "1", "--dist", "samples:some_nan.npy", "--format", "json")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.stderr and "dropped 2" in res.stderr


@pytest.mark.parametrize("name,words", [("wrongshape:f", ["shape"]), ("raises:f", ["raises", "boom"])])
def test_bad_custom_activations(samples_dir, name, words):
    res = run(name, "-b", "2", "-o", "new.json")
    assert_bad_input(res, *words[:1])
    assert not os.path.exists("new.json")


def test_custom_activation_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myact.py").write_text("import numpy as np\ndef f(x):\n    return x * np.tanh(x)\n")
    res = run("myact:f", "-b", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["activation"]["name"] == "myact:f"


def test_heavy_tails_and_tiny_scales_design_cleanly():
    for spec in ("t:0.5", "normal:0,1e-6", "normal:100,1", "uniform:5,6", "laplace:0,3"):
        res = run("gelu", "-b", "3", "--dist", spec, "--format", "json")
        assert res.exit_code == 0 and res.stderr == "", (spec, res.output)
        d = json.loads(res.stdout)
        assert 0 <= d["error"]["relative"] < 1, spec


# ------------------------------------------------ the console entry point (cli.run, os._exit)

def _process(*args, **kw):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "fewbit_design", *args], capture_output=True, text=True, **kw)


def test_process_output_and_exit_codes_match_main(tmp_path):
    def table(text):
        return json.loads(text)           # the same call gives the same table, bit for bit

    ok = _process("tanh", "--bits", "2", "--format", "json")
    assert ok.returncode == 0 and table(ok.stdout) == table(run("tanh", "--bits", "2", "--format", "json").stdout)
    bad = _process("gelu", "--bits", "9")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ["Error: bits must be an integer in 1..8, got 9"]
    out = tmp_path / "t.json"
    wrote = _process("gelu", "--bits", "3", "-o", str(out))
    assert wrote.returncode == 0 and json.loads(out.read_text())["bits"] == 3   # complete before exit


def test_closed_pipe_is_quiet():
    import subprocess
    import sys

    res = subprocess.run(f"'{sys.executable}' -m fewbit_design list | head -1", shell=True,
                         capture_output=True, text=True, executable="/bin/bash")
    assert res.stdout.startswith("Activations") and res.stderr == "", res.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_on_stdout_fails_loudly():
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        res = subprocess.run([sys.executable, "-m", "fewbit_design", "gelu", "--bits", "2"], stdout=full,
                             stderr=subprocess.PIPE, text=True)
    assert res.returncode != 0 and "No space left on device" in res.stderr, res.stderr
