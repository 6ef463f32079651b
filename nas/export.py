"""Standalone export: a readable ``model.py`` that needs only torch.

The file holds the module classes the genome uses, copied from their source along with every helper they
reference, the genome as a literal, and ``build_model()``. It runs the same code as ``compile_model``, so
the same state dict gives the same outputs.
"""
from __future__ import annotations

import ast
import inspect
import math
import pprint
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

from blocks import MODULES
from nas.errors import NasError
from nas.genome import Genome
from nas.graph import build_graph
from nas.network import Network
from nas.outputs import write_atomic

_OUR_PACKAGES = ("blocks", "nas")

_BUILD_MODEL = '''
def build_model(weights=None, features_only=FEATURES_ONLY):
    """The network, optionally with weights saved by ``torch.save(model.state_dict(), path)``."""
    model = Network(GENOME, features_only=features_only)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


if __name__ == "__main__":
    model = build_model().eval()
    channels = GENOME["input"]["channels"]
    size = GENOME["input"]["resolution"]
    height, width = (size, size) if isinstance(size, int) else size
    with torch.inference_mode():
        out = model(torch.randn(1, channels, height, width))
    shapes = [tuple(o.shape) for o in out] if isinstance(out, list) else tuple(out.shape)
    print(GENOME["name"], shapes, sum(p.numel() for p in model.parameters()), "params")
'''


class ExportError(NasError):
    pass


class _Names(ast.NodeVisitor):
    """Free names a definition uses, skipping annotations (never evaluated in the exported file)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def visit_Name(self, node: ast.Name) -> None:
        if node.id not in self.names:
            self.names.append(node.id)

    def visit_arg(self, node: ast.arg) -> None:
        pass

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for child in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults, *node.body):
            if child is not None:
                self.visit(child)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)


# Names model.py defines itself around the collected code.
_RESERVED = {"MODULES": "the registry literal of model.py", "GENOME": "the genome literal of model.py",
             "FEATURES_ONLY": "model.py's build_model default",
             "build_model": "model.py's build_model()"}


class _Collector:
    """Gathers the definitions and imports model.py needs into one flat namespace, where each name is bound
    once: two different objects under one name (two helpers named alike in two files, a user's block named
    like one of ours) are refused, naming both, rather than one silently replacing the other."""

    def __init__(self) -> None:
        self.imports: list[str] = []
        self.definitions: list[str] = []
        self.seen: set[int] = set()
        self.bound: dict[str, str] = dict(_RESERVED)  # name -> what it stands for, in words

    def bind(self, name: str, meaning: str) -> None:
        known = self.bound.setdefault(name, meaning)
        if known != meaning:
            raise ExportError(f"cannot export: the name {name!r} would stand for both {known} and {meaning} in "
                              f"one model.py; rename one of them")

    def add(self, obj: object) -> None:
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.bind(obj.__name__, _where(obj))  # type: ignore[attr-defined]
        source = textwrap.dedent(inspect.getsource(obj))  # type: ignore[arg-type]
        visitor = _Names()
        visitor.visit(ast.parse(source))
        namespace = vars(sys.modules[obj.__module__])  # type: ignore[attr-defined]
        for name in visitor.names:
            if name in namespace:
                self._dependency(name, namespace[name], obj)
        self.definitions.append(source)

    def _dependency(self, name: str, value: object, user: object) -> None:
        if name == "MODULES":
            return  # written as a literal of the types the genome uses
        if isinstance(value, types.ModuleType):
            self.bind(name, f"module {value.__name__}")
            self._import(_import_line(name, value), value.__name__)
        elif inspect.isclass(value) or inspect.isfunction(value):
            module = value.__module__
            if module.split(".")[0] in _OUR_PACKAGES:
                self.add(value)
                if name != value.__name__:  # imported under another name: model.py needs that name too
                    self.bind(name, _where(value))
                    if f"{name} = {value.__name__}" not in self.definitions:
                        self.definitions.append(f"{name} = {value.__name__}")
            else:
                self.bind(name, _where(value))
                self._import(f"from {module} import {value.__name__}" +
                             (f" as {name}" if name != value.__name__ else ""), module)
        elif isinstance(value, (int, float, str, bool, tuple)) and ast.literal_eval(repr(value)) == value:
            line = f"{name} = {value!r}"
            self.bind(name, line)
            if line not in self.definitions:
                self.definitions.insert(0, line)
        else:
            raise ExportError(f"cannot export {getattr(user, '__qualname__', user)}: it uses {name!r}, "
                              f"a {type(value).__name__} that is not plain torch or standard-library code")

    def _import(self, line: str, module: str) -> None:
        top = module.split(".")[0]
        if top != "torch" and top not in sys.stdlib_module_names:
            raise ExportError(f"cannot export: {line!r} is neither torch nor the standard library")
        if line not in self.imports:
            self.imports.append(line)


def _where(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"  # type: ignore[attr-defined]


def _import_line(name: str, module: types.ModuleType) -> str:
    full = module.__name__
    if "." not in full:
        return f"import {full}" + (f" as {name}" if name != full else "")
    parent, leaf = full.rsplit(".", 1)
    return f"from {parent} import {leaf}" + (f" as {name}" if name != leaf else "")


def used_modules(genome: Genome) -> dict[str, dict[str, type]]:
    """The slice of the module registry this genome needs."""
    roots = [data["config"] for _, data in build_graph(genome).nodes(data=True) if data["config"] is not None]
    classes = {type(c).module for root in roots for c in root.walk()}
    return {role: {tag: cls for tag, cls in sorted(table.items()) if cls in classes}
            for role, table in MODULES.items() if any(cls in classes for cls in table.values())}


def _literal_values(value: Any, where: str = "GENOME") -> Any:
    """The genome's JSON values as pprint writes them back as Python: strings and numbers by ``repr`` (so a
    name holding quotes, backslashes or newlines stays a string). Anything without a literal (``inf``,
    ``nan``: a loaded genome never holds them) is refused rather than written as text."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ExportError(f"cannot write {where}: key {key!r} is not a string")
        return {key: _literal_values(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list):
        return [_literal_values(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ExportError(f"cannot write {where}: {value} has no Python literal")
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise ExportError(f"cannot write {where}: {type(value).__name__} is not a JSON value")


def standalone_source(genome: Genome, features_only: bool = False) -> str:
    """The text of a standalone ``model.py`` for this genome. Every value from the genome (its name
    included) is written only inside the ``GENOME`` literal, by ``repr``: no genome text reaches the code or
    the docstring. With ``features_only``, ``build_model()`` builds the network without its classifier,
    returning the neck's pyramid (or, without a neck, every stage's output)."""
    modules = used_modules(genome)
    collector = _Collector()
    collector.add(Network)
    for table in modules.values():
        for cls in table.values():
            collector.add(cls)
    table = "MODULES = {\n" + "".join(
        f"    {role!r}: {{{', '.join(f'{tag!r}: {cls.__name__}' for tag, cls in entries.items())}}},\n"
        for role, entries in modules.items()) + "}\n"
    header = ('"""A standalone model written by `nas compile` from the genome in GENOME (hash '
              f'{genome.content_hash()}).\n\nNeeds only torch. `build_model()` returns the network; run this '
              'file for a smoke test.\n"""\n')
    imports = "\n".join(["from __future__ import annotations", *sorted(collector.imports)])
    genome_literal = "GENOME = " + pprint.pformat(_literal_values(genome.to_dict()), sort_dicts=False,
                                                  width=110) + f"\nFEATURES_ONLY = {bool(features_only)!r}\n"
    parts = [header + "\n" + imports, *collector.definitions, table + "\n" + genome_literal, _BUILD_MODEL.strip()]
    return "\n\n\n".join(part.rstrip() for part in parts) + "\n"


def export_model(genome: Genome, path: str | Path, features_only: bool = False) -> Path:
    path = Path(path)
    write_atomic(path, standalone_source(genome, features_only))  # UTF-8, Python's source encoding
    return path
