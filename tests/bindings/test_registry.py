"""Tests for L{bindings.registry}: the Atom service registry feed."""

from __future__ import annotations

import datetime

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings.registry import ATOM_NS, RegistryEntry, build_feed
from bindings.safexml import parse_xml

A = f"{{{ATOM_NS}}}"
T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


class FeedTests(SynchronousTestCase):
    """Spec section 13."""

    def test_entries(self) -> None:
        """Each entry has id and alternate link = URL, title = display name, updated and category = kind."""
        entry = RegistryEntry(
            "https://relay.example/calc",
            "Calculator",
            datetime.datetime(2024, 3, 1, 13, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "requestreply",
        )
        root = parse_xml(
            build_feed([entry], feed_url="https://relay.example/", title="relay.example", updated=T0)
        )
        self.assertEqual(root.tag, f"{A}feed")
        (item,) = root.findall(f"{A}entry")
        self.assertEqual(item.findtext(f"{A}id"), "https://relay.example/calc")
        self.assertEqual(item.findtext(f"{A}title"), "Calculator")
        self.assertEqual(item.findtext(f"{A}updated"), "2024-03-01T12:00:00Z")
        link = item.find(f"{A}link")
        assert link is not None
        self.assertEqual((link.get("rel"), link.get("href")), ("alternate", "https://relay.example/calc"))
        self.assertEqual(item.find(f"{A}category").get("term"), "requestreply")  # type: ignore[union-attr]
        self.assertEqual(root.findtext(f"{A}updated"), "2024-03-01T12:00:00Z")

    def test_feed_required_elements(self) -> None:
        """An empty feed still has the Atom-required id, title, updated and author, and a self link."""
        root = parse_xml(build_feed([], feed_url="https://relay.example/team/", title="team", updated=T0))
        self.assertEqual(root.findtext(f"{A}id"), "https://relay.example/team/")
        self.assertEqual(root.findtext(f"{A}title"), "team")
        self.assertEqual(root.findtext(f"{A}updated"), "2024-01-01T00:00:00Z")
        self.assertEqual(root.findtext(f"{A}author/{A}name"), "relay")
        self.assertEqual(root.find(f"{A}link").get("rel"), "self")  # type: ignore[union-attr]
        self.assertEqual(root.findall(f"{A}entry"), [])

    def test_deterministic_order(self) -> None:
        """Entries are sorted by URL whatever order they come in; nothing but the given fields is exposed."""
        entries = [RegistryEntry(f"https://h/{n}", n, T0, "oneway") for n in ("b", "a", "c")]
        data = build_feed(entries, feed_url="https://h/", title="h", updated=T0)
        self.assertEqual(
            data, build_feed(list(reversed(entries)), feed_url="https://h/", title="h", updated=T0)
        )
        root = parse_xml(data)
        self.assertEqual([e.findtext(f"{A}title") for e in root.findall(f"{A}entry")], ["a", "b", "c"])
        self.assertEqual(
            {etree.QName(c).localname for e in root.findall(f"{A}entry") for c in e},
            {"id", "title", "updated", "link", "category"},
        )

    def test_escaping(self) -> None:
        """Display names with markup characters are escaped, not interpreted."""
        entry = RegistryEntry("https://h/x?a=1&b=2", "<b>Tom & Jerry</b>", T0, "multicast")
        root = parse_xml(build_feed([entry], feed_url="https://h/", title="h", updated=T0))
        self.assertEqual(root.find(f"{A}entry").findtext(f"{A}title"), "<b>Tom & Jerry</b>")  # type: ignore[union-attr]

    def test_naive_time_refused(self) -> None:
        """Timestamps without a time zone are refused rather than guessed."""
        entry = RegistryEntry("https://h/x", "x", datetime.datetime(2024, 1, 1), "oneway")
        self.assertRaises(ValueError, build_feed, [entry], feed_url="https://h/", title="h", updated=T0)
