"""Only fewbit_design/torch/ may import torch: an AST walk over every module, function-level imports included."""

import ast
import pathlib

import fewbit_design

PKG = pathlib.Path(fewbit_design.__file__).parent


def _torch_imports(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(n == "torch" or n.startswith("torch.") for n in names):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_walk_sees_a_function_level_import():
    src = "import numpy\n\ndef f():\n    if True:\n        from torch.nn import functional\n    import torch\n"
    assert _torch_imports(src) == [5, 6]


def test_no_module_outside_torch_imports_torch():
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "torch":
            continue
        if lines := _torch_imports(path.read_text()):
            found[str(rel)] = lines
    assert not found, f"modules outside fewbit_design/torch/ that import torch: {found}"
