"""Tests for L{relay.entities} and L{relay.store}: names and longest-segment matching."""

from __future__ import annotations

import dataclasses
import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from relay.entities import (
    HYBRID_CONNECTION,
    MAX_NAME_SEGMENTS,
    Entity,
    EntityNameError,
    Namespace,
    match_entity,
    name_key,
    split_name,
)
from relay.listeners import RandomChooser
from relay.store import EntityConflict, IGatewayStore, MemoryGatewayStore

NS = Namespace(name="ns", hosts=("relay.example",))
WILD = Namespace(name="dev", hosts=("*",))


class NameTests(SynchronousTestCase):
    """Entity names."""

    def test_valid(self) -> None:
        """Segments of letters, digits, C{.}, C{_} and C{-}; slashes at the ends are ignored."""
        self.assertEqual(split_name("/team/app.v2_x-y/"), ("team", "app.v2_x-y"))

    def test_invalid(self) -> None:
        """Empty names, empty segments, odd characters and overlong names are refused."""
        for name in ["", "/", "a//b", "a b", "-a", "a/$b", "ä", "x" * 261, "team\n", "team\n/app"]:
            with self.subTest(name=name):
                self.assertRaises(EntityNameError, split_name, name)

    def test_segments(self) -> None:
        """
        A name has at most as many segments as a request path is matched against: every name is reachable.

        A longer one (the characters would allow 130) used to be accepted and never matched.
        """
        deepest = "/".join(f"s{i}" for i in range(MAX_NAME_SEGMENTS))
        entity = Entity(deepest, HYBRID_CONNECTION)
        match = match_entity({entity.key: entity}, f"/{deepest}/rest/of/path")
        self.assertEqual(
            (match.entity if match else None, match.suffix if match else None), (entity, "/rest/of/path")
        )
        self.assertRaises(EntityNameError, split_name, deepest + "/one-more")

    def test_key(self) -> None:
        """
        An entity's lookup key is its name in lower case, made when the entity is.

        A copy with another name gets that name's key; the key does not take part in equality.
        """
        entity = Entity("Team/App", HYBRID_CONNECTION)
        self.assertEqual(entity.key, "team/app")
        self.assertEqual(entity.key, name_key(entity.segments))
        renamed = dataclasses.replace(entity, name="Other/X")
        self.assertEqual(renamed.key, "other/x")
        self.assertEqual(entity, Entity("Team/App", HYBRID_CONNECTION))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, entity, "key", "x")


class ChooserTests(SynchronousTestCase):
    """L{RandomChooser}: a uniform choice among live listeners."""

    def test_one_candidate(self) -> None:
        """With one listener, it is chosen without drawing a random number."""
        rng = random.Random(1)
        state = rng.getstate()
        self.assertEqual(RandomChooser(rng).choose(["only"]), "only")
        self.assertEqual(rng.getstate(), state)

    def test_spread(self) -> None:
        """Each of several listeners gets a share of the choices."""
        chooser = RandomChooser(random.Random(7))
        counts = {name: 0 for name in "abcd"}
        for _ in range(4000):
            counts[chooser.choose(list("abcd"))] += 1
        for name, count in counts.items():
            with self.subTest(name=name):
                self.assertGreater(count, 800)
                self.assertLess(count, 1200)


class StoreTests(SynchronousTestCase):
    """The in-memory store."""

    def setUp(self) -> None:
        self.store = MemoryGatewayStore(
            [
                (NS, [Entity("team", HYBRID_CONNECTION), Entity("team/app", HYBRID_CONNECTION)]),
                (WILD, [Entity("hyco", HYBRID_CONNECTION)]),
            ]
        )

    def test_interface(self) -> None:
        """The store provides L{IGatewayStore}."""
        self.assertTrue(verifyObject(IGatewayStore, self.store))

    def test_longest_match(self) -> None:
        """The longest configured name wins, case-insensitively; the rest is the suffix."""
        match = self.store.match(NS, "/Team/App/items/1")
        assert match is not None
        self.assertEqual((match.entity.name, match.suffix), ("team/app", "/items/1"))
        match = self.store.match(NS, "/team/other")
        assert match is not None
        self.assertEqual((match.entity.name, match.suffix), ("team", "/other"))
        self.assertIsNone(self.store.match(NS, "/nothing"))

    def test_hosts(self) -> None:
        """Exact host names win; anything else falls back to the wildcard namespace."""
        self.assertIs(self.store.namespace_for_host("RELAY.example"), NS)
        self.assertIs(self.store.namespace_for_host("other"), WILD)
        self.assertIsNone(MemoryGatewayStore([(NS, [])]).namespace_for_host("other"))

    def test_one_kind_per_name(self) -> None:
        """A name belongs to one kind; adding the same kind again returns the existing entity."""
        existing = self.store.get(NS, "TEAM")
        self.assertIs(self.store.add(NS, Entity("team", HYBRID_CONNECTION)), existing)
        self.assertRaises(EntityConflict, self.store.add, NS, Entity("team", "oneway"))

    def test_remove(self) -> None:
        """Removed entities no longer match."""
        self.assertIsNotNone(self.store.remove(NS, "team/app"))
        match = self.store.match(NS, "/team/app")
        assert match is not None
        self.assertEqual(match.entity.name, "team")

    def test_watch(self) -> None:
        """Observers hear of every entity added or removed, not of an existing one add returns."""
        heard: list[tuple[str, str, bool]] = []
        self.store.watch(lambda namespace, entity, added: heard.append((namespace.name, entity.name, added)))
        self.store.add(NS, Entity("team", HYBRID_CONNECTION))
        self.store.add(NS, Entity("Team/Other", HYBRID_CONNECTION))
        self.store.remove(NS, "team/other")
        self.store.remove(NS, "nothing")
        self.assertEqual(heard, [(NS.name, "Team/Other", True), (NS.name, "Team/Other", False)])

    def test_duplicate_hosts(self) -> None:
        """Two namespaces cannot share a host, and only one may be the wildcard."""
        self.assertRaises(
            ValueError, MemoryGatewayStore, [(NS, []), (Namespace("b", ("relay.example",)), [])]
        )
        self.assertRaises(ValueError, MemoryGatewayStore, [(WILD, []), (Namespace("c", ("*",)), [])])

    def test_duplicate_names(self) -> None:
        """
        Two namespaces cannot share a name, whatever their hosts.

        The second one took over the first one's entity table (both are keyed by name), so the first
        one's hosts and keys reached the second one's entities.
        """
        with self.assertRaises(ValueError) as caught:
            MemoryGatewayStore(
                [
                    (Namespace("a", ("a.example",)), [Entity("alpha", HYBRID_CONNECTION)]),
                    (Namespace("a", ("b.example",)), [Entity("secret", HYBRID_CONNECTION)]),
                ]
            )
        self.assertIn("'a'", str(caught.exception))

    def test_audience_hosts(self) -> None:
        """A wildcard namespace accepts tokens for the host the request used."""
        self.assertEqual(WILD.audience_hosts("h.example"), ("h.example",))
        self.assertEqual(NS.audience_hosts("h.example"), ("relay.example",))
