"""What ``connector check`` asks of a vendor module: one result line, and URL rules.

Here, not in :mod:`connector.ops.check`, so that a vendor module can build its own checks
(:attr:`connector.vendors.registry.Vendor.config_problems`, ``.probe``) without importing
the operator tool that reads the registry.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Check", "is_local_url", "url_problem"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | skip | FAIL
    detail: str

    def line(self) -> str:
        return f"{self.name:<11} {self.status:<5} {self.detail}"


def is_local_url(url: str) -> bool:
    """A URL on this machine (the sandboxes, a local mock): no real vendor behind it."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(variable: str, url: str) -> str | None:
    """Why ``url`` (the value of ``variable``) cannot be a vendor's base URL, if it cannot."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            f"{variable}={url!r}: not an http(s) URL; "
            "fix: set the vendor's base URL, e.g. https://api.comeet.co"
        )
    return None
