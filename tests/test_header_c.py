"""The C/CUDA header (.h / .cuh), compiled as C99 and as C++11, against Table.

README: static const arrays <p>_boundaries, <p>_codes, <p>_levels; macros <P>_BITS,
<P>_N_BOUNDARIES, <P>_N_INTERVALS, <P>_N_LEVELS; inline <p>_interval/_code/_level(x), with
"the interval of x is the number of boundaries <= x" and "NaN falls in the last interval";
under __CUDACC__ the arrays are __device__ and the functions device-only; FEWBIT_STORAGE and
FEWBIT_FN, defined first, choose otherwise. Skipped where no compiler is installed.
"""

import shutil
import struct
import subprocess

import numpy as np
import pytest

from fewbit_design import formats
from fewbit_design.designer import design
from fewbit_design.table import Table

CC, CXX = shutil.which("cc") or shutil.which("gcc"), shutil.which("c++") or shutil.which("g++")
COMPILERS = [pytest.param(CC, "-std=c99", "c", id="c99",
                          marks=pytest.mark.skipif(CC is None, reason="no C compiler")),
             pytest.param(CXX, "-std=c++11", "c++", id="c++11",
                          marks=pytest.mark.skipif(CXX is None, reason="no C++ compiler"))]
STRICT = ["-Wall", "-Wextra", "-pedantic", "-Werror"]


def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _double(u: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", u))[0]


NANS = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFF0000000000001,
        0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FF8DEADBEEF0001]
SPECIAL = [np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308,
           -2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308, 1.0, -1.0]


def probe_bits(t):
    """Bit patterns of NaNs (payloads, both signs), +-inf, +-0, subnormals, +-max, every
    boundary and both its neighbours, and random values."""
    b = t.boundaries
    with np.errstate(over="ignore"):                  # neighbours of +-max are +-inf
        xs = np.concatenate([SPECIAL, b, np.nextafter(b, -np.inf), np.nextafter(b, np.inf),
                             np.random.default_rng(0).normal(0, 3, 200)])
    return NANS + [_bits(float(x)) for x in xs]


def hand_table(boundaries, levelset=False):
    b = np.asarray(boundaries, dtype=float)
    n = b.size + 1
    codes = np.arange(n) if not levelset else np.arange(n) % max(1, n // 2)
    levels = np.linspace(-0.5, 1.25, int(codes.max()) + 1)
    return Table(activation="gelu", bits=max(1, int(np.ceil(np.log2(max(levels.size, 2))))),
                 boundaries=b, codes=codes, levels=levels, mse=0.0, relative_error=0.0,
                 distribution="normal", dist_params={"mean": 0.0, "std": 1.0},
                 partition="levelset" if levelset else "contiguous")


TABLES = {
    "gelu3ls": lambda: design("gelu", 3, partition="levelset"),
    "tanh8": lambda: design("tanh", 8, partition="contiguous"),
    "silu2": lambda: design("silu", 2, partition="contiguous"),
    "zeros": lambda: hand_table([-5e-324, 0.0, 5e-324, 1e-300, 1.0], levelset=True),
    "huge": lambda: hand_table([-1.7976931348623157e308, -1e-310, 1.7976931348623157e308]),
    "one": lambda: hand_table([]),
}

MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "{stem}.h"
static const unsigned long long xs[{n}] = {{{xs}}};
int main(void) {{
  int i;
  for (i = 0; i < {n}; i++) {{
    double x;
    memcpy(&x, &xs[i], sizeof x);
    printf("%d %d %a\n", {p}_interval(x), (int){p}_code(x), {p}_level(x));
  }}
  printf("M %d %d %d %d\n", {P}_BITS, {P}_N_BOUNDARIES, {P}_N_INTERVALS, {P}_N_LEVELS);
  for (i = 0; i < {P}_N_LEVELS; i++) printf("L %a\n", {p}_levels[i]);
  for (i = 0; i < {P}_N_INTERVALS; i++) printf("C %d\n", (int){p}_codes[i]);
  {boundaries}
  return 0;
}}
"""


def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.parametrize("compiler,std,lang", COMPILERS)
@pytest.mark.parametrize("which", list(TABLES))
def test_header_lookup_equals_table_q(which, compiler, std, lang, tmp_path):
    t = TABLES[which]()
    stem = f"tab_{which}"
    p = f"fewbit_{stem}"
    formats.write_table(t, tmp_path / f"{stem}.h")
    raw = probe_bits(t)
    loop = (f'for (i = 0; i < {p.upper()}_N_BOUNDARIES; i++) printf("B %a\\n", {p}_boundaries[i]);'
            if t.boundaries.size else "")
    (tmp_path / "main.c").write_text(MAIN.format(
        stem=stem, n=len(raw), xs=", ".join(f"0x{u:016X}ULL" for u in raw), p=p, P=p.upper(), boundaries=loop))
    _run([compiler, std, *STRICT, "-x", lang, "main.c", "-o", "main"], tmp_path)
    out = _run([str(tmp_path / "main")], tmp_path).splitlines()
    rows = [line.split() for line in out if line[0] not in "MLCB"]
    xs = np.array([_double(u) for u in raw])
    nb = t.boundaries.size
    got_i = np.array([int(r[0]) for r in rows])
    assert np.array_equal(got_i, t.interval(xs)), xs[got_i != t.interval(xs)]
    assert np.array_equal(got_i, np.searchsorted(t.boundaries, xs, side="right") * ~np.isnan(xs)
                          + nb * np.isnan(xs))                   # the README's rule, NaN last
    assert [int(r[1]) for r in rows] == t.code(xs).tolist()
    assert [float.fromhex(r[2]) for r in rows] == t.q(xs).tolist()
    meta = next(line for line in out if line[0] == "M").split()[1:]
    assert [int(v) for v in meta] == [t.bits, nb, t.codes.size, t.levels.size]
    # decimal literals in the header are exact: the compiled doubles are the table's, bit for bit
    assert [float.fromhex(line[2:]) for line in out if line[0] == "L"] == t.levels.tolist()
    assert [int(line[2:]) for line in out if line[0] == "C"] == t.codes.tolist()
    got_b = [float.fromhex(line[2:]) for line in out if line[0] == "B"]
    assert [_bits(v) for v in got_b] == [_bits(float(v)) for v in t.boundaries]


TU_TABLE = r"""
#define FEWBIT_STORAGE {storage}
#define FEWBIT_FN {fn}
#include "tab.h"
"""

TU_MAIN = r"""
#include <stdio.h>
{linkage} const double fewbit_tab_levels[{nl}];
{linkage} const unsigned char fewbit_tab_codes[{ni}];
{linkage} int fewbit_tab_interval(double x);
{linkage} double fewbit_tab_level(double x);
int main(void) {{
  printf("%d %a %a %d\n", fewbit_tab_interval(0.25), fewbit_tab_level(0.25), fewbit_tab_levels[1],
         (int)fewbit_tab_codes[{last}]);
  return 0;
}}
"""


@pytest.mark.parametrize("compiler,std,lang", COMPILERS)
def test_storage_and_function_macros_choose_the_linkage(compiler, std, lang, tmp_path):
    # with FEWBIT_STORAGE / FEWBIT_FN defined first, the arrays and functions get the user's
    # linkage: another translation unit links against them (the default static would not link)
    t = TABLES["gelu3ls"]()
    formats.write_table(t, tmp_path / "tab.h")
    storage = "const" if lang == "c" else "extern const"
    (tmp_path / "table.c").write_text(TU_TABLE.format(storage=storage, fn=""))
    (tmp_path / "main.c").write_text(TU_MAIN.format(linkage="extern", nl=t.levels.size, ni=t.codes.size,
                                                    last=t.codes.size - 1))
    _run([compiler, std, *STRICT, "-x", lang, "table.c", "main.c", "-o", "main"], tmp_path)
    i, level, l1, c_last = _run([str(tmp_path / "main")], tmp_path).split()
    assert int(i) == t.interval(np.array([0.25]))[0]
    assert float.fromhex(level) == t.q(np.array([0.25]))[0]
    assert float.fromhex(l1) == t.levels[1] and int(c_last) == t.codes[-1]
    # without the macros the same program does not link: the defaults are static
    (tmp_path / "table.c").write_text('#include "tab.h"\n')
    r = subprocess.run([compiler, std, "-x", lang, "table.c", "main.c", "-o", "main2"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "fewbit_tab_" in r.stderr


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_cuda_branch_makes_device_arrays_and_functions(tmp_path):
    t = TABLES["silu2"]()
    formats.write_table(t, tmp_path / "tab.cuh")
    cuda = _run([CC, "-E", "-P", "-D__CUDACC__", "-x", "c", "tab.cuh"], tmp_path)
    for name, kind in (("boundaries", "double"), ("codes", "unsigned char"), ("levels", "double")):
        assert f"static __device__ const {kind} fewbit_tab_{name}[" in cuda
    for fn in ("int fewbit_tab_interval", "unsigned char fewbit_tab_code", "double fewbit_tab_level"):
        assert f"static __device__ __forceinline__ {fn}(double x)" in cuda
    host = _run([CC, "-E", "-P", "-x", "c", "tab.cuh"], tmp_path)
    assert "__device__" not in host.replace("__CUDACC__", "")
    assert "static const double fewbit_tab_levels[" in host and "static inline int fewbit_tab_interval(" in host
