"""The contenders' own environment (``bench/contenders``): quixstreams and faststream.

They live in a uv project of their own, with its own lock, because quixstreams caps
pydantic below the connector's locked version (see ``bench/contenders/pyproject.toml``).
The connector is installed there from this working tree, so the contenders parse and map
events with the same code as every other implementation.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from pathlib import Path

__all__ = ["CONTENDERS_PROJECT", "contenders_python"]

logger = logging.getLogger(__name__)

CONTENDERS_PROJECT = Path(__file__).resolve().parent / "contenders"


@functools.cache
def contenders_python() -> str:
    """The contenders' interpreter, after ``uv sync --frozen`` of their project (idempotent)."""
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("the contenders need uv to build bench/contenders/.venv")
    logger.info("syncing the contenders' environment (%s)", CONTENDERS_PROJECT)
    subprocess.run(
        [uv, "sync", "--frozen", "--quiet", "--project", str(CONTENDERS_PROJECT)],
        check=True,
    )
    return str(CONTENDERS_PROJECT / ".venv" / "bin" / "python")
