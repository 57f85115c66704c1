"""The vendors this connector knows: one :class:`Vendor` entry per vendor module.

A vendor module ends with ``register(Vendor(...))``; :mod:`connector.vendors` imports the
built-in ones. Everything that would otherwise name vendors reads the entries instead:
the event dispatch (:func:`map_event`), the clients (:func:`build_clients`), rate limits,
metrics labels, ``connector check``, the secrets to redact, and the operator tools'
order-key and target forms (audit view, dead letters, order view, ``connector target``).

An event whose target names no registered vendor is an :class:`UnknownVendorError`
(dead-lettered, permanent): it can never fall through to another vendor.

A vendor's settings section is ``Settings.<name>`` (``CONNECTOR_<NAME>__…``); a vendor
without one (a test's) gets the delivery-wide rate limit and outage policy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from connector.domain.events import Event, Target, register_order_target, unregister_order_target
from connector.errors import UnknownVendorError
from connector.settings import Settings
from connector.vendors.base import VendorClient, VendorRequest
from connector.vendors.checks import Check

__all__ = [
    "KeyForm",
    "Vendor",
    "build_clients",
    "entries",
    "get",
    "key_form",
    "limit_key_forms",
    "limit_key_of",
    "map_event",
    "names",
    "order_key_forms",
    "order_key_prefixes",
    "register",
    "secret_values",
    "split_key",
    "target_nouns",
    "unregister",
    "vendor_of",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyForm:
    """One form of order key: ``<head>|<field>|…|<last field>``.

    Only the last field may hold ``|`` (order ids are any printable text); the fields
    before it are key-safe. ``limit`` is the rate-limit, breaker and ``connector target``
    name of such a key's target: a template over the fields (``kombo|{integration_id}``),
    or a constant (``comeet``).
    """

    head: str
    fields: tuple[str, ...]
    limit: str

    @property
    def prefix(self) -> str:
        return f"{self.head}|"

    @property
    def form(self) -> str:
        """For help texts: ``kombo|<integration_id>|<assessment_order_id>``."""
        return "|".join([self.head, *(f"<{f}>" for f in self.fields)])

    @property
    def limit_form(self) -> str:
        """For help texts: ``kombo|<integration_id>``."""
        return self.limit.format_map({f: f"<{f}>" for f in self.fields})

    def parts(self, key: str) -> list[str]:
        """The key's field values (fewer when the key is short); [] when not this form."""
        if not key.startswith(self.prefix):
            return []
        return key[len(self.prefix) :].split("|", len(self.fields) - 1)

    def limit_key(self, key: str) -> str | None:
        values = dict(zip(self.fields, self.parts(key), strict=False))
        try:
            return self.limit.format_map(values)
        except KeyError:  # a short key lacks a field the target is named by
            return None


@dataclass(frozen=True, slots=True)
class Vendor:
    """Everything the rest of the connector needs to know about one vendor."""

    name: str  # VendorRequest.vendor, metrics label, audit ``vendor``, settings section
    map_event: Callable[[Event], VendorRequest]  # pure; MappingError on a contract breach
    client: Callable[[httpx.AsyncClient, Settings], VendorClient]
    keys: tuple[KeyForm, ...]  # the order keys of its events
    target_noun: str  # what one rate-limit target is, for help texts: "a Kombo integration"
    # Its order events' target model (``vendor: Literal[name]``), accepted by the parser.
    order_target: type[Target] | None = None
    # ``connector check``, offline: (errors, warnings) about its settings.
    config_problems: Callable[[Settings], tuple[list[str], list[str]]] | None = None
    # ``connector check``, online: its credentials, where a harmless call allows it.
    probe: Callable[[httpx.AsyncClient, Settings], Awaitable[list[Check]]] | None = None
    # Every credential its settings hold, for the log redaction filter.
    secrets: Callable[[Settings], list[str]] | None = None

    def section(self, settings: Settings) -> Any:
        """Its settings section (``Settings.<name>``), or None when it has none."""
        return getattr(settings, self.name, None)


_VENDORS: dict[str, Vendor] = {}


def register(vendor: Vendor) -> Vendor:
    """Add a vendor (a vendor module calls this once, at import). Returns it."""
    known = _VENDORS.get(vendor.name)
    if known is not None and known is not vendor:
        raise ValueError(f"vendor {vendor.name!r} is already registered")
    taken = {form.head: v.name for v in _VENDORS.values() for form in v.keys}
    for form in vendor.keys:
        owner = taken.get(form.head)
        if owner is not None and owner != vendor.name:
            raise ValueError(f"order key head {form.head!r} already belongs to {owner!r}")
    if vendor.order_target is not None:
        register_order_target(vendor.name, vendor.order_target)
    _VENDORS[vendor.name] = vendor
    logger.debug("vendor %s registered", vendor.name)
    return vendor


def unregister(name: str) -> None:
    """Remove a vendor (for tests that register one of their own)."""
    if _VENDORS.pop(name, None) is not None:
        unregister_order_target(name)


def get(name: str) -> Vendor:
    try:
        return _VENDORS[name]
    except KeyError:
        raise UnknownVendorError(name) from None


def entries() -> tuple[Vendor, ...]:
    return tuple(_VENDORS.values())


def names() -> tuple[str, ...]:
    return tuple(_VENDORS)


def map_event(event: Event) -> VendorRequest:
    """The outbound call for an event, by its target's vendor. Pure.

    Raises :class:`UnknownVendorError` for a vendor no module registered.
    """
    vendor = _VENDORS.get(event.target.vendor)
    if vendor is None:
        raise UnknownVendorError(str(event.target.vendor))
    return vendor.map_event(event)


def build_clients(http: httpx.AsyncClient, settings: Settings) -> dict[str, VendorClient]:
    """One client per registered vendor, on the shared HTTP client, keyed by vendor."""
    return {v.name: v.client(http, settings) for v in _VENDORS.values()}


def secret_values(settings: Settings) -> list[str]:
    """Every vendor credential the settings hold (empty ones left out)."""
    values: list[str] = []
    for vendor in _VENDORS.values():
        if vendor.secrets is not None:
            values += vendor.secrets(settings)
    return [v for v in values if v]


# -- order keys and targets, for the operator tools -------------------------------------------


def key_form(order_key: str) -> tuple[Vendor, KeyForm] | None:
    """The vendor and key form of an order key, by its head; None when no vendor has it."""
    head = order_key.split("|", 1)[0]
    for vendor in _VENDORS.values():
        for form in vendor.keys:
            if form.head == head:
                return vendor, form
    return None


def split_key(order_key: str) -> tuple[str, str, str] | None:
    """(head, middle, last field) of an order key whose form has fields before its last
    (a Kombo order's ``kombo``, integration id, order id); None for any other key."""
    found = key_form(order_key)
    if found is None or len(found[1].fields) < 2:
        return None
    form = found[1]
    parts = form.parts(order_key)
    if len(parts) != len(form.fields):
        return None
    return form.head, "|".join(parts[:-1]), parts[-1]


def vendor_of(order_key: str) -> str:
    """The vendor of an order key (``kombo-packages|…`` is Kombo's); else its head."""
    found = key_form(order_key)
    return found[0].name if found is not None else order_key.split("|", 1)[0]


def limit_key_of(order_key: str) -> str:
    """The target an order key's events are limited, broken and paused under; else its head."""
    found = key_form(order_key)
    limit = found[1].limit_key(order_key) if found is not None else None
    return limit if limit is not None else order_key.split("|", 1)[0]


def order_key_prefixes() -> tuple[str, ...]:
    return tuple(form.prefix for v in _VENDORS.values() for form in v.keys)


def order_key_forms() -> list[str]:
    """``kombo|<integration_id>|<assessment_order_id>``, ``comeet|<evaluation_id>``, …"""
    return [form.form for v in _VENDORS.values() for form in v.keys]


def limit_key_forms() -> list[str]:
    """``kombo|<integration_id>``, ``comeet``, …: what ``connector target`` takes."""
    forms = [form.limit_form for v in _VENDORS.values() for form in v.keys]
    return list(dict.fromkeys(forms))


def target_nouns() -> list[str]:
    """``a Kombo integration``, ``Comeet``, …"""
    return [v.target_noun for v in _VENDORS.values()]
