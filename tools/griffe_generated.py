"""mkdocstrings (griffe) extension for the API pages: the module classes that
fewbit_design.torch.modules generates from the activation registry are invisible to static
analysis, so they are taken from the imported module (mkdocs.yml names this file)."""

import importlib

import griffe

GENERATED = "fewbit_design.torch.modules"


class GeneratedClasses(griffe.Extension):
    def on_module_members(self, *, mod, **kwargs):
        if mod.path != GENERATED:
            return
        try:
            module = importlib.import_module(GENERATED)
        except ImportError:     # no torch where the site is built: the page lists FewbitActivation only
            return
        inspected = griffe.inspect(GENERATED)
        for name in module.__all__:
            if name not in mod.members:
                cls = inspected.members[name]
                for member in [m for m in cls.members if m != "__init__"]:   # inherited and dunder noise
                    cls.del_member(member)
                mod.set_member(name, cls)
