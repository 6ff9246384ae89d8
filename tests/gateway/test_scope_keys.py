"""The scope keys policies share are declared in one place, and used as declared: read from
the source of every package, each ``scope[...]``, ``scope.get(...)`` and
``scope.setdefault(...)`` with a gateway key is a write or a read by its module, and must match
``gateway.policies.scope_keys.DECLARED``."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from gateway.policies import scope_keys
from gateway.policies.scope_keys import DECLARED

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "system_apis", "process_apis", "experience_apis")
DECLARING_MODULE = "gateway.policies.scope_keys"

CONSTANTS = {
    name: value
    for name, value in vars(scope_keys).items()
    if name.endswith("_KEY") and isinstance(value, str)
}
DECLARED_NAMES = {key.name for key in DECLARED}


def modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return found


def is_scope(node: ast.expr) -> bool:
    """``scope``, ``self.scope``, ``request.scope``, ``exchange.scope``..."""
    if isinstance(node, ast.Name):
        return node.id == "scope"
    return isinstance(node, ast.Attribute) and node.attr == "scope"


def key_of(node: ast.expr) -> tuple[str | None, str | None]:
    """(the key a constant names, an undeclared ``"trellis.*"`` literal)."""
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id], None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.startswith("trellis."):
            return None, node.value
    return None, None


def uses() -> tuple[dict[str, set[str]], dict[str, set[str]], list[str]]:
    """(writers of each key, readers of each key, literal uses as "module: key")."""
    writers: dict[str, set[str]] = defaultdict(set)
    readers: dict[str, set[str]] = defaultdict(set)
    literals: list[str] = []
    for module, tree in modules().items():
        for node in ast.walk(tree):
            key = literal = None
            writes = False
            if isinstance(node, ast.Subscript) and is_scope(node.value):
                key, literal = key_of(node.slice)
                writes = isinstance(node.ctx, ast.Store | ast.Del)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "setdefault", "pop")
                and is_scope(node.func.value)
                and node.args
            ):
                key, literal = key_of(node.args[0])
                writes = node.func.attr != "get"
            if literal is not None:
                literals.append(f"{module}: {literal}")
            if key is not None:
                (writers if writes else readers)[key].add(module)
    return writers, readers, literals


def test_no_module_uses_a_scope_key_by_its_literal() -> None:
    _, _, literals = uses()
    assert literals == [], "use the constants of gateway.policies.scope_keys"


def test_every_key_is_written_and_read_by_the_modules_declared() -> None:
    writers, readers, _ = uses()
    for key in DECLARED:
        assert writers.get(key.name, set()) == {key.writer}, key.name
        assert readers.get(key.name, set()) == set(key.readers), key.name
    assert set(writers) | set(readers) <= DECLARED_NAMES


def test_each_constant_is_declared_once_and_nowhere_else() -> None:
    assert set(CONSTANTS.values()) == DECLARED_NAMES
    for module, tree in modules().items():
        if module == DECLARING_MODULE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in DECLARED_NAMES:
                raise AssertionError(f"{module} spells out {node.value!r}")
