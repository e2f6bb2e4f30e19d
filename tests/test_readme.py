"""Every Python example in README.md and docs/ runs as shown (from a folder that has the checkout's tables/)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [(page.relative_to(ROOT).as_posix(), i, code)
          for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S))]


def test_the_pages_have_examples():
    assert {p for p, _, _ in BLOCKS} >= {"README.md", "docs/usage.md", "docs/runtime.md", "docs/calibration.md",
                                         "docs/table-format.md"}


@pytest.mark.parametrize("code", [c for _, _, c in BLOCKS], ids=[f"{p}:block{i}" for p, i, _ in BLOCKS])
def test_python_example_runs(code, tmp_path):
    if re.search(r"^(import|from) torch|fewbit_design\.torch", code, re.M):
        pytest.importorskip("torch")
    if re.search(r"^(import|from) (jax|flax)|fewbit_design\.jax", code, re.M):   # the jax extra
        pytest.importorskip("jax")
        pytest.importorskip("flax")
    (tmp_path / "tables").symlink_to(ROOT / "tables")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
