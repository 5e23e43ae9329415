"""Shared test helpers live in helper modules (tests/relay.py, tests/rigs.py, ...), never in a
test module: importing a test module runs its collection-time code and re-exports its fixtures
into the importer, and a helper hidden among tests is found by nobody looking for it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def is_test_module(dotted: str) -> bool:
    """`tests.conftest` and `tests.test_*`, or anything inside them."""
    parts = dotted.split(".")
    return (len(parts) >= 2 and parts[0] == "tests"
            and (parts[1] == "conftest" or parts[1].startswith("test_")))


def imported(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every module `source` imports, anywhere in it (in functions too), as dotted names; a
    relative import is resolved against `package`, the package the source is in."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            # `from tests import conftest` names the module among the imported names
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_no_module_imports_a_test_module_or_conftest() -> None:
    modules = sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")])
    assert len(modules) > 40  # the walk found the trees
    offending = [
        f"{path.relative_to(REPO)}:{line}: imports {name}"
        for path in modules
        for line, name in imported(path.read_text(encoding="utf-8"),
                                   path.parent.relative_to(REPO).parts)
        if is_test_module(name)]
    assert not offending, "\n".join(offending)


def test_the_check_sees_every_spelling_of_such_an_import() -> None:
    caught = ["from tests.conftest import RelaySink", "import tests.test_load",
              "from tests import test_crash", "from . import conftest",
              "from .test_faults import OutboundRig",
              "def f() -> None:\n    from tests.test_security import header_bomb"]
    for source in caught:
        assert any(is_test_module(name) for _, name in imported(source, ("tests",))), source
    allowed = ["from tests.relay import RelaySink", "from tests import rigs",
               "import tests.docfactory", "from . import settings", "import pytest"]
    for source in allowed:
        assert not any(is_test_module(name) for _, name in imported(source, ("tests",))), source
