"""
Connections served over TLS close as soon as their closing handshake is done.

Twisted's TLS layer holds C{loseConnection} until the transport's producer is unregistered; a gateway
that leaves one registered (twisted.web's channel after an upgrade, the splice's back-pressure hooks)
keeps the socket open after the close frames until the client gives up (the npm C{ws} client waits 30 s
and then reports 1006). These tests run the real TLS layer in memory and never advance the clock, so a
connection that is not closed by the gateway itself stays open and the assertion fails.
"""

from __future__ import annotations

import json

from tests.wsharness import GatewayTestCase, RecordingClient


class TLSCloseTests(GatewayTestCase):
    use_tls = True

    def accept_next(self, listener: RecordingClient) -> RecordingClient:
        accept = json.loads(listener.messages[-1][0])["accept"]
        return self.net.connect(accept["address"])

    def assert_closed_by_gateway(self, client: RecordingClient, code: int) -> None:
        self.assertTrue(client.server_transport.disconnecting, "the gateway did not close its socket")
        self.assertEqual(client.closed[:2], (True, code))  # type: ignore[index]

    def test_relayed_messages(self) -> None:
        """The TLS harness relays like the plain one (a check of the harness itself)."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.accept_next(listener)
        sender.sendMessage(b"over tls", isBinary=False)
        rendezvous.sendMessage(b"\x00" * 70000, isBinary=True)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"over tls", False)])
        self.assertEqual(sender.messages, [(b"\x00" * 70000, True)])

    def test_sender_closes_a_pair(self) -> None:
        """The sender's close goes end to end and both spliced sockets are closed by the gateway."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.accept_next(listener)
        sender.sendClose(4000, "bye")
        self.net.flush()
        self.assert_closed_by_gateway(rendezvous, 4000)  # each end records the code it received
        self.assert_closed_by_gateway(sender, 1000)
        self.assertEqual(self.gateway.hybrid_factory.splices, set())

    def test_listener_closes_a_pair(self) -> None:
        listener = self.listen()
        sender = self.send()
        rendezvous = self.accept_next(listener)
        rendezvous.sendClose(4000, "bye")
        self.net.flush()
        self.assert_closed_by_gateway(sender, 4000)
        self.assert_closed_by_gateway(rendezvous, 1000)

    def test_control_channel_close(self) -> None:
        """A listener leaving its control channel (an Autobahn connection) is closed at once."""
        listener = self.listen()
        listener.sendClose(1000)
        self.net.flush()
        self.assert_closed_by_gateway(listener, 1000)
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_refused_sender(self) -> None:
        """A refused upgrade (no listener: 404) is answered and its socket closed."""
        sender = self.send()
        self.assertEqual(sender.status, 404)
        self.assertTrue(sender.server_transport.disconnecting)

    def test_refused_listener(self) -> None:
        """A listener refused on Autobahn's handshake path (bad token: 401, after the throttle's delay)."""
        listener = self.listen(token="SharedAccessSignature sr=x&sig=y&se=1&skn=root")
        self.net.advance(1.0)  # the refusal's delay; nothing else is timed
        self.assertEqual(listener.status, 401)
        self.assertTrue(listener.server_transport.disconnecting)
