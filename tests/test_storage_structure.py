"""rldb/storage is built from parts an owner holds and calls, not from
mixins: a class has at most one base besides abstract ones, no class is a
*Mixin, and the LSM engine's write path is a component (LSMEngine's only
base is Engine)."""
import ast
from pathlib import Path

STORAGE = Path(__file__).resolve().parent.parent / "rldb" / "storage"
ABSTRACT_BASES = {"object", "ABC", "Protocol", "Generic"}


def _classes():
    for path in sorted(STORAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                yield path.relative_to(STORAGE), node


def _base_name(base):
    if isinstance(base, ast.Name):
        return base.id
    if isinstance(base, ast.Attribute):
        return base.attr
    if isinstance(base, ast.Subscript):
        return _base_name(base.value)
    return ast.unparse(base)


def test_storage_has_classes_to_check():
    names = {node.name for _, node in _classes()}
    assert {"LSMEngine", "WritePath", "Engine"} <= names


def test_no_mixin_classes_in_storage():
    named = [f"{path}:{node.name}" for path, node in _classes() if node.name.endswith("Mixin")]
    assert named == []
    multiple = [f"{path}:{node.name}" for path, node in _classes()
                if len([b for b in node.bases if _base_name(b) not in ABSTRACT_BASES]) > 1]
    assert multiple == []


def test_lsm_engine_derives_from_engine_only():
    [(_, engine)] = [(p, n) for p, n in _classes()
                     if n.name == "LSMEngine" and str(p) == "lsm/engine.py"]
    assert [_base_name(b) for b in engine.bases] == ["Engine"]


def test_write_path_uses_only_its_own_state():
    """Every self.<name> WritePath touches is set in its __init__ or is one of
    its methods: what it needs of the engine comes through Background."""
    [(_, writes)] = [(p, n) for p, n in _classes() if n.name == "WritePath"]
    assert writes.bases == []
    methods = {n.name for n in writes.body if isinstance(n, ast.FunctionDef)}
    init = next(n for n in writes.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    own = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets
           if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    used = {n.attr for n in ast.walk(writes)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"}
    assert {"_lock", "wal", "_mem", "last_seq", "_bg"} <= own
    assert used - own - methods == set()
