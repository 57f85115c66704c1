"""The packages' import rules, read from the code (each package's docstring states them).

A rule broken here is a layer going up and back down: the pipeline reaching into the
Kafka adapter, the domain reading settings, an operator tool in the worker's path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "connector"

# package -> imports it must never make (prefixes of module names).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": (
        "connector.pipeline",
        "connector.vendors",
        "connector.kafka",
        "connector.ops",
        "connector.infra",
        "connector.settings",
        "connector.app",
        "connector.cli",
        "faust",
        "mode",
        "aiokafka",
        "httpx",
        "aiohttp",
    ),
    "pipeline": (
        "connector.kafka",
        "connector.ops",
        "connector.app",
        "connector.cli",
        "faust",
        "mode",
        "aiokafka",
    ),
    "vendors": (
        "connector.pipeline",
        "connector.ops",
        "connector.app",
        "connector.cli",
        "faust",
        "mode",
        "aiokafka",
    ),
    "infra": (
        "connector.pipeline",
        "connector.kafka",
        "connector.ops",
        "connector.app",
        "connector.cli",
    ),
    "kafka": ("connector.pipeline", "connector.ops", "connector.app", "connector.cli"),
}
# Who may import the operator tools.
OPS_USERS = ("connector/cli.py", "connector/app.py", "connector/ops/", "connector/local/")


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_its_docstring_allows(package: str) -> None:
    broken = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imports(path)
        if any(_under(name, prefix) for prefix in FORBIDDEN[package])
    ]
    assert broken == []


def test_only_the_cli_and_the_worker_s_wiring_import_the_operator_tools() -> None:
    broken = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
        for path in sorted(ROOT.rglob("*.py"))
        if not str(path.relative_to(ROOT.parent)).startswith(OPS_USERS)
        for line, name in imports(path)
        if _under(name, "connector.ops")
    ]
    assert broken == []


def test_every_package_says_what_lives_there_and_what_it_may_import() -> None:
    for package in [*FORBIDDEN, "ops"]:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert doc and "import" in doc, package
