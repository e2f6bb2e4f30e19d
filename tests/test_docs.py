"""README.md and docs/: no hand-copied figure, and the front page's shape.

(a) every `<!-- report:NAME -->` block equals what `python -m benchmarks.report` renders from
benchmarks/results/ (a figure that disagrees with its results fails here);
(b) decimal figures in `<!-- checked:NAME -->` prose are found in block NAME's rendering, and
no measured figure (µs, ms, MiB, GB/s, ×) stands anywhere else unless listed below with the
test that pins it; (c) README.md is at most 250 lines and its first code block is exactly the
two set-up commands; (d) the table-format page's packed bytes are pack_codes' bytes.
"""

import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import report  # noqa: E402

PAGES = report.documents()
CHECKED = re.compile(r"<!-- checked:([a-z_]+) -->\n(.*?)<!-- /checked -->", re.S)
MEASURED = re.compile(r"\d+(?:\.\d+)?(?:[–-]\d+(?:\.\d+)?)?(?:\s?(?:µs|ms|s|seconds|minutes|MiB|GB/s)\b|\s?%|×)")
# (a bare "×" only right after the number: "32 × 64" is a shape)
# figures outside the rendered blocks, each with what pins it
PINNED = {
    ("docs/engine.md", "3×"): "tests/test_design.py: level-set vs contiguous ratio for tanh",
    ("docs/engine.md", "2.5×"): "tests/test_design.py: level-set vs contiguous ratio for sigmoid",
    ("docs/status.md", "1.3×"): "a goal, not a measurement",
    ("docs/benchmarks.md", "120 s"): "a goal, not a measurement",
    ("docs/training.md", "10 %"): "the held-out share of the data, a setting",
    ("docs/training.md", "25 %"): "the held-out share of the data, a setting",
    ("docs/usage.md", "256 MiB"): "a limit: distributions.MAX_SAMPLES_BYTES (test_limits_are_the_codes)",
    ("docs/usage.md", "64 MiB"): "a limit: formats.MAX_TABLE_BYTES (test_limits_are_the_codes)",
    ("docs/development.md", "64 MiB"): "a limit: formats.MAX_TABLE_BYTES (test_limits_are_the_codes)",
}


def _name(path):
    return path.relative_to(ROOT).as_posix()


def _prose(text):
    """The text outside report blocks, checked regions, code fences and comments."""
    text = report.BLOCK.sub("", text)
    text = CHECKED.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def test_every_page_has_its_blocks():
    names = {m.group(2) for p in PAGES for m in report.BLOCK.finditer(p.read_text(encoding="utf-8"))}
    assert names <= set(report.BLOCKS)
    assert {"memory_headline", "cpu_summary"} <= {m.group(2) for m in
                                                   report.BLOCK.finditer((ROOT / "README.md").read_text("utf-8"))}
    assert names == set(report.BLOCKS), set(report.BLOCKS) - names   # every renderer is used


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_blocks_are_rendered_from_the_results(page):
    text = page.read_text(encoding="utf-8")
    assert report.render(text) == text, f"{_name(page)} is stale: run python -m benchmarks.report"


def test_report_check_mode_passes():
    assert report.main(["--check"]) == 0


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_checked_prose_figures_are_in_their_results(page):
    for name, body in CHECKED.findall(page.read_text(encoding="utf-8")):
        rendered = report.BLOCKS[name]()
        for figure in re.findall(r"\d+\.\d+", body):
            if figure in ("0.5", "0.044715"):           # gelu_new's formula, not a result
                continue
            assert figure in rendered, f"{_name(page)}: {figure} is not in block {name}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_measured_figure_outside_the_rendered_blocks(page):
    text = page.read_text(encoding="utf-8")
    for figure in MEASURED.findall(_prose(text)):
        assert (_name(page), figure) in PINNED, f"{_name(page)}: measured figure {figure!r} is neither rendered nor checked"


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first = re.search(r"```[a-z]*\n(.*?)```", text, re.S).group(1)
    assert first == ("pip install -e . && fewbit-design gelu --bits 3\n"
                     "pip install torch==2.13.0 && pip install -e '.[test]' && python -m pytest -q\n")
    assert text.index(first) < text.index("\n## ")     # first thing after the title and description


def test_readme_links_every_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in text, page.name


def test_commands_are_module_runs():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"python3? benchmarks/", text), _name(page)
        assert "benchmarks.kernels" not in text, _name(page)


def test_the_packed_example_is_pack_codes():
    torch = pytest.importorskip("torch")
    from fewbit_design.torch.packing import pack_codes, unpack_codes
    text = (ROOT / "docs" / "table-format.md").read_text(encoding="utf-8")
    assert "codes = [5, 3, 0, 7, 1, 6, 2, 4, 6]" in text
    want = [int(b, 16) for b in re.search(r"packed = \[(0x.*?)\]", text).group(1).split(", ")]
    codes = torch.tensor([5, 3, 0, 7, 1, 6, 2, 4, 6], dtype=torch.uint8)
    assert pack_codes(codes, 3).tolist() == want
    # the page's formula for element i
    B = 2
    assert [sum(((want[p * B + i // 8] >> (i % 8)) & 1) << p for p in range(3)) for i in range(9)] == codes.tolist()
    assert unpack_codes(torch.tensor(want, dtype=torch.uint8), 3, 9).tolist() == codes.tolist()


def test_limits_are_the_codes():
    from fewbit_design import distributions, formats
    assert distributions.MAX_SAMPLES_BYTES == 256 * 2 ** 20 and formats.MAX_TABLE_BYTES == 64 * 2 ** 20


def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict` (where mkdocs-material and mkdocstrings are installed)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    import os
    import subprocess
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "torch" / "index.html").exists()
