"""convert, check, sweep and plot through the command line (CliRunner)."""

import os
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

from fewbit_design import formats
from fewbit_design.cli import COMMANDS
from fewbit_design.designer import design
from fewbit_design.table import Table


@click.group()
def cli():
    pass


for _c in COMMANDS:
    cli.add_command(_c)


def run(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    out = result.output
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{out}\n{result.exception!r}"
    return result


def refused(*args):
    """Bad input: exit 2, one line on stderr, no traceback."""
    r = run(*args, code=2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def gelu2(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "gelu2.json"
    formats.write_table(design("gelu", 2, partition="auto"), path)
    return path


def test_every_command_has_help_with_examples():
    for args in (["convert"], ["check"], ["sweep"], ["plot"], ["plot", "error"], ["plot", "table"]):
        r = run(*args, "--help")
        assert "Example" in r.output, args


# -- convert -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "h"])
def test_convert_to_stdout(gelu2, fmt):
    r = run("convert", gelu2, "--to", fmt)
    assert formats.loads(r.stdout.encode(), fmt, source="stdout") == formats.read_table(gelu2)


def test_convert_to_files_round_trip(gelu2, tmp_path):
    t = formats.read_table(gelu2)
    src = gelu2
    for ext in ["npz", "yaml", "csv", "h", "json"]:
        dst = tmp_path / f"g.{ext}"
        run("convert", src, "-o", dst)
        assert formats.dumps(formats.read_table(dst), "json") == formats.dumps(t, "json")
        src = dst


def test_samples_paths_are_written_relative_to_the_table(tmp_path, monkeypatch):
    # design -o and convert -o store a relative samples path relative to the file's folder,
    # where check looks for it; a header's C prefix is fewbit_ + the file's name
    import numpy as np

    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal(300))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run("design", "gelu", "-b", "1", "--dist", "samples:acts.npy", "-o", "a/t.json")
    run("convert", "a/t.json", "-o", "b/t.h")
    run("convert", "b/t.h", "-o", "t.csv")
    run("design", "gelu", "-b", "1", "--dist", "samples:acts.npy", "-o", "b/d.h")
    files = ("a/t.json", "b/t.h", "t.csv", "b/d.h")
    up = os.path.join("..", "acts.npy")
    assert [formats.read_table(f).dist_params["path"] for f in files] == [up, up, "acts.npy", up]
    assert "fewbit_t_level(double x)" in (tmp_path / "b" / "t.h").read_text()
    assert "fewbit_d_level(double x)" in (tmp_path / "b" / "d.h").read_text()
    monkeypatch.chdir(tmp_path / "b")
    for f in files:
        run("check", "--no-redesign", tmp_path / f)


def test_convert_bad_inputs(gelu2, tmp_path):
    assert "npz is binary" in refused("convert", gelu2, "--to", "npz")
    assert "--to" in refused("convert", gelu2)
    assert "nope.json" in refused("convert", tmp_path / "nope.json", "--to", "csv")
    assert "extension" in refused("convert", gelu2, "-o", tmp_path / "x.txt")
    bad = tmp_path / "bad.json"
    bad.write_bytes(os.urandom(200))
    assert "bad.json" in refused("convert", bad, "--to", "csv")
    edited = tmp_path / "edited.yaml"
    edited.write_text(formats.dumps(formats.read_table(gelu2), "yaml").decode().replace("version: 1", "version: 7"))
    assert "edited.yaml" in refused("convert", edited, "--to", "json")
    assert "version" in refused("convert", edited, "--to", "json")


# -- check ---------------------------------------------------------------------------

def test_check_ok(gelu2):
    r = run("check", gelu2)
    assert "result        OK" in r.stdout and "no better table" in r.stdout


def test_check_stored_error_off(gelu2, tmp_path):
    d = formats.read_table(gelu2).to_dict()
    d["error"]["mse"] *= 1 + 1e-6
    path = tmp_path / "off.json"
    formats.write_table(Table.from_dict(d), path)
    r = run("check", path, "--no-redesign", code=1)
    assert "MISMATCH" in r.stdout and "FAIL" in r.stdout


def test_check_finds_a_better_table(tmp_path):
    contiguous = design("tanh", 2, partition="contiguous")     # level-set is ~3x better for tanh
    path = tmp_path / "tanh2.csv"
    formats.write_table(contiguous, path)
    r = run("check", path, code=1)
    assert "BETTER by" in r.stdout and "levelset" in r.stdout
    r = run("check", path, "--against", "same")
    assert "OK" in r.stdout


def test_check_table_is_a_library_function():
    """The CLI prints what check_table returns; the numbers are there for callers."""
    from fewbit_design.check import check_table

    contiguous = design("tanh", 2, partition="contiguous")
    report = check_table(contiguous)
    assert not report.ok and report.best.partition == "levelset" and report.best.mse < contiguous.mse
    assert report.stored == (contiguous.mse, contiguous.relative_error)
    assert check_table(contiguous, against="same").ok
    quick = check_table(contiguous, against=None)
    assert quick.ok and quick.best is None and "design()" not in quick.text


def test_check_worse_boundaries(tmp_path):
    t = design("gelu", 3, partition="contiguous")
    d = t.to_dict()
    d["boundaries"][3] += 0.05                                 # a suboptimal table, error recomputed
    moved = Table.from_dict(d)
    from fewbit_design.designer import evaluate

    mse, rel = evaluate(moved)
    d["error"] = {"mse": mse, "relative": rel}
    path = tmp_path / "moved.h"
    formats.write_table(Table.from_dict(d), path)
    r = run("check", path, "--against", "contiguous", code=1)
    assert "matches" in r.stdout and "BETTER" in r.stdout


def test_check_refuses_corrupt(tmp_path):
    path = tmp_path / "t.npz"
    path.write_bytes(b"PK\x03\x04" + os.urandom(50))
    assert "t.npz" in refused("check", path)


# -- sweep ---------------------------------------------------------------------------

def test_sweep_command(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""\
        activations: [relu6]
        bits: 1-2
        distributions: ["normal:0,1"]
        partitions: [contiguous]
        formats: [json, h]
    """))
    r = run("sweep", cfg, "-o", tmp_path / "out", "-j", 1)
    assert "2 tables" in r.stdout and "2 designed" in r.stdout
    assert (tmp_path / "out" / "normal_0_1" / "relu6-2bit-contiguous.h").exists()
    r = run("sweep", cfg, "-o", tmp_path / "out", "-j", 1)
    assert "2 already current" in r.stdout


def test_sweep_bad_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("activations: [gelu]\nbits: 1-12\ndistributions: ['normal:0,1']\n")
    assert "bits" in refused("sweep", cfg)
    cfg.write_text("activations: [gelu]\nbits: 1\ndistributions: ['normal:0,1']\nformat: [json]\n")
    assert "'format'" in refused("sweep", cfg)
    assert "no-such.yaml" in refused("sweep", tmp_path / "no-such.yaml")
    run("sweep", cfg, "-j", 0, code=2)                          # a usage error (one line in cli.main)


# -- plot ----------------------------------------------------------------------------

MAGIC = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}


def test_plot_error_and_table(gelu2, tmp_path):
    out = tmp_path / "err.png"
    run("plot", "error", "gelu", "relu6", "--bits", "1-2", "--partition", "contiguous", "-o", out)
    assert out.read_bytes().startswith(MAGIC[".png"])
    out = tmp_path / "table.pdf"
    run("plot", "table", gelu2, "-o", out)
    assert out.read_bytes().startswith(MAGIC[".pdf"])


def test_plot_bad_inputs(gelu2, tmp_path):
    assert ".gif" in refused("plot", "table", gelu2, "-o", tmp_path / "x.gif")
    assert ".gif" in refused("plot", "error", "gelu", "-o", tmp_path / "x.gif")
    assert "nope" in refused("plot", "error", "nope", "-o", tmp_path / "x.png")
    assert "bits" in refused("plot", "error", "gelu", "--bits", "0-3", "-o", tmp_path / "x.png")
    assert "x.json" in refused("plot", "table", tmp_path / "x.json", "-o", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_start_stays_light():
    code = ("import sys, fewbit_design.cli, fewbit_design.formats, fewbit_design.sweep, "
            "fewbit_design.shipped; bad = [m for m in ('matplotlib', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
