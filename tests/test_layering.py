"""The layer rules of DESIGN.md section 1, enforced."""
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
