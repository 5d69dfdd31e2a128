"""
The service registry: an Atom 1.0 feed of the public names of a namespace (spec section 13).

A pure function from entries to bytes; which entries are visible (public, persistent or listened on,
below a prefix, Manage token) is decided by the caller. Listener counts and sender identities are never
part of an entry.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from lxml import etree

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
ATOM_MEDIA_TYPE: Final = "application/atom+xml"
GENERATOR: Final = "relay"


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """
    One name in the feed.

    @ivar url: the public URL of the name (entry C{id} and alternate link).
    @ivar display_name: the entry title.
    @ivar updated: when the registration last changed (timezone-aware).
    @ivar kind: the entity kind (C{oneway}, C{requestreply}, C{multicast}), the category term.
    """

    url: str
    display_name: str
    updated: datetime.datetime
    kind: str


def _timestamp(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("registry timestamps must be timezone-aware")
    return value.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_feed(
    entries: Iterable[RegistryEntry], *, feed_url: str, title: str, updated: datetime.datetime
) -> bytes:
    """
    Build the Atom feed document.

    @param feed_url: the URL the feed was requested at (feed C{id} and C{self} link).
    @param title: the feed title (the namespace name, or the prefix listed).
    @param updated: the feed's C{updated} when there are no entries; otherwise the newest entry's time is
        used if it is later.
    @return: UTF-8 bytes, entries sorted by URL so the output is deterministic.
    @raise ValueError: for a timestamp without a time zone.
    """
    ordered = sorted(entries, key=lambda e: e.url)
    for value in (updated, *(e.updated for e in ordered)):
        _timestamp(value)
    newest = max([updated, *(e.updated for e in ordered)])
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    etree.SubElement(feed, f"{{{ATOM_NS}}}id").text = feed_url
    etree.SubElement(feed, f"{{{ATOM_NS}}}title").text = title
    etree.SubElement(feed, f"{{{ATOM_NS}}}updated").text = _timestamp(newest)
    etree.SubElement(etree.SubElement(feed, f"{{{ATOM_NS}}}author"), f"{{{ATOM_NS}}}name").text = GENERATOR
    etree.SubElement(feed, f"{{{ATOM_NS}}}link", rel="self", href=feed_url)
    etree.SubElement(feed, f"{{{ATOM_NS}}}generator").text = GENERATOR
    for item in ordered:
        entry = etree.SubElement(feed, f"{{{ATOM_NS}}}entry")
        etree.SubElement(entry, f"{{{ATOM_NS}}}id").text = item.url
        etree.SubElement(entry, f"{{{ATOM_NS}}}title").text = item.display_name
        etree.SubElement(entry, f"{{{ATOM_NS}}}updated").text = _timestamp(item.updated)
        etree.SubElement(entry, f"{{{ATOM_NS}}}link", rel="alternate", href=item.url)
        etree.SubElement(entry, f"{{{ATOM_NS}}}category", term=item.kind)
    data: bytes = etree.tostring(feed, xml_declaration=True, encoding="utf-8", pretty_print=True)
    return data
