"""Vendor modules behind one small interface (see ``base``), found through ``registry``.

Importing this package registers the built-in vendors (Kombo, Comeet); a new vendor is
one module here that ends with ``registry.register(...)``, imported below, plus its
settings section. :mod:`~connector.vendors.accounts` picks a target's account.

May import the domain, :mod:`connector.errors`, settings and the adapter's HTTP edge
(:mod:`connector.kafka.http`); never the pipeline, the operator tools or the worker's
wiring (``tests/test_layout.py``).
"""

from __future__ import annotations

# The built-in vendors, registered in the order help texts and metrics list them.
from connector.vendors import kombo

# isort: split
from connector.vendors import comeet, registry
from connector.vendors.base import CallResult, VendorClient, VendorRequest
from connector.vendors.registry import build_clients, map_event

__all__ = [
    "CallResult",
    "VendorClient",
    "VendorRequest",
    "build_clients",
    "comeet",
    "kombo",
    "map_event",
    "registry",
]
