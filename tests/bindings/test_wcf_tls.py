"""
C{$wcf} connections served over TLS are closed by the gateway as soon as their closing handshake is done.

The roles register back-pressure producers on the transport, and Twisted's TLS layer holds
C{loseConnection} while one is registered; the real TLS layer runs in memory here and the clock never
moves, so a socket the gateway does not close itself stays open and the test fails.
"""

from __future__ import annotations

from bindings.contracts import contract_of
from bindings.settings import MULTICAST, ONEWAY

from .calculator import IChat
from .wcfharness import BindingsTestCase, envelope_bytes


class WcfTLSCloseTests(BindingsTestCase):
    use_tls = True

    def test_listener_leaves(self) -> None:
        """A registered listener's close is answered and its socket closed."""
        listener = self.listener("events", ONEWAY, IChat)
        listener.sendClose(1000)
        self.net.flush()
        self.assertEqual(listener.closed[:2], (True, 1000))  # type: ignore[index]
        self.assertTrue(listener.server_transport.disconnecting)

    def test_sender_leaves_after_a_message(self) -> None:
        """A sender whose message was delivered closes cleanly; so does the subscriber afterwards."""
        subscriber = self.listener("chat", MULTICAST, IChat)
        sender = self.wcf("chat", "send")
        say = contract_of(IChat).operation("Say")
        sender.sendMessage(
            envelope_bytes(say.encode_request("a", "b"), action=say.action, message_id="urn:uuid:1"),
            isBinary=False,
        )
        self.net.flush()
        self.assertGreater(len(subscriber.messages), 1)  # the registration answer, then the event
        sender.sendClose(1000)
        subscriber.sendClose(1000)
        self.net.flush()
        for client in (sender, subscriber):
            self.assertEqual(client.closed[:2], (True, 1000))  # type: ignore[index]
            self.assertTrue(client.server_transport.disconnecting)

    def test_gateway_closes_with_a_policy_violation(self) -> None:
        """A close the gateway starts (nothing registered before the deadline: 1008) ends the socket too."""
        client = self.wcf("events", "listen")
        self.net.advance(31)
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]
        self.assertTrue(client.server_transport.disconnecting)
