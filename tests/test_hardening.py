"""Hardening: every activation × bits × distribution ends in a valid table whose stored error
matches an independent recomputation, or in a FewbitError; never another exception.

The oracle is scipy: quad in probability space (u = F(x), with scipy.special's cdf and ppf,
not ours) on the pointwise q of the table, or the plain mean over samples.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from fewbit_design.activations import REGISTRY, get_activation
from fewbit_design.designer import design
from fewbit_design.distributions import Samples, samples_from_array
from fewbit_design.errors import FewbitError
from fewbit_design.table import Table

EXAMPLES = int(os.environ.get("FEWBIT_HYPOTHESIS_EXAMPLES", "30"))


# -- the oracle ------------------------------------------------------------------------

def _family(name, p):
    """(standard ppf, standard cdf, loc, scale); every family is symmetric about loc."""
    if name == "normal":
        return special.ndtri, special.ndtr, p["mean"], p["std"]
    if name == "student-t":
        df = p["df"]
        return (lambda u: special.stdtrit(df, u)), (lambda z: special.stdtr(df, z)), p["loc"], p["scale"]
    if name == "laplace":
        return (lambda u: math.log(2 * u)), \
            (lambda z: 0.5 * math.exp(z) if z < 0 else 1 - 0.5 * math.exp(-z)), p["loc"], p["scale"]
    if name == "logistic":
        return (lambda u: math.log(u) - math.log1p(-u)), special.expit, p["loc"], p["scale"]
    if name == "uniform":
        return (lambda u: u - 0.5), (lambda z: min(max(z + 0.5, 0.0), 1.0)), \
            0.5 * (p["a"] + p["b"]), p["b"] - p["a"]
    raise KeyError(name)


def _halves(name, p):
    """Median m, and for each half (x <= m, x > m): the probability beyond x and its inverse.

    Each half is parametrised by its own tail probability (u = F(x) below the median,
    v = 1 - F(x) above), so that no probability is a difference near 1."""
    if name == "uniform":
        a, b = p["a"], p["b"]
        w = b - a
        return 0.5 * a + 0.5 * b, ((lambda x: (x - a) / w), (lambda u: a + u * w)), \
            ((lambda x: (b - x) / w), (lambda v: b - v * w))
    ppf, cdf, loc, scale = _family(name, p)

    def z(x):
        with np.errstate(over="ignore"):
            return (x - loc) / scale

    def x_of(sign):
        def f(u):
            with np.errstate(over="ignore"):
                return loc + sign * scale * float(ppf(u))
        return f

    return loc, ((lambda x: float(cdf(z(x)))), x_of(1.0)), ((lambda x: float(cdf(-z(x)))), x_of(-1.0))


def oracle_error(table: Table):
    """(mse, ∫w f'²) of `table` under the weight it names, by scipy.integrate.quad over u = F(x)."""
    act = get_activation(table.activation, table.params)
    _, _, loc, scale = _family(table.distribution, table.dist_params)
    median, lower, upper = _halves(table.distribution, table.dist_params)
    # split where f' has its structure (near 0) and where the weight has its (near loc), so
    # that quad never has to find a feature inside a long piece
    marks = [0.0] + [sg * 2.0 ** j for j in range(-40, 7) for sg in (-1, 1)]
    marks += [loc + scale * m for m in marks[:41]]
    marks += [x_of(u) for u in [10.0 ** -k for k in (*range(1, 17), *range(20, 301, 20))]
              for _, x_of in (lower, upper)]
    pts = sorted(set(table.boundaries.tolist()) | set(act.kinks) | {m for m in marks if math.isfinite(m)})
    ends = [-math.inf, *pts, math.inf]

    def integrand(u, x_of, q):
        x = float(np.clip(x_of(u), -1e300, 1e300))
        with np.errstate(over="ignore"):
            d = act.df(np.array([x]))[0]
            return float(d * d if q is None else (d - q) ** 2)

    if table.distribution == "student-t":
        return _t_oracle(act, table, ends, table.dist_params)
    mse = denom = 0.0
    for a, b in zip(ends[:-1], ends[1:]):
        q = float(table.q(np.array([a]))[0]) if a > -math.inf else float(table.levels[table.codes[0]])
        for lo, hi, (tail, x_of), flip in ((a, min(b, median), lower, False), (max(a, median), b, upper, True)):
            if not lo < hi:
                continue
            ua, ub = (tail(hi), tail(lo)) if flip else (tail(lo), tail(hi))
            ua, ub = max(ua, 0.0), min(ub, 1.0)
            if not ub > ua:
                continue
            mse += integrate.quad(integrand, ua, ub, args=(x_of, q), epsabs=0, epsrel=1e-11, limit=200)[0]
            denom += integrate.quad(integrand, ua, ub, args=(x_of, None), epsabs=0, epsrel=1e-11, limit=200)[0]
    return mse, denom


def _t_oracle(act, table, ends, p):
    """Student-t: quad over z for |z| <= 1 and over s = log|z| beyond, with the pdf from
    scipy.special.gammaln (in u = F(x) quad loses digits where x(u) ~ u^(-1/df), df near 0)."""
    df, loc, scale = p["df"], p["loc"], p["scale"]
    logc = special.gammaln((df + 1) / 2) - special.gammaln(df / 2) - 0.5 * math.log(df * math.pi)

    def pdf(z):
        return math.exp(logc - 0.5 * (df + 1) * math.log1p(z * z / df))

    def g(z, q):
        with np.errstate(over="ignore"):
            x = float(np.clip(loc + scale * z, -1e300, 1e300))
            d = act.df(np.array([x]))[0]
            return float(d * d if q is None else (d - q) ** 2)

    def inner(z, q):
        return pdf(z) * g(z, q)

    def outer(s, sign, q):
        z = sign * math.exp(s)
        w = pdf(z) * math.exp(s)
        return 0.0 if w == 0.0 else w * g(z, q)

    mse = denom = 0.0
    for a, b in zip(ends[:-1], ends[1:]):
        q = float(table.q(np.array([a]))[0]) if a > -math.inf else float(table.levels[table.codes[0]])
        with np.errstate(over="ignore"):
            za, zb = (a - loc) / scale, (b - loc) / scale
        parts = []
        if max(za, -1.0) < min(zb, 1.0):
            parts.append((inner, max(za, -1.0), min(zb, 1.0), ()))
        if zb > 1.0:       # z = e^s, s in (log max(za, 1), log zb]
            parts.append((outer, math.log(max(za, 1.0)), min(math.log(zb) if zb < math.inf else 700.0, 700.0), (1.0,)))
        if za < -1.0:      # z = -e^s
            parts.append((outer, math.log(max(-zb, 1.0)), min(math.log(-za) if za > -math.inf else 700.0, 700.0), (-1.0,)))
        for f, lo, hi, extra in parts:
            if lo < hi:
                mse += integrate.quad(f, lo, hi, args=(*extra, q), epsabs=0, epsrel=1e-11, limit=200)[0]
                denom += integrate.quad(f, lo, hi, args=(*extra, None), epsabs=0, epsrel=1e-11, limit=200)[0]
    return mse, denom


def _sup_df2(act, table):
    """max f'² where the weight has all but 1e-16 of its mass: the scale of an absolute tolerance."""
    ppf, _, loc, scale = _family(table.distribution, table.dist_params)
    u = np.logspace(-16, np.log10(0.5), 400)
    z = np.array([ppf(v) for v in u])
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.clip(np.concatenate([loc + scale * z, loc - scale * z]), -1e300, 1e300)
    near0 = np.linspace(-64, 64, 2049)
    x = np.concatenate([x, near0[(near0 >= x.min()) & (near0 <= x.max())]])
    return float(np.max(act.df(x) ** 2))


def check_against_oracle(table: Table, dist):
    assert isinstance(table, Table)
    act = get_activation(table.activation, table.params)
    rtol = 1e-6
    if isinstance(dist, Samples):
        d = act.df(dist.values)
        w = np.ones_like(d) if getattr(dist, "weights", None) is None else dist.weights
        mse_o = float(np.sum(w * (d - table.q(dist.values)) ** 2) / np.sum(w))
        den_o = float(np.sum(w * d * d) / np.sum(w))
        floor = 1e-12 * float(np.max(d * d))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # quad's warnings: the tolerance decides
            mse_o, den_o = oracle_error(table)
        floor = 1e-12 * _sup_df2(act, table)
    # stored within 1e-6 of the truth (or below an absolute floor that doubles cannot see
    # under a weight so wide that f' varies in a 1e-16 sliver of its mass)
    assert abs(table.mse - mse_o) <= rtol * mse_o + floor, (table, table.mse, mse_o)
    if table.relative_error > 0:
        den_s = table.mse / table.relative_error
        assert abs(den_s - den_o) <= rtol * den_o + floor, (table, den_s, den_o)
    else:
        assert table.mse <= rtol * mse_o + floor or den_o <= floor


# -- the strategies -----------------------------------------------------------------------

locations = st.one_of(st.just(0.0), st.floats(-10, 10),
                      st.floats(-300, 300).map(lambda e: math.copysign(10 ** abs(e), e)))
scales = st.one_of(st.just(1.0), st.floats(-300, 300).map(lambda e: 10.0 ** e))


@st.composite
def parametric(draw):
    fam = draw(st.sampled_from(["normal", "laplace", "logistic", "t", "uniform"]))
    loc, scale = draw(locations), draw(scales)
    if fam == "uniform":
        return f"uniform:{loc!r},{loc + scale!r}"
    if fam == "t":
        df = draw(st.one_of(st.just(0.05), st.floats(0.05, 1000)))
        return f"t:{df!r},{loc!r},{scale!r}"
    return f"{fam}:{loc!r},{scale!r}"


@st.composite
def samples(draw):
    kind = draw(st.sampled_from(["constant", "two", "far", "random", "tiny", "weighted"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n = draw(st.integers(1, 300))
    loc, scale = draw(locations), draw(scales)
    if kind == "constant":
        v = np.full(n, loc)
    elif kind == "two":
        v = rng.choice([loc, loc + scale], size=n + 1)
    elif kind == "far":
        v = draw(st.sampled_from([1e300, -1e300, 1e18, -1e150])) * (1 + rng.standard_normal(n) * 1e-12)
    elif kind == "tiny":
        v = rng.standard_normal(n) * 1e-300
    else:
        with np.errstate(over="ignore"):
            v = loc + scale * rng.standard_normal(n)
    weights = rng.exponential(size=v.size) ** 4 if kind == "weighted" else None   # wide-ranging
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return samples_from_array(v, weights=weights, source="hypothesis")
        except FewbitError:
            return None        # refused as a file would be: constant, no finite values


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("FEWBIT_HYPOTHESIS_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=st.sampled_from(sorted(REGISTRY)), bits=st.integers(1, 8),
       partition=st.sampled_from(["contiguous", "levelset", "auto"]),
       dist=st.one_of(parametric(), samples()))
def test_every_input_gives_a_table_that_matches_the_oracle_or_a_fewbit_error(name, bits, partition, dist):
    if dist is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            table = design(name, bits, distribution=dist, partition=partition)
        except FewbitError as e:
            assert "\n" not in str(e) and len(str(e)) < 400
            return
    check_against_oracle(table, dist if isinstance(dist, Samples) else None)


# -- table files never run code; validation gaps ------------------------------------------

from click.testing import CliRunner                         # noqa: E402

from fewbit_design import formats                           # noqa: E402
from fewbit_design.cli import main                          # noqa: E402


def _custom_table(tmp_path):
    """A table naming activation <module>:f, whose module writes a marker when imported."""
    marker = tmp_path / "imported.marker"
    module = f"fewbit_marker_{uuid.uuid4().hex}"       # never in sys.modules before
    (tmp_path / f"{module}.py").write_text(
        "import pathlib, numpy as np\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "def f(x):\n    return np.tanh(x)\n")
    t = design("tanh", 2)
    d = t.to_dict()
    d["activation"] = {"name": f"{module}:f", "params": {}}
    path = tmp_path / "custom.json"
    path.write_bytes(formats._dump_json(d).encode())
    return path, marker


@pytest.mark.parametrize("command", [["check"], ["check", "--no-redesign"], ["plot", "table"]])
def test_a_table_file_never_imports_its_activation_module(tmp_path, monkeypatch, command):
    path, marker = _custom_table(tmp_path)
    monkeypatch.chdir(tmp_path)                # the current folder is where imports look first
    out = ["-o", str(tmp_path / "f.png")] if command[0] == "plot" else []
    r = CliRunner().invoke(main, [*command, str(path), *out])
    assert r.exit_code == 2, r.output
    assert "--trust-activation-code" in r.output and "Traceback" not in r.output
    assert not marker.exists()
    # the flag that names the risk allows it, and then the import does happen
    r = CliRunner().invoke(main, [*command, str(path), *out, "--trust-activation-code"])
    assert marker.exists(), r.output


def test_check_resolves_samples_beside_the_table_and_checks_their_digest(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", rng.standard_normal(500))
    monkeypatch.chdir(tmp_path)
    t = design("gelu", 2, distribution="samples:acts.npy")
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    (tmp_path / "tables").mkdir()
    formats.write_table(t, tmp_path / "tables" / "g.json")
    (tmp_path / "tables" / "acts.npy").write_bytes((tmp_path / "acts.npy").read_bytes())
    monkeypatch.chdir(sub)                     # acts.npy is not here: found beside the table
    r = CliRunner().invoke(main, ["check", "--no-redesign", str(tmp_path / "tables" / "g.json")])
    assert r.exit_code == 0, r.output
    np.save(tmp_path / "tables" / "acts.npy", rng.standard_normal(500))   # other samples
    r = CliRunner().invoke(main, ["check", "--no-redesign", str(tmp_path / "tables" / "g.json")])
    assert r.exit_code == 2 and "sha256" in r.output, r.output


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_duplicate_keys_are_refused(fmt):
    text = formats.dumps(design("relu", 1), fmt).decode()
    dup = text.replace('"bits": 1,', '"bits": 1,\n  "bits": 2,') if fmt == "json" else \
        text.replace("bits: 1\n", "bits: 1\nbits: 2\n")
    assert dup != text
    with pytest.raises(FewbitError, match=r"t\.%s: field 'bits' is given twice" % fmt):
        formats.loads(dup.encode(), fmt, source=f"t.{fmt}")


def test_an_edited_c_header_is_refused():
    text = formats.dumps(design("gelu", 2), "h").decode()
    formats.loads(text.encode(), "h", source="t.h")
    edited = text.replace("<= x) lo = mid + 1", "< x) lo = mid + 1")
    assert edited != text
    with pytest.raises(FewbitError, match="t.h: the header's code"):
        formats.loads(edited.encode(), "h", source="t.h")


# -- bounded resources; small CLI edges ---------------------------------------------------

def _bomb(path, member):
    import zipfile
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, b"\0" * (400 * 2 ** 20))           # 400 MB inflated, ~400 KB on disk


@pytest.mark.parametrize("kind", ["table", "samples"])
def test_zip_bombs_are_refused_before_inflating(tmp_path, kind):
    import tracemalloc
    path = tmp_path / "bomb.npz"
    _bomb(path, "meta.npy" if kind == "table" else "x.npy")
    assert path.stat().st_size < 2 ** 20
    tracemalloc.start()
    try:
        with pytest.raises(FewbitError, match=r"inflates to 400 MiB, over the (table|samples) limit of \d+ MiB"):
            if kind == "table":
                formats.read_table(path)
            else:
                design("gelu", 2, distribution=f"samples:{path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20, peak                           # nothing was inflated


def test_small_cli_edges(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["gelu", "-b", "2", "-o", str(tmp_path / "nope" / "x.json")])
    assert r.exit_code == 2 and f"no such folder: {tmp_path / 'nope'}" in r.output and ".tmp" not in r.output
    r = runner.invoke(main, ["gelu", "-b", "2", "-o", str(tmp_path / "x.json"), "-f", "yaml"])
    assert r.exit_code == 0 and "writing yaml although the extension says json" in r.output
    r = runner.invoke(main, ["a" * 5000, "-b", "2"])
    assert r.exit_code == 2 and len(r.output) < 450
    # the weight printed in the text output pastes back as --dist, exactly
    np.save(tmp_path / "acts.npy", np.random.default_rng(1).standard_normal(100))
    for spec in ["normal:0.1234567890123,2.5", f"samples:{tmp_path / 'acts.npy'}"]:
        r = runner.invoke(main, ["gelu", "-b", "2", "--dist", spec])
        printed = r.output.splitlines()[0].split("for inputs ~ ")[1]
        again = runner.invoke(main, ["gelu", "-b", "2", "--dist", printed])
        assert printed == spec.replace("normal", "normal") and again.output == r.output


def test_long_designs_say_they_are_running(monkeypatch):
    from fewbit_design.cli import design as cli
    monkeypatch.setattr(cli._Heartbeat, "__init__",
                        lambda self, what, first=0.01, every=0.01, _i=cli._Heartbeat.__init__: _i(self, what, first, every))
    r = CliRunner().invoke(main, ["gelu", "-b", "6"])
    assert r.exit_code == 0 and "designing gelu at 6 bits:" in r.output


def test_closed_pipe_exits_0():
    import subprocess
    import sys
    res = subprocess.run(f"'{sys.executable}' -m fewbit_design list | head -1; exit ${{PIPESTATUS[0]}}",
                         shell=True, capture_output=True, text=True, executable="/bin/bash")
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_refinement_that_cannot_proceed_keeps_the_dp_result_and_says_so(monkeypatch):
    from fewbit_design import refine

    def broken(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(refine, "refine_points", broken)
    t = design("tanh", 3, partition="contiguous")
    ref = t.solver["refinement"]
    assert ref["note"].startswith("not refined: ZeroDivisionError") and ref["iterations"] == 0
    check_against_oracle(t, None)


@pytest.mark.parametrize("name, bits, spec", [("tanh", 8, "t:3"), ("gelu", 2, "normal:0,1e200"),
                                              ("relu", 1, "normal:1e18,1")])
def test_the_issue_examples(name, bits, spec):
    try:
        t = design(name, bits, distribution=spec)
    except FewbitError as e:
        assert spec == "normal:1e18,1" and "too narrow for its location" in str(e)
        return
    check_against_oracle(t, None)


def test_a_csv_first_line_is_skipped_only_when_it_reads_as_a_header(tmp_path):
    from fewbit_design.distributions import load_samples
    (tmp_path / "h.csv").write_text("activation\n1.0\n2.0\n")
    assert load_samples(str(tmp_path / "h.csv")).tolist() == [1.0, 2.0]
    for bad in ["1.0.0\n1.0\n2.0\n", "12,5\n1.0\n2.0\n", "--\n1.0\n2.0\n"]:
        (tmp_path / "b.csv").write_text(bad)
        with pytest.raises(FewbitError, match="line 1 is not a number"):
            load_samples(str(tmp_path / "b.csv"))
