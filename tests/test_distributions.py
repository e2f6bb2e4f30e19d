"""Tests for the input weights: scipy.stats as the oracle, spec parsing, samples files."""

import hashlib
import math
import pickle
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from fewbit_design.distributions import (
    DISTRIBUTIONS, Distribution, Samples, load_samples, parse_distribution, samples_from_array,
)
from fewbit_design.errors import FewbitError

EPS = np.finfo(np.float64).eps

# spec -> (scipy oracle, |z d log pdf / dz| as a function of the standardised z)
CASES = {
    "normal:1,2": (stats.norm(1, 2), lambda z: z * z),
    "uniform:-3,5": (stats.uniform(-3, 8), lambda z: 0 * z),
    "laplace:1,2": (stats.laplace(1, 2), np.abs),
    "logistic:1,2": (stats.logistic(1, 2), np.abs),
    **{f"t:{df},1,2": (stats.t(df, 1, 2), lambda z, df=df: (df + 1) * z * z / (df + z * z))
       for df in (0.5, 1, 3, 30, 1e4, 1e9)},
}


def _grid(dist):
    """x = loc + scale * z with dyadic z, so that (x - loc) / scale is exact here and in scipy."""
    mags = np.round(np.logspace(-3, 3, 121) * 64) / 64
    z = np.unique(np.concatenate([-mags, [0.0], mags, np.arange(-40, 41) / 8]))
    loc, scale = (1.0, 2.0) if dist.name != "uniform" else (1.0, 8.0)
    return loc + scale * z, z


@pytest.mark.parametrize("spec", CASES)
def test_pdf_cdf_sf_match_scipy_to_conditioning(spec):
    dist, (ref, pdf_cond) = parse_distribution(spec), CASES[spec]
    x, z = _grid(dist)
    with np.errstate(divide="ignore", invalid="ignore"):
        for kind, ours, theirs, cond in [
            ("pdf", dist.pdf(x), ref.pdf(x), pdf_cond(z)),
            ("cdf", dist.cdf(x), ref.cdf(x), np.abs(x - 1) * ref.pdf(x) / ref.cdf(x)),
            ("sf", dist.sf(x), ref.sf(x), np.abs(x - 1) * ref.pdf(x) / ref.sf(x)),
        ]:
            # relative 1e-13, or what a few ulps of the argument move the value (far tails)
            rtol = np.maximum(1e-13, 8 * EPS * np.nan_to_num(cond))
            if kind == "pdf" and spec == "t:10000.0,1,2":
                rtol = np.maximum(rtol, 5e-12)   # scipy's t.pdf loses ~2e-12 here (gammaln)
            ok = theirs > 1e-300   # scipy's subnormal results carry few digits
            np.testing.assert_array_less(np.abs(ours - theirs)[ok], (rtol * theirs)[ok] + 1e-300)
            assert np.all(ours[~ok] < 1e-290)


@pytest.mark.parametrize("df", [0.5, 3, 1e4])
def test_student_t_against_mpmath(df):
    mp = pytest.importorskip("mpmath")
    dist = parse_distribution(f"t:{df}")
    with mp.workdps(40):
        _check_t_points(mp, dist, df)


def _check_t_points(mp, dist, df):
    for t in [0.25, 1.5, 3.0, 6.5, 20.0, 40.0]:
        tm, dfm = mp.mpf(t), mp.mpf(df)
        tail = mp.betainc(dfm / 2, mp.mpf(0.5), 0, dfm / (dfm + tm * tm), regularized=True) / 2
        pdf = mp.exp(mp.loggamma((dfm + 1) / 2) - mp.loggamma(dfm / 2)) / mp.sqrt(dfm * mp.pi) \
            * (1 + tm * tm / dfm) ** (-(dfm + 1) / 2)
        if tail < 1e-300:
            continue   # beyond the double range (t = 40, df = 1e4 is 5.5e-325)
        cond = max(1.0, float(tm * pdf / tail))
        assert abs(float(dist.cdf(-t)) - tail) <= 8 * EPS * cond * tail
        assert abs(float(dist.sf(t)) - tail) <= 8 * EPS * cond * tail
        assert abs(float(dist.pdf(t)) - pdf) <= 8 * EPS * max(1.0, df * t * t / (df + t * t)) * pdf


@pytest.mark.parametrize("spec", CASES)
def test_pdf_integrates_to_one(spec):
    dist = parse_distribution(spec)
    lo, hi = dist.quantile_range(1e-4)
    # geometric breakpoints about loc = 1: quad alone misses the mass of t with df = 1/2
    points = {*dist.kinks, *(1 + 2.0 ** np.arange(-8, 80)), *(1 - 2.0 ** np.arange(-8, 80))}
    edges = [lo, *sorted(p for p in points if lo < p < hi), hi]
    mass = sum(integrate.quad(dist.pdf, a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
               for a, b in zip(edges[:-1], edges[1:]))
    assert mass == pytest.approx(1 - 2e-4, rel=1e-10)
    if dist.support != (-np.inf, np.inf):
        assert dist.pdf(np.array(dist.support) + [-1e-9, 1e-9]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("spec", CASES)
@pytest.mark.parametrize("tail", [1e-12, 1e-6, 0.01, 0.3])
def test_quantile_range_definition(spec, tail):
    dist, (ref, _) = parse_distribution(spec), CASES[spec]
    lo, hi = dist.quantile_range(tail)
    # cdf(lo) = tail up to what rounding lo to a double moves it by
    for got, x in [(dist.cdf(lo), lo), (dist.sf(hi), hi)]:
        assert abs(got - tail) <= 1e-12 * tail + 2 * EPS * abs(x) * dist.pdf(x)
    # the check above is the definition; scipy's quantiles are a cross-check whose own accuracy
    # changes by release (scipy 1.15's Student-t ppf is 2.4e-11 off, relative, at t:3,1,2 tail 0.01)
    np.testing.assert_allclose([lo, hi], [ref.ppf(tail), ref.isf(tail)], rtol=1e-10, atol=1e-13)
    s_lo, s_hi = dist.support
    assert s_lo <= lo < hi <= s_hi


def test_quantile_range_stays_finite():
    # t with df = 1/2 puts 2e-155 of mass beyond the largest double: clipped there
    lo, hi = parse_distribution("t:0.5").quantile_range(1e-300)
    assert (lo, hi) == (-np.finfo(np.float64).max, np.finfo(np.float64).max)
    assert parse_distribution("normal").quantile_range(1e-300) == pytest.approx((-37.047096, 37.047096))


@pytest.mark.parametrize("tail", [0.0, 0.5, -0.1, 1.0, float("nan")])
def test_quantile_range_rejects_bad_tail(tail):
    with pytest.raises(FewbitError):
        parse_distribution("normal").quantile_range(tail)


@pytest.mark.parametrize("spec", CASES)
def test_extreme_inputs_without_warnings(spec):
    dist, (ref, _) = parse_distribution(spec), CASES[spec]
    x = np.array([-np.inf, -1e300, 1e300, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdf, cdf, sf = dist.pdf(x), dist.cdf(x), dist.sf(x)
        nan = dist.cdf(np.array([np.nan]))
    assert pdf[[0, 3]].tolist() == [0, 0] and np.all(pdf[1:3] < 1e-140)
    assert cdf[[0, 3]].tolist() == [0, 1] and sf[[0, 3]].tolist() == [1, 0]
    assert np.isnan(nan[0])
    if dist.name == "student-t" and dist.params["df"] <= 1:
        # mass beyond 1e300 (scipy says 0): tail = c |z|^-df / df to O(1/z^2), pdf = c |z|^(-df-1)
        df, z = dist.params["df"], 5e299
        c = math.exp(math.lgamma(df / 2 + 0.5) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) \
            * df ** (df / 2 + 0.5)
        np.testing.assert_allclose([cdf[1], sf[2]], c * z ** -df / df, rtol=1e-12)
    else:
        np.testing.assert_allclose([cdf[1], sf[2]], [ref.cdf(-1e300), ref.sf(1e300)], atol=1e-305)


@pytest.mark.parametrize("spec, name, params", [
    ("normal", "normal", {"mean": 0, "std": 1}),
    ("Gaussian:0,2", "normal", {"mean": 0, "std": 2}),
    ("normal:3", "normal", {"mean": 3, "std": 1}),   # omitted trailing parameters default
    (" normal : 1 , 0.5 ", "normal", {"mean": 1, "std": 0.5}),
    ("uniform", "uniform", {"a": -1, "b": 1}),
    ("uniform:-10,10", "uniform", {"a": -10, "b": 10}),
    ("laplace:0,1", "laplace", {"loc": 0, "scale": 1}),
    ("logistic:1e-3,2.5", "logistic", {"loc": 1e-3, "scale": 2.5}),
    ("t:3", "student-t", {"df": 3, "loc": 0, "scale": 1}),
    ("student-t:3", "student-t", {"df": 3, "loc": 0, "scale": 1}),
    ("student-t:3,0,1", "student-t", {"df": 3, "loc": 0, "scale": 1}),
    ("T:0.5,-1", "student-t", {"df": 0.5, "loc": -1, "scale": 1}),
])
def test_spec_parsing_and_round_trip(spec, name, params):
    dist = parse_distribution(spec)
    assert isinstance(dist, Distribution) and dist.name == name and dist.params == params
    assert list(dist.params) == list(params)   # canonical order
    again = parse_distribution(dist.spec)
    assert again == dist and again.params == dist.params and again.spec == dist.spec
    assert dist.to_dict() == {"name": name, "params": params}
    assert name in DISTRIBUTIONS


def test_canonical_specs_kinks_support():
    assert parse_distribution("normal").spec == "normal:0,1"
    assert parse_distribution("t:3").spec == "student-t:3,0,1"
    assert parse_distribution("normal:-0,0.1").spec == "normal:0,0.1"
    assert parse_distribution("uniform:-2,3").kinks == (-2, 3)
    assert parse_distribution("uniform:-2,3").support == (-2, 3)
    assert parse_distribution("laplace:1.5,2").kinks == (1.5,)
    for spec in ["normal", "logistic", "t:2"]:
        assert parse_distribution(spec).kinks == ()
        assert parse_distribution(spec).support == (-np.inf, np.inf)


@pytest.mark.parametrize("spec, words", [
    ("nromal", "normal"), ("lapalce:0,1", "laplace"), ("cauchy", "unknown"), ("", "unknown"),
    ("normal:1,2,3", "expected"), ("t", "expected"), ("student-t:1,2,3,4", "expected"),
    ("normal:a,1", "not a number"), ("normal:0,nan", "not finite"), ("normal:inf", "not finite"),
    ("normal:0,1e999", "not finite"), ("normal:0,0", "std"), ("normal:0,-1", "std"),
    ("laplace:0,0", "scale"), ("logistic:0,-2", "scale"), ("t:0", "df"), ("t:-1", "df"),
    ("t:3,0,0", "scale"), ("uniform:1,1", "a < b"), ("uniform:2,1", "a < b"),
    ("normal:0,,1", "empty"), ("samples:", "missing path"), ("samples:  ", "missing path"),
])
def test_bad_specs(spec, words):
    with pytest.raises(FewbitError, match=words) as info:
        parse_distribution(spec)
    assert "\n" not in str(info.value)


def test_unknown_name_suggests_close_names():
    with pytest.raises(FewbitError, match="did you mean 'normal'"):
        parse_distribution("nromal")


# ----------------------------------------------------------------------------- samples

VALUES = np.array([3.0, -1.5, 2.25, 0.0, 7.0, -4.0])


def _write(tmp_path, name, values=VALUES):
    path = tmp_path / name
    if name.lower().endswith(".npy"):
        with open(path, "wb") as fh:   # np.save(name) would append ".npy" to "X.NPY"
            np.save(fh, values.reshape(2, 3))
    elif name.endswith(".npz"):
        np.savez(path, acts=values)
    elif name.endswith(".csv"):
        path.write_text("value\n" + "\n".join(repr(float(v)) for v in values) + "\n")
    elif name.endswith(".txt"):
        path.write_text("# activations\n\n" + "\n".join(f"  {float(v)!r}  " for v in values) + "\n")
    return str(path)


@pytest.mark.parametrize("name", ["acts.npy", "acts.npz", "acts.csv", "acts.txt", "ACTS.NPY"])
def test_samples_every_format(tmp_path, name):
    path = _write(tmp_path, name)
    np.testing.assert_array_equal(load_samples(path), np.sort(VALUES))
    s = parse_distribution(f"samples:{path}")
    assert isinstance(s, Samples) and s.spec == f"samples:{path}" and s.name == "samples"
    np.testing.assert_array_equal(s.values, np.sort(VALUES))
    assert s.values.dtype == np.float64 and not s.values.flags.writeable
    digest = hashlib.sha256(np.sort(VALUES).tobytes()).hexdigest()
    assert s.params == {"path": path, "count": 6, "sha256": digest}
    assert s.to_dict() == {"name": "samples", "params": s.params}


def test_samples_npz_keys_ints_and_colons(tmp_path):
    path = str(tmp_path / "two.npz")
    np.savez(path, a=np.arange(5), b=VALUES)
    with pytest.raises(FewbitError, match="a, b"):
        load_samples(path)
    np.testing.assert_array_equal(load_samples(path + "#a"), np.arange(5.0))
    assert parse_distribution(f"samples:{path}#b").values.tolist() == sorted(VALUES)
    with pytest.raises(FewbitError, match="no array 'c'"):
        load_samples(path + "#c")
    colon = tmp_path / "run:1"
    colon.mkdir()
    spec = "samples:" + _write(colon, "x.npy")
    assert parse_distribution(spec).params["count"] == 6


def test_samples_torch(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.tensor(VALUES, dtype=torch.bfloat16).reshape(3, 2)
    for name, obj in [("a.pt", t), ("b.pth", {"acts": t}), ("c.pt", [t, "meta"])]:
        torch.save(obj, tmp_path / name)
        np.testing.assert_array_equal(load_samples(str(tmp_path / name)), np.sort(t.double().flatten().numpy()))
    torch.save({"x": t, "y": t}, tmp_path / "two.pt")
    torch.save(torch.tensor([True, False]), tmp_path / "bool.pt")
    torch.save({"n": 3}, tmp_path / "none.pt")
    for name, words in [("two.pt", "one tensor, found 2"), ("bool.pt", "numeric"), ("none.pt", "found 0")]:
        with pytest.raises(FewbitError, match=words):
            load_samples(str(tmp_path / name))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_samples_torch_refuses_pickled_code(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(FewbitError, match="arbitrary code"):
        load_samples(str(path))


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("unpickling ran code",))


def test_samples_drop_non_finite_with_warning(tmp_path):
    path = _write(tmp_path, "x.npy", np.array([1.0, np.nan, 2.0, np.inf, -np.inf, 3.0]))
    with pytest.warns(UserWarning, match=r"dropped 3 non-finite values of 6"):
        values = load_samples(path)
    assert values.tolist() == [1.0, 2.0, 3.0]


def _bad_files(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "none.npy", np.array([]))
    np.save(tmp_path / "obj.npy", np.array([1.0, "a", None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "str.npy", np.array(["1", "2"]))
    np.save(tmp_path / "cplx.npy", np.array([1j, 2.0]))
    np.save(tmp_path / "bool.npy", np.array([True, False]))
    np.save(tmp_path / "nan.npy", np.full(4, np.nan))
    np.save(tmp_path / "const.npy", np.full(4, 2.5))
    with open(tmp_path / "arch.npy", "wb") as fh:
        np.savez(fh, a=VALUES)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage" * 3)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04 nope")
    (tmp_path / "words.csv").write_text("value\n1.0\n2.0\nthree\n")
    (tmp_path / "header.txt").write_text("value\n1.0\n2.0\n")
    (tmp_path / "twohead.csv").write_text("a\nb\n1.0\n")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "blank.csv").write_text("# only a comment\n\n")
    (tmp_path / "data.json").write_text("[1, 2]")
    (tmp_path / "folder.npy").mkdir()
    return [
        ("missing.npy", "no such file"), ("arch.npy", "not a .npy"), ("folder.npy", "directory"), ("data.json", "extension"),
        ("empty.npy", "cannot read"), ("none.npy", "no values"), ("obj.npy", "cannot read"),
        ("str.npy", "numeric"), ("cplx.npy", "numeric"), ("bool.npy", "numeric"),
        ("nan.npy", "all 4 values are NaN"), ("const.npy", "all values are equal"),
        ("junk.npy", "cannot read"), ("junk.npz", "cannot read"), ("junk.pt", "cannot read|torch"),
        ("words.csv", "line 4"), ("header.txt", "line 1"), ("twohead.csv", "line 2"),
        ("binary.csv", "cannot read"), ("blank.csv", "no values"),
    ]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_samples_files(tmp_path):
    for name, words in _bad_files(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(FewbitError, match=words) as info:
            load_samples(path)
        message = str(info.value)
        assert "\n" not in message and path in message, message
        with pytest.raises(FewbitError):
            parse_distribution(f"samples:{path}")


def test_samples_from_array():
    s = samples_from_array([[3, 1], [2, 5]], source="layer3")
    assert s.values.tolist() == [1, 2, 3, 5] and s.params["path"] == "layer3"
    assert s == samples_from_array(np.array([5.0, 3.0, 2.0, 1.0]))
    for bad in [[], [1.0, 1.0], [np.nan], ["a", "b"], [None, 1.0]]:
        with pytest.raises(FewbitError, match="array"):
            samples_from_array(bad, source="array")


def _sqrt_v_over_1_minus_exp_coefs(n):
    """Taylor coefficients of g(v) = sqrt(v / (1 - e^-v)), exact rationals rounded once."""
    import math
    from fractions import Fraction

    f = [Fraction((-1) ** k, math.factorial(k + 1)) for k in range(n)]   # (1 - e^-v) / v
    c = [Fraction(1)]                                                    # c = f^(-1/2), Miller
    for m in range(1, n):
        c.append(sum((Fraction(k, 2) - m) * f[k] * c[m - k] for k in range(1, m + 1)) / m)
    return np.array([float(x) for x in c])


def test_student_t_series_coefficients_are_the_exact_ones():
    from fewbit_design.special import _G_COEFS

    np.testing.assert_array_equal(_G_COEFS, _sqrt_v_over_1_minus_exp_coefs(48))
