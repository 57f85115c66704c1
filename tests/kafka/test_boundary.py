"""No module outside connector/kafka uses a private name of the adapted libraries.

Read from the code (AST), so the next change cannot quietly add one: a private name is
an ``_x`` (not dunder) that one of faust, mode, aiokafka, httpx or httpx_aiohttp defines
(a function, class, method or attribute of theirs) and that the connector's own code
outside the adapter does not define itself; it counts when read as an attribute
(``consumer._acked``), through ``getattr``/``setattr``/``hasattr`` with a literal name,
or imported (``from faust.streams import _current_event``, or a private module path).
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "connector"
ADAPTER = ROOT / "kafka"
LIBRARIES = ("faust", "mode", "aiokafka", "httpx", "httpx_aiohttp")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: defs, classes, assignments (self._x = ... too)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
    return {n for n in names if _private(n)}


@cache
def library_private_names() -> frozenset[str]:
    names: set[str] = set()
    for library in LIBRARIES:
        # faust replaces its module with a lazy one (no __spec__): locate it by its file.
        folder = Path(importlib.import_module(library).__file__ or "").parent
        for path in folder.rglob("*.py"):
            names |= _defined(ast.parse(path.read_text(encoding="utf-8")))
    return frozenset(names)


def _outside_adapter() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if ADAPTER not in p.parents]


@cache
def connector_private_names() -> frozenset[str]:
    names: set[str] = set()
    for path in _outside_adapter():
        names |= _defined(ast.parse(path.read_text(encoding="utf-8")))
    return frozenset(names)


def uses(path: Path) -> list[str]:
    """``line: name`` of every private library name ``path`` uses."""
    library = library_private_names()
    own = connector_private_names()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and _private(node.attr):
            name = node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            name = node.args[1].value
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            parts = (node.module or "").split(".")
            private_module = next((p for p in parts if _private(p)), None)
            if private_module is not None:
                found.append(f"{node.lineno}: {node.module}")
                continue
            found += [f"{node.lineno}: {a.name}" for a in node.names if _private(a.name)]
            continue
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: {a.name}"
                for a in node.names
                if a.name.split(".")[0] in LIBRARIES and any(_private(p) for p in a.name.split("."))
            ]
            continue
        if name is not None and name in library and name not in own:
            found.append(f"{node.lineno}: {name}")
    return found


def scan(paths: list[Path]) -> dict[str, list[str]]:
    return {str(path): found for path in paths if (found := uses(path))}


def _scan_in_a_fresh_interpreter(*paths: Path) -> dict[str, list[str]]:
    # ast.parse of the libraries' sources in a fresh interpreter: CPython 3.11.7 can raise
    # "AST constructor recursion depth mismatch" after other tests changed the recursion
    # limit (hypothesis does).
    done = subprocess.run(
        [sys.executable, __file__, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT.parent,
    )
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found


def test_no_private_library_name_outside_the_adapter() -> None:
    offenders = _scan_in_a_fresh_interpreter(*_outside_adapter())
    assert offenders == {}, "move these into connector/kafka: " + repr(offenders)


def test_the_check_sees_each_kind_of_use(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from faust.streams import _current_event\n"
        "from httpx._client import AsyncClient\n"
        "import httpx._models\n"
        "def f(consumer, http):\n"
        "    consumer._getmany = None\n"
        "    http._transport_for_url(1)\n"
        "    getattr(consumer, '_paused_partitions', ())\n"
    )
    found = _scan_in_a_fresh_interpreter(sample)[str(sample)]
    assert sorted(line.split(": ")[1] for line in found) == sorted(
        [
            "_current_event",
            "httpx._client",
            "httpx._models",
            "_getmany",
            "_transport_for_url",
            "_paused_partitions",
        ]
    )


if __name__ == "__main__":
    print(json.dumps(scan([Path(arg) for arg in sys.argv[1:]])))
