"""No module of ours shadows an installed distribution or the standard library.

A script folder on sys.path (python benchmarks/x.py puts benchmarks/ first) turns every file in it
into a top-level module: benchmarks/kernels.py once hid the PyPI package `kernels` that
transformers 5 imports. The names below are every name Python may import a file of this repository
under: the top-level packages, and the stems of files in folders that are run as scripts or whose
folder pytest puts on sys.path (tests/, tools/).
"""

import importlib.metadata
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def top_level_names():
    names = {}
    for entry in os.listdir(ROOT):
        path = os.path.join(ROOT, entry)
        if os.path.isfile(os.path.join(path, "__init__.py")):
            names[entry] = entry + "/"
        elif entry.endswith(".py"):
            names[entry[:-3]] = entry
    for folder in ("tests", "tools"):   # pytest's rootdir-relative import puts tests/ on sys.path; tools are scripts
        for entry in os.listdir(os.path.join(ROOT, folder)):
            if entry.endswith(".py"):
                names[entry[:-3]] = f"{folder}/{entry}"
    for entry in os.listdir(os.path.join(ROOT, "benchmarks")):   # in case a user still runs them as scripts
        if entry.endswith(".py") and entry != "__init__.py":
            names[entry[:-3]] = f"benchmarks/{entry}"
    return names


def test_the_names_are_found():
    names = top_level_names()
    assert {"fewbit_design", "benchmarks", "conftest", "naive", "mutation_subprocess", "memory_models"} <= set(names)
    assert "kernels" not in names   # the one that broke transformers 5: benchmarks/kernels.py is gpu_kernels.py


def test_no_name_equals_an_installed_distributions_module_or_the_stdlib():
    installed = importlib.metadata.packages_distributions()   # top-level module -> distributions
    ours = {"fewbit_design": {"fewbit-design"}}
    clashes = {f"{path} (as {name!r}) vs {', '.join(sorted(installed[name]))}"
               for name, path in top_level_names().items()
               if name in installed and set(installed[name]) - ours.get(name, set())}
    clashes |= {f"{path} (as {name!r}) vs the standard library"
                for name, path in top_level_names().items() if name in sys.stdlib_module_names}
    assert not clashes, sorted(clashes)
