"""The connector's worker with one more vendor module registered: Acme (tests only).

Run by ``tests/e2e/test_third_vendor.py`` as a worker process (``python
tests/e2e/acme_worker.py``), configured like any worker by the environment, plus
``ACME_BASE_URL`` (the test's Acme server). Importing :mod:`tests.vendors.acme_vendor`
is the whole change: the worker's parser, dispatch, clients and audit take it from the
vendor registry.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tests.vendors.acme_vendor  # noqa: F401  (registers the vendor)


def main() -> int:
    from connector.cli import main as cli

    return cli(["worker"])


if __name__ == "__main__":
    raise SystemExit(main())
