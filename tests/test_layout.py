"""The house rules of ARCHITECTURE.md, checked on the code: imports point down the
layers, nothing imports the ``pytracers`` package from below, and no module is
too big to read."""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

import pytest

pytestmark = pytest.mark.kernel_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "pytracers")

# Lowest first; a module may import its own layer and the layers below, never above
# (lazy imports inside functions included).  Keep in step with ARCHITECTURE.md.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("binding", ("pytracers.errors", "pytracers.kinds", "pytracers._libbpf",
                 "pytracers._libbpf_ffi", "pytracers._resource", "pytracers._shipped",
                 "pytracers._version")),
    ("formats", ("pytracers.elf", "pytracers.btf")),
    ("kernel facts", ("pytracers.kernel", "pytracers.user", "pytracers.tracefs",
                      "pytracers.introspect", "pytracers.symbolize")),
    ("core objects", ("pytracers._errmap", "pytracers.object", "pytracers.program",
                      "pytracers.link", "pytracers.maps", "pytracers.mapbatch",
                      "pytracers.globalvars", "pytracers.eventbuf", "pytracers.ringbuf",
                      "pytracers.perfbuf", "pytracers.aio", "pytracers.attachall",
                      "pytracers.perf")),
    ("feature prober", ("pytracers.features",)),
    ("tracers", ("pytracers.tracers", "pytracers.profiler")),
    ("choice", ("pytracers.choose",)),
    ("front ends", ("pytracers.cli", "pytracers.agent", "pytracers.pytest_plugin",
                    "pytracers.__main__", "pytracers")),
]
GENERATED = {"pytracers/_libbpf_ffi.py", "pytracers/elf/_inspected.py",
             "pytracers/tracers/_x86_64_syscalls.py", "pytracers/tracers/_arm64_syscalls.py"}
MAX_LINES = 600


def _modules() -> Iterator[Tuple[str, str]]:
    for dirpath, _dirs, files in os.walk(PKG):
        for fn in sorted(files):
            if fn.endswith(".py"):
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, ROOT)
                mod = rel[:-3].replace(os.sep, ".")
                if mod.endswith(".__init__"):
                    mod = mod[: -len(".__init__")]
                yield mod, path


MODULES: Set[str] = set()      # every module's dotted name, filled below


def _imports(mod: str, path: str) -> Set[str]:
    """Every pytracers module ``mod`` imports, at top level or inside a function."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    out: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pytracers")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pytracers":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                # "from . import kinds" imports the module pytracers.kinds;
                # "from .kinds import TP" or "from . import open" the module named
                out.add(sub if sub in MODULES else target)
    return out


MODULES.update(m for m, _p in _modules())


def _layer(mod: str) -> int:
    best, depth = -1, -1
    for i, (_name, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > depth:
                best, depth = i, len(p)
    return best


def test_every_module_has_a_layer():
    missing = [m for m, _p in _modules() if _layer(m) < 0]
    assert not missing, f"modules with no layer in LAYERS (and ARCHITECTURE.md): {missing}"


def test_imports_point_down_the_layers():
    wrong = []
    for mod, path in _modules():
        for imp in _imports(mod, path):
            if _layer(imp) > _layer(mod):
                wrong.append(f"{mod} ({LAYERS[_layer(mod)][0]}) imports {imp} "
                             f"({LAYERS[_layer(imp)][0]})")
    assert not wrong, "imports that run up the layers:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_the_package_from_below():
    wrong = []
    for mod, path in _modules():
        if mod == "pytracers":
            continue
        if "pytracers" in _imports(mod, path):
            wrong.append(mod)
    assert not wrong, f"modules importing the pytracers package itself: {wrong}"


def test_kernel_facts_and_tracers_do_not_import_each_other_in_a_cycle():
    graph: Dict[str, Set[str]] = {m: _imports(m, p) for m, p in _modules()}
    kernel = {m for m in graph if m.startswith("pytracers.kernel")}
    for k in kernel:
        assert not any(i.startswith("pytracers.tracers") for i in graph[k]), k


def test_no_module_is_over_the_size_limit():
    big = []
    for _mod, path in _modules():
        rel = os.path.relpath(path, ROOT)
        if rel in GENERATED:
            continue
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            big.append(f"{rel}: {n} lines")
    assert not big, f"modules over {MAX_LINES} lines: {big}"
