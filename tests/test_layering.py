"""The layer rules of docs/architecture.md, enforced: rldb/cli -> rldb/net ->
rldb/cluster -> rldb/storage -> rldb/_core -> csrc/, with no circle of imports
anywhere in the package and no mixins in the cluster core."""
import ast
import pathlib
import subprocess
import sys

import rldb

PACKAGE = pathlib.Path(rldb.__file__).parent
NATIVE = "rldb._rldb_core"


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the file's package
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level]
                base = ".".join(parts + ((base,) if base else ()))
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_only_core_imports_the_native_module():
    loader = PACKAGE / "_core" / "loader.py"
    assert loader.exists()
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in _modules()
                 if p != loader and any(
                     name == NATIVE or name.startswith(NATIVE + ".") or name.endswith("._rldb_core")
                     for name in _imports(p))]
    assert offenders == []


def test_storage_imports_no_upper_layer():
    forbidden = ("asyncio", "rldb.net", "rldb.cluster", "rldb.cli")
    offenders = []
    for path in (PACKAGE / "storage").rglob("*.py"):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert offenders == []


def test_import_storage_stays_light():
    code = ("import sys, rldb.storage; "
            "e = rldb.storage.open_engine('memory'); e.put(b'k', b'v'); e.close(); "
            "bad = [m for m in sys.modules if m == 'asyncio' or m.startswith(('asyncio.', "
            "'rldb.net', 'rldb.cluster', 'rldb.cli'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cluster_core_is_sans_io():
    """rldb.cluster decides; it never does I/O, reads the clock or draws
    unseeded randomness (the simulator's Random instances are seeded)."""
    forbidden = ("asyncio", "socket", "time", "selectors", "threading", "rldb.net", "rldb.cli")
    offenders = []
    for path in (PACKAGE / "cluster").rglob("*.py"):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
            if name == "random" and path.name != "sim.py":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: random (take an rng)")
    assert offenders == []


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """module -> the rldb modules it names in an import (at any depth of the
    file: an import inside a function still ties the two modules)."""
    modules = {_module_name(p): p for p in _modules()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]  # a name inside a module
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_circles(graph):
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_circle_finder_finds_a_circle():
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_inside_rldb():
    graph = import_graph()
    assert "rldb.net.server" in graph and graph["rldb.cli.server"]  # the graph was read
    assert find_circles(graph) == []


def test_no_mixin_classes_in_the_cluster_core():
    """The node's parts are objects it owns and delegates to, each with its
    own state, not mixins sharing the node's attributes."""
    offenders = []
    for path in (PACKAGE / "cluster").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases if ast.unparse(b) != "object"]
                if node.name.endswith("Mixin") or len(bases) > 1:
                    offenders.append(f"{path.name}: {node.name}({', '.join(bases)})")
    assert offenders == []
    from rldb.cluster.node import NodeCore
    assert NodeCore.__mro__ == (NodeCore, object)
