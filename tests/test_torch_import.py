"""The designer never imports torch; the runtime's public names resolve."""

import subprocess
import sys

import pytest


def test_designer_does_not_import_torch():
    code = ("import sys, fewbit_design, fewbit_design.table, fewbit_design.designer, fewbit_design.formats; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_public_names():
    ft = pytest.importorskip("fewbit_design.torch")
    assert len(set(ft.__all__)) == len(ft.__all__)
    for name in ft.__all__:
        assert getattr(ft, name) is not None
