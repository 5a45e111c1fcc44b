"""The package's imports follow the layers of docs/architecture.md, and no modules import each other in a circle.

Every ``import`` / ``from ... import`` in src/kpengine is read from the source (AST, imports
inside functions included, so a lazy import cannot hide an arrow). A module of package ``P``
may import only modules of ``P`` itself or of packages in lower layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lowest first; the same list as docs/architecture.md ("Layers"). "" is the top-level modules
#: (kpengine/__init__, errors, categories) that everything may use.
LAYERS: list[str] = [
    "",
    "io",
    "geometry",
    "data",
    "metrics",
    "viz",
    "learn",
    "aggregate",
    "render",
    "image",
    "store",
    "server",
    "cli",
]

#: Arrows that are known to be wrong, to be fixed elsewhere: (importer, imported) modules -> issue.
#: Remove an entry when its fix lands.
#: (io/renderset built image samples until issue 11a moved that into image/renderset.)
KNOWN_LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}
#: Import circles being fixed elsewhere: frozenset of modules -> issue. Remove an entry when its fix lands.
#: (The learn/ circles predict <-> decision <-> transfer and backbones/__init__ <-> its modules were
#: listed here until issue 10b's run mechanism and registries landed.)
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "kpengine").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "migrations" in parts:  # alembic scripts, loaded by alembic, not imported
            continue
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the kpengine modules it imports (a ``from X import name`` counts as importing X,
    or X.name when that is a module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules and "." in t:  # import kpengine.x.y.func -> kpengine.x.y
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.add(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        out.append(frozenset(comp))
            elif w not in index:
                index[w] = low[w] = counter
                counter += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(graph.get(w, ())))))
            elif w in on:
                low[v] = min(low[v], index[w])
    return out


def test_every_package_has_a_layer():
    packages = {layer_of(m) for m in _modules()}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS and to docs/architecture.md"


def test_imports_only_go_down_the_layers():
    rank = {p: i for i, p in enumerate(LAYERS)}
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        for t in targets
        if rank[layer_of(t)] > rank[layer_of(m)] and (m, t) not in KNOWN_LAYER_EXCEPTIONS
    )
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(wrong)


def test_no_import_circles():
    found = [c for c in circles(import_graph()) if c not in KNOWN_CIRCLES]
    assert not found, "modules importing each other in a circle: " + "; ".join(
        sorted(", ".join(sorted(c)) for c in found)
    )


def test_the_checker_sees_lazy_relative_and_circular_imports(tmp_path, monkeypatch):
    """The walker itself: an import inside a function, a relative import and a two-module circle."""
    pkg = tmp_path / "kpengine"
    (pkg / "io").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "io" / "a.py").write_text("def f():\n    from kpengine.cli import b\n")
    (pkg / "io" / "c.py").write_text("from . import a\nfrom .a import f\n")
    (pkg / "cli" / "b.py").write_text("import kpengine.io.a\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    graph = import_graph()
    assert graph["kpengine.io.a"] == {"kpengine.cli.b"}
    assert graph["kpengine.io.c"] == {"kpengine.io.a"}
    assert circles(graph) == [frozenset({"kpengine.io.a", "kpengine.cli.b"})]
    with pytest.raises(AssertionError, match="kpengine.io.a imports kpengine.cli.b"):
        test_imports_only_go_down_the_layers()
