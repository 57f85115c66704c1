"""Vendor modules (Kombo, Comeet) behind one small interface (see ``base``)."""

from __future__ import annotations

from connector.events import ComeetTarget, Event
from connector.vendors import comeet, kombo
from connector.vendors.base import CallResult, VendorClient, VendorRequest

__all__ = ["CallResult", "VendorClient", "VendorRequest", "map_event"]


def map_event(event: Event) -> VendorRequest:
    """The outbound call for an event, by its target's vendor. Pure."""
    if isinstance(event.target, ComeetTarget):
        return comeet.map_event(event)
    return kombo.map_event(event)
