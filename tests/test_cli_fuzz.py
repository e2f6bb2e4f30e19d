"""No traceback from the CLI, whatever a user passes: random command lines through CliRunner.

Every run ends with exit 0 (done), 1 (check found a problem), 2 (bad input: one `Error:`
line) or 130 (interrupted), never with an exception other than SystemExit.
"""

import os
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewbit_design import formats
from fewbit_design.cli import main
from fewbit_design.designer import design

EXAMPLES = int(os.environ.get("FEWBIT_HYPOTHESIS_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    t = design("gelu", 2)
    formats.write_table(t, d / "good.json")
    formats.write_table(t, d / "good.npz")
    formats.write_table(t, d / "good.h")
    (d / "garbage.json").write_bytes(b"\x00\xff{not json")
    (d / "garbage.npz").write_bytes(os.urandom(300))
    (d / "empty.yaml").write_bytes(b"")
    (d / "dir.json").mkdir()
    with zipfile.ZipFile(d / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.npy", b"\0" * (80 * 2 ** 20))            # 80 MiB of zeros, ~80 KB on disk
    np.save(d / "acts.npy", np.random.default_rng(0).standard_normal(200))
    np.save(d / "const.npy", np.zeros(10))
    (d / "words.csv").write_text("1.0\nhello world 3\n2.0\n")
    (d / "sweep.yaml").write_text("activations: [relu]\nbits: 1-2\ndistributions: ['normal:0,1']\n")
    (d / "badsweep.yaml").write_text("activations: 3\nbits: [x]\n")
    return d


def _tokens(d):
    paths = [str(d / n) for n in ("good.json", "good.npz", "good.h", "garbage.json", "garbage.npz",
                                  "empty.yaml", "dir.json", "bomb.npz", "acts.npy", "words.csv",
                                  "sweep.yaml", "badsweep.yaml", "missing.json")]
    outs = [str(d / "out" / "x.json"), str(d / "o.yaml"), str(d / "o.npz"), str(d / "o.png"),
            str(d / "o.txt"), str(d / "dir.json"), "-"]
    dists = ["normal:0,1", "normal:1e18,1", "normal:0,1e-300", "normal:1e300,1e300", "t:0.05", "t:0.01",
             "t:3,0,1e250", "uniform:1,1", "uniform:5,-5", "laplace:a,b", "logistic:", "normal:0,1,2",
             "samples:", f"samples:{d / 'acts.npy'}", f"samples:{d / 'const.npy'}",
             f"samples:{d / 'words.csv'}", f"samples:{d / 'bomb.npz'}", "gauss", "normal:nan,1",
             "normal:inf,1", "x" * 3000]
    names = ["gelu", "relu", "tanh", "squared_relu", "softplus", "hardtanh", "GELU", "gelu-tanh", "nope",
             "os:system", "numpy:sin", "numpy:tanh:cos", "a" * 5000, "", ":", "é", "relu\n"]
    values = ["0", "1", "3", "8", "9", "-1", "2.5", "1e400", "nan", "x", "", "16", "1048577",
              "alpha=0.5", "alpha=x", "=", "beta=0", "min_val=2"]
    return paths, outs, dists, names, values


@st.composite
def argv(draw, d):
    paths, outs, dists, names, values = _tokens(d)
    cmd = draw(st.sampled_from(["design", "list", "convert", "check", "plot error", "plot table",
                                "sweep", "flag"]))
    if cmd == "design":
        a = [draw(st.sampled_from(names)), "-b", draw(st.sampled_from(values[:9]))]
        opts = {"--dist": dists, "-p": values, "--partition": ["auto", "levelset", "spiral"],
                "--grid": ["16", "64", "7", "x"], "-f": ["json", "yaml", "npz", "csv", "h", "text", "pdf"],
                "-o": outs}
    elif cmd == "list":
        return ["list"] + draw(st.lists(st.sampled_from(["-h", "extra"]), max_size=1))
    elif cmd == "convert":
        a = ["convert", draw(st.sampled_from(paths))]
        opts = {"--to": ["json", "yaml", "npz", "csv", "h", "x"], "-o": outs,
                "--from": ["json", "npz", "h", "csv"]}
    elif cmd == "check":
        a = ["check", draw(st.sampled_from(paths))]
        opts = {"--against": ["auto", "same", "x"], "--no-redesign": [None],
                "--trust-activation-code": [None]}
    elif cmd == "plot error":
        a = ["plot", "error", draw(st.sampled_from(names[:6] + names[8:10])), "-o",
             draw(st.sampled_from(outs + [str(d / "o.svg")]))]
        opts = {"-b": ["1-2", "3", "0-9", "x", "2-1"], "-d": dists[:8], "-p": values[13:]}
    elif cmd == "plot table":
        a = ["plot", "table", draw(st.sampled_from(paths)), "-o", draw(st.sampled_from(outs))]
        opts = {}
    elif cmd == "sweep":
        a = ["sweep", draw(st.sampled_from(paths))]
        opts = {"-o": [str(d / "sw"), str(d / "good.json")], "-j": ["1", "0", "x"], "--force": [None]}
    else:
        return draw(st.lists(st.sampled_from(["--version", "-h", "--bogus", "design", "-b"]), max_size=3))
    for key in draw(st.lists(st.sampled_from(sorted(opts)), max_size=3)) if opts else []:
        v = draw(st.sampled_from(opts[key]))
        a += [key] if v is None else [key, v]
    return a


def test_random_command_lines_never_give_a_traceback(files):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("FEWBIT_HYPOTHESIS_RANDOM"),
              suppress_health_check=list(HealthCheck))
    @given(args=argv(files))
    def check(args):
        r = CliRunner().invoke(main, args)
        out = r.output                     # stdout and stderr, as a terminal shows them
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception), out)
        assert "Traceback" not in out, (args, out)
        assert r.exit_code in (0, 1, 2), (args, r.exit_code, out)
        if r.exit_code == 2:
            errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1 and len(errors[0]) <= 420, (args, out)

    check()
