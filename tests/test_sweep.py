"""Sweeps from YAML configs, incremental re-runs, the bundle, and the shipped tables."""

import json
import os
import random

import numpy as np
import pytest

from fewbit_design import formats, shipped, sweep
from fewbit_design.activations import REGISTRY
from fewbit_design.designer import design
from fewbit_design.errors import FewbitError
from fewbit_design.formats import read_table
from fewbit_design.table import parse_bits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = os.path.join(ROOT, "tables")
SMALL = {"activations": ["relu", {"name": "leaky_relu", "params": {"negative_slope": 0.2}}],
         "bits": "1-2", "distributions": ["normal:0,1"], "partitions": ["contiguous"],
         "formats": ["json", "csv"]}


# -- config --------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [("1-8", list(range(1, 9))), ("1,2,4", [1, 2, 4]), (3, [3]),
                                            ([1, "3-4"], [1, 3, 4]), (" 2 - 3 ", [2, 3])])
def test_parse_bits(spec, expected):
    assert parse_bits(spec) == expected


@pytest.mark.parametrize("spec", ["0-3", "9", "4-2", "a", "", True, 2.5, [1, 9]])
def test_parse_bits_refuses(spec):
    with pytest.raises(FewbitError, match="bits"):
        parse_bits(spec)


@pytest.mark.parametrize("change, key", [
    (lambda c: c.pop("activations"), "activations"),
    (lambda c: c.update(activations=["nope"]), "activations[0]"),
    (lambda c: c.update(activations=[{"name": "elu", "params": {"alpha": "x"}}]), "activations[0].params"),
    (lambda c: c.update(activations=[{"nam": "elu"}]), "activations[0]"),
    (lambda c: c.update(activations=[{"name": "elu", "params": {"beta": 1}}]), "activations[0]"),
    (lambda c: c.update(bits="1-9"), "bits"),
    (lambda c: c.update(distributions=["nromal:0,1"]), "distributions[0]"),
    (lambda c: c.update(distributions=[]), "distributions"),
    (lambda c: c.update(partitions=["spiral"]), "partitions[0]"),
    (lambda c: c.update(formats=["xml"]), "formats[0]"),
    (lambda c: c.update(grid=3), "grid"),
    (lambda c: c.update(bundle={"path": 3}), "bundle"),
    (lambda c: c.update(bundle={"path": "b.json", "distributions": ["uniform:-1,1"]}), "bundle.distributions"),
    (lambda c: c.update(colour="blue"), "colour"),
    (lambda c: c.update(activations=["relu", "relu"]), "same file"),
])
def test_malformed_config_names_the_key(change, key, tmp_path):
    import yaml

    cfg = json.loads(json.dumps(SMALL))
    change(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(FewbitError) as info:
        sweep.load_config(str(path))
    msg = str(info.value)
    assert key in msg and str(path) in msg and "\n" not in msg, msg


def test_config_not_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("activations: [gelu\nbits: {")
    with pytest.raises(FewbitError, match="not valid YAML"):
        sweep.load_config(str(path))
    path.write_text("- just\n- a list\n")
    with pytest.raises(FewbitError, match="mapping"):
        sweep.load_config(str(path))


# -- running -------------------------------------------------------------------------

def test_sweep_writes_tables_index_and_is_incremental(tmp_path, monkeypatch):
    cfg = sweep.parse_config(dict(SMALL, bundle={"path": "pkg/b.json"}), base=str(tmp_path))
    out = str(tmp_path / "out")
    r = sweep.run_sweep(cfg, out, jobs=1)
    assert (r.designed, r.skipped, r.converted) == (4, 0, 0)
    stems = ["normal_0_1/relu-1bit-contiguous", "normal_0_1/relu-2bit-contiguous",
             "normal_0_1/leaky_relu_negative_slope=0.2-1bit-contiguous",
             "normal_0_1/leaky_relu_negative_slope=0.2-2bit-contiguous"]
    for stem in stems:
        t = read_table(os.path.join(out, stem + ".json"))
        assert read_table(os.path.join(out, stem + ".csv")) == t
    t = read_table(os.path.join(out, stems[2] + ".json"))
    assert t.params == {"negative_slope": 0.2} and t.bits == 1
    index = json.load(open(os.path.join(out, "index.json")))
    assert [e["files"][0] for e in index["tables"]] == [s + ".json" for s in
                                                        (stems[0], stems[1], stems[2], stems[3])]
    rows = open(os.path.join(out, "index.csv")).read().splitlines()
    assert rows[0].startswith("activation,params,bits") and len(rows) == 5
    assert len(formats.read_bundle(open(tmp_path / "pkg" / "b.json", "rb").read(), source="b")) == 4

    mtimes = {s: os.stat(os.path.join(out, s + ".json")).st_mtime_ns for s in stems}
    r = sweep.run_sweep(cfg, out, jobs=1)
    assert (r.designed, r.skipped, r.converted) == (0, 4, 0)
    assert all(os.stat(os.path.join(out, s + ".json")).st_mtime_ns == m for s, m in mtimes.items())
    assert json.load(open(os.path.join(out, "index.json"))) == index

    os.remove(os.path.join(out, stems[1] + ".csv"))          # a missing format: converted, not redesigned
    r = sweep.run_sweep(cfg, out, jobs=1)
    assert (r.designed, r.skipped, r.converted) == (0, 3, 1)
    assert os.path.exists(os.path.join(out, stems[1] + ".csv"))

    monkeypatch.setattr(sweep, "__version__", "99.0")        # a new package version: all redesigned
    r = sweep.run_sweep(cfg, out, jobs=1)
    assert r.designed == 4
    r = sweep.run_sweep(cfg, out, jobs=1, force=True)
    assert r.designed == 4


def test_sweep_in_parallel_matches_serial(tmp_path):
    cfg = sweep.parse_config(dict(SMALL, activations=["gelu", "tanh"], formats=["json"]))
    sweep.run_sweep(cfg, str(tmp_path / "a"), jobs=1)
    r = sweep.run_sweep(cfg, str(tmp_path / "b"), jobs=2)
    assert r.designed == 4
    for job in cfg.jobs:
        a = open(tmp_path / "a" / f"{job.stem}.json", "rb").read()
        assert open(tmp_path / "b" / f"{job.stem}.json", "rb").read() == a


def test_sweep_reports_failures_and_keeps_the_rest(tmp_path, monkeypatch):
    cfg = sweep.parse_config(dict(SMALL, formats=["json"]))
    real = sweep._design_job

    def flaky(job):
        if job.activation == "relu" and job.bits == 2:
            raise FewbitError("boom")
        return real(job)

    monkeypatch.setattr(sweep, "_design_job", flaky)
    with pytest.raises(FewbitError, match="1 of 4 tables failed.*relu-2bit.*boom"):
        sweep.run_sweep(cfg, str(tmp_path), jobs=1)
    index = json.load(open(tmp_path / "index.json"))
    assert len(index["tables"]) == 3
    monkeypatch.setattr(sweep, "_design_job", real)
    r = sweep.run_sweep(cfg, str(tmp_path), jobs=1)
    assert (r.designed, r.skipped) == (1, 3)


def test_read_bundle_refuses_garbage():
    with pytest.raises(FewbitError, match="b.json"):
        formats.read_bundle(b"\x00\xff", source="b.json")
    with pytest.raises(FewbitError, match="fewbit-table-bundle"):
        formats.read_bundle(b'{"format": "x"}', source="b.json")
    with pytest.raises(FewbitError, match=r"tables\[0\]: missing field"):
        formats.read_bundle(b'{"format": "fewbit-table-bundle", "version": 1, "tables": [{"version": 1}]}',
                          source="b.json")


# -- the shipped collection ----------------------------------------------------------

def test_shipped_config_covers_the_registry():
    cfg = sweep.load_config(os.path.join(TABLES, "sweep.yaml"))
    got = {(j.activation, j.bits, j.distribution) for j in cfg.jobs}
    want = {(a, b, d) for a in REGISTRY for b in range(1, 9) for d in ("normal:0,1", "uniform:-10,10")}
    assert got == want
    assert os.path.normpath(cfg.bundle_path) == os.path.normpath(shipped.BUNDLE_PATH)
    for job in cfg.jobs:                                     # the collection is complete
        assert os.path.exists(os.path.join(TABLES, f"{job.stem}.json")), job.stem


def test_shipped_table_lookup():
    t = shipped.shipped_table("gelu", 3)
    assert t is not None and (t.activation, t.bits, t.distribution) == ("gelu", 3, "normal")
    assert t == read_table(os.path.join(TABLES, "normal_0_1", "gelu-3bit-auto.json"))
    assert shipped.shipped_table("swish", 2) == shipped.shipped_table("silu", 2)
    assert shipped.shipped_table("elu", 4, params={"alpha": 1.0}) is not None   # the default value
    assert shipped.shipped_table("elu", 4, params={"alpha": 0.5}) is None
    assert shipped.shipped_table("gelu", 3, distribution="uniform:-10,10") is None   # not bundled
    assert shipped.shipped_table("gelu", 3, distribution="normal") == t
    assert len(shipped.shipped_tables()) == len(REGISTRY) * 8
    with pytest.raises(FewbitError):
        shipped.shipped_table("nope", 3)
    with pytest.raises(FewbitError):
        shipped.shipped_table("gelu", 9)


# What may differ between the shipped tables and a fresh design on another machine (numpy's
# SIMD kernels round by an ulp differently, AVX2 vs AVX-512), at 1-5 bits; README
# "Determinism" gives the measured values (all 336 tables, both builds): mse 1.1e-15 relative,
# boundaries 2.5e-12 and levels 1.4e-12 (relative to max(1, |value|)), codes equal but for ties
ACROSS_MACHINES = {"mse": 1e-13, "values": 1e-10}


def _same_design(t):
    from fewbit_design.designer import distribution_of

    fresh = design(t.activation, t.bits, distribution=distribution_of(t), params=t.params, partition="auto")
    if t.relative_error < 1e-14:            # exact: any exact table is as good (ties in round-off)
        assert fresh.relative_error < 1e-14
        return
    assert fresh.partition == t.partition
    assert fresh.mse == pytest.approx(t.mse, rel=ACROSS_MACHINES["mse"], abs=1e-15)
    if fresh.codes.size != t.codes.size or (fresh.codes != t.codes).any():
        return                              # a tie (the errors agree): another table as good
    tol = ACROSS_MACHINES["values"]
    np.testing.assert_allclose(fresh.boundaries, t.boundaries, rtol=tol, atol=tol)
    np.testing.assert_allclose(fresh.levels, t.levels, rtol=0, atol=tol * max(1.0, np.abs(t.levels).max()))


def test_a_sample_of_shipped_tables_is_still_what_design_produces():
    """If this fails the engine changed: fewbit-design sweep tables/sweep.yaml -o tables --force."""
    index = json.load(open(os.path.join(TABLES, "index.json")))["tables"]
    rng = random.Random(20240601)
    sample = rng.sample([e for e in index if e["key"]["bits"] <= 5], 6)
    for e in sample:
        _same_design(read_table(os.path.join(TABLES, e["files"][0])))
    bundled = [t for t in shipped.shipped_tables() if t.bits <= 5]
    for t in rng.sample(bundled, 2):
        _same_design(t)


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_interrupted_sweep_writes_the_index_and_resumes(tmp_path, jobs):
    """Ctrl-C: queued designs are cancelled, the finished ones are indexed, a re-run skips them."""
    cfg = sweep.parse_config(dict(SMALL, activations=["gelu", "tanh", "relu"], bits="1-3", formats=["json"]))
    done = []

    def progress(n):
        done.append(n)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(sweep.SweepInterrupted) as e:
        sweep.run_sweep(cfg, str(tmp_path), jobs=jobs, progress=progress)
    assert e.value.done == 2 and e.value.total == 9 and len(done) == 2     # nothing after Ctrl-C
    index = json.load(open(tmp_path / "index.json"))["tables"]
    assert len(index) == 2
    r = sweep.run_sweep(cfg, str(tmp_path), jobs=1)
    assert (r.skipped, r.designed) == (2, 7)


def test_sweep_ctrl_c_through_the_cli_exits_130_with_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fewbit_design.cli import main

    (tmp_path / "s.yaml").write_text("activations: [relu, gelu]\nbits: 1-2\ndistributions: ['normal:0,1']\n")
    real = sweep._design_job
    calls = []

    def interrupted(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(sweep, "_design_job", interrupted)
    r = CliRunner().invoke(main, ["sweep", str(tmp_path / "s.yaml"), "-j", "1"])
    assert r.exit_code == 130 and "run the same command again to resume" in r.output
    assert "Traceback" not in r.output
    assert len(json.load(open(tmp_path / "index.json"))["tables"]) == 1
