"""The package face: lazy public names, a cheap import, no import cycle."""

import ast
import importlib
import pathlib
import pkgutil
import subprocess
import sys

import fewbit_design as fd

PACKAGE = pathlib.Path(fd.__file__).parent


def test_import_is_cheap_and_design_is_the_function():
    code = ("import sys, fewbit_design as fd; heavy = [m for m in ('numba', 'torch', 'matplotlib') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "t = fd.design('gelu', 3); assert 'numba' in sys.modules and 'torch' not in sys.modules; "
            "print(t.relative_error)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 0 < float(done.stdout) < 0.01


def test_public_names_resolve_and_no_module_hides_one():
    assert len(set(fd.__all__)) == len(fd.__all__)
    for name in fd.__all__:
        assert getattr(fd, name) is not None, name
    submodules = {m.name for m in pkgutil.iter_modules([str(PACKAGE)])}
    assert not submodules & set(fd.__all__)          # `fd.design` can never become a module
    assert callable(fd.design) and fd.design.__module__ == "fewbit_design.designer"
    assert set(fd.__all__) <= set(dir(fd))
    assert (PACKAGE / "py.typed").exists()
    try:
        fd.nope
    except AttributeError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("fd.nope resolved")


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: pathlib.Path, modules: set) -> set:
    """Modules of the package that `path` imports anywhere (top level or inside functions),
    leaving out `if TYPE_CHECKING:` blocks."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:
                    out.add(sub)                 # `from . import kernels`: the submodule
                elif target in modules:
                    out.add(target)
    out.discard(name)
    return out


def test_no_import_cycle():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    # a package's __init__ importing its own submodules (re-exports) is not a cycle: Python
    # imports the package before any of its submodules
    for pkg in modules:
        graph[pkg] = {m for m in graph[pkg] if not m.startswith(pkg + ".")}
    state: dict = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_every_module_says_its_step():
    for path in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and doc.strip(), f"{path.name}: no docstring"


def test_submodules_import():
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name != "__main__.py":       # that one runs the command line
            importlib.import_module(_module_name(path))
