"""The README documents every setting, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from connector.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def variables(model: type[BaseModel] = Settings, prefix: str = "CONNECTOR_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += variables(field.annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration", 1)[1]
    missing = []
    for variable in variables():
        base = variable.removesuffix("_FILE")
        stem = re.sub(r"_(CERTFILE|KEYFILE)$", "_CAFILE", base)
        if f"`{variable}`" not in table and f"`{base}`" not in table and f"`{stem}`" not in table:
            missing.append(variable)
    assert not missing, f"undocumented settings: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    test_command = re.search(r"^(\S+)\s+# the whole test suite", quickstart, re.M)
    assert test_command is not None
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert f"exec {test_command[1]}\n" in ci
