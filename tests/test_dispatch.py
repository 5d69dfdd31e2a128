"""Tests for the routing of relayed HTTP requests, with fake control channels."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from relay.auth import Rights, SharedAccessRule
from relay.entities import HYBRID_CONNECTION, Entity, EntityMatch, Namespace
from relay.errors import ErrorKind, RelayError
from relay.hybrid.dispatch import (
    CONTROL_MESSAGE_LIMIT,
    CONTROL_METADATA_LIMIT,
    HttpDispatcher,
    fits_control_channel,
)
from relay.hybrid.router import Admission, HybridConnectionRouter, IListenerChannel
from relay.listeners import ListenerRegistry, RoundRobinChooser
from relay.store import MemoryGatewayStore

from .fakes import FakeListenerChannel

RULE = SharedAccessRule("root", "k" * 32, Rights.LISTEN | Rights.SEND)
NS = Namespace("ns", ("relay.example",), (RULE,))
HYCO = Entity("hyco", HYBRID_CONNECTION)


class FitTests(SynchronousTestCase):
    """The control channel's limits."""

    def test_boundaries(self) -> None:
        """64 kB for message and body together, 32 kB of metadata, and only bodies of known length."""
        self.assertTrue(fits_control_channel(1000, CONTROL_MESSAGE_LIMIT - 1000))
        self.assertFalse(fits_control_channel(1000, CONTROL_MESSAGE_LIMIT - 999))
        self.assertTrue(fits_control_channel(CONTROL_METADATA_LIMIT, 0))
        self.assertFalse(fits_control_channel(CONTROL_METADATA_LIMIT + 1, 0))
        self.assertFalse(fits_control_channel(100, None))


class DispatcherTests(SynchronousTestCase):
    """Choosing listeners and issuing request addresses."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry: ListenerRegistry[IListenerChannel] = ListenerRegistry(RoundRobinChooser())
        store = MemoryGatewayStore([(NS, [HYCO])])
        self.router = HybridConnectionRouter(store, self.registry, self.clock, "wss://relay.example", 30.0)
        self.dispatcher = HttpDispatcher(self.router, rendezvous_timeout=30.0)
        self.admission = Admission(NS, EntityMatch(HYCO, "/x"), None)

    def add(self, channel: FakeListenerChannel) -> FakeListenerChannel:
        self.registry.add(NS, HYCO, channel, 25)
        return channel

    def test_fake_is_verified(self) -> None:
        """The fake control channel provides the interface routing uses."""
        self.assertTrue(verifyObject(IListenerChannel, FakeListenerChannel("l")))

    def test_address(self) -> None:
        """A request's address names the hybrid connection, the request action, the id and the key."""
        self.assertEqual(
            self.dispatcher.address(self.admission, "abc", "k3y"),
            "wss://relay.example/$hc/hyco?sb-hc-action=request&sb-hc-id=abc&sb-hc-key=k3y",
        )

    def test_small_request(self) -> None:
        """The request text and then its body go to one listener; no ticket is opened for its address."""
        channel = self.add(FakeListenerChannel("l1"))
        chosen = self.dispatcher.send_small(self.admission, b'{"request":{}}', b"body")
        self.assertIs(chosen, channel)
        self.assertEqual(channel.sent, [b'{"request":{}}', b"body"])
        self.assertEqual(len(self.router.rendezvous), 0)  # the exchange holds it (HttpRelay.hold_address)

    def test_empty_body_sends_no_binary_message(self) -> None:
        """No body: no binary message."""
        channel = self.add(FakeListenerChannel("l1"))
        self.dispatcher.send_small(self.admission, b"{}", b"")
        self.assertEqual(channel.sent, [b"{}"])

    def test_announcement_and_its_deadline(self) -> None:
        """A rendezvous-only request has two keys; the listener must come within the rendezvous timeout."""
        channel = self.add(FakeListenerChannel("l1"))
        _, ticket = self.dispatcher.announce(self.admission, "id2", "wss://a", "x", key="key2")
        self.assertEqual(json.loads(channel.sent[0]), {"request": {"address": "wss://a", "id": "id2"}})
        self.assertTrue(ticket.context.for_request)
        failures: list[RelayError] = []
        ticket.outcome.addErrback(lambda f: failures.append(f.value))
        self.clock.advance(30)
        self.assertEqual(failures[0].kind, ErrorKind.LISTENER_TIMEOUT)

    def test_skips_closing_and_refusing_listeners(self) -> None:
        """Closing channels get no work; a channel that cannot send is skipped for the next one."""
        closing = self.add(FakeListenerChannel("closing"))
        closing.closing = True
        refusing = self.add(FakeListenerChannel("refusing", accepts=False))
        good = self.add(FakeListenerChannel("good"))
        chosen = self.dispatcher.send_small(self.admission, b"{}", b"")
        self.assertIs(chosen, good)
        self.assertEqual((closing.sent, refusing.sent), ([], []))
        _, ticket = self.dispatcher.announce(self.admission, "id3", "wss://a", None, key="key3")
        self.assertEqual(good.sent[-1], b'{"request":{"address":"wss://a","id":"id3"}}')
        self.assertEqual(len(self.router.rendezvous), 1)
        self.assertIs(self.router.claim("key3"), ticket)

    def test_no_listener(self) -> None:
        """Nobody to take it: 502, and no address left behind."""
        self.add(FakeListenerChannel("refusing", accepts=False))
        with self.assertRaises(RelayError) as caught:
            self.dispatcher.announce(self.admission, "id4", "wss://a", None, key="key4")
        self.assertEqual(caught.exception.status, 502)
        self.assertEqual(len(self.router.rendezvous), 0)
        with self.assertRaises(RelayError) as caught:
            self.dispatcher.send_small(self.admission, b"{}", b"")
        self.assertEqual(caught.exception.status, 502)
