"""
End to end on loopback: connections whose WebSocket has ended give their namespace place back.

A peer that stops reading keeps unsent bytes in the gateway's buffer for it; a graceful close then never
completes, and nothing else may keep the connection (and its lease) alive.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from relay.writes import pending_write_bytes

from ..httpharness import RawHttpClient
from .gateway import NAMESPACE_CONFIG, start_gateway
from .test_gateway_smoke import connect
from .test_hybrid_python import until

SHORT_REQUESTS = (
    NAMESPACE_CONFIG
    + """  [[namespaces.hybrid_connections]]
  name = "hyco"
  request_timeout = 2
"""
)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class SpliceCloseTimeoutTests(TestCase):
    """A pair whose close handshake times out ends, however its legs read."""

    timeout = 30

    async def check(self, **limits: float) -> None:
        gateway = await start_gateway(self, limits={"close_handshake_timeout": 0.5, **limits})
        connections = gateway.service.connections
        auth = {"ServiceBusAuthorization": gateway.token("hyco")}
        control = await connect(f"{gateway.ws_url}/$hc/hyco?sb-hc-action=listen", auth)
        sender_connecting = Deferred.fromCoroutine(
            connect(f"{gateway.ws_url}/$hc/hyco?sb-hc-action=connect", auth)
        )
        payload, _ = await control.next_message()
        rendezvous = await connect(json.loads(payload)["accept"]["address"])
        sender = await sender_connecting
        (splice,) = gateway.service.hybrid_factory.splices
        self.assertEqual(connections.count("test"), 2)  # the listener and the sender
        try:
            sender.closeHandshakeTimeout = 0  # the sender waits for the answer to its close for good
            sender.transport.pauseProducing()  # ... and reads nothing meanwhile
            for _ in range(32):  # the listener sends more than the sockets hold
                rendezvous.sendMessage(b"x" * (1 << 20), isBinary=True)
            await until(lambda: splice.buffered_bytes() > 0)
            rendezvous.transport.pauseProducing()  # the listener never answers the close it is sent
            sender.sendClose(1000)
            await until(lambda: splice.listener.lost, timeout=5)  # the close timer aborted the listener
            await sleep(1.5)  # three more close timeouts
            self.assertEqual(
                (splice.ended, len(gateway.service.hybrid_factory.splices), connections.count("test")),
                (True, 0, 1),
            )
        finally:
            for client in (sender, rendezvous, control):
                client.transport.abortConnection()
            await sleep(0.2)

    async def test_in_python(self) -> None:
        """The pair relayed in Python."""
        await self.check(native_splice=0.0)

    async def test_on_the_native_thread(self) -> None:
        """The pair relayed by the native thread when the close comes."""
        await self.check()


class ListenerCloseTests(TestCase):
    """A listener that closes its control channel is no longer counted, nor registered."""

    timeout = 60

    async def test_listener_closes_with_unsent_requests(self) -> None:
        """The listener closes (clean handshake) while requests it did not read wait in the gateway."""
        gateway = await start_gateway(self, SHORT_REQUESTS, limits={"close_handshake_timeout": 1.0})
        service = gateway.service
        auth = {"ServiceBusAuthorization": gateway.token("hyco")}
        listener = await connect(f"{gateway.ws_url}/$hc/hyco?sb-hc-action=listen", auth)
        namespace = service.store.namespace_for_host("127.0.0.1")
        entity = service.store.get(namespace, "hyco")
        (channel,) = service.registry.listeners(namespace, entity)
        listener.transport.pauseProducing()  # the listener reads nothing more
        senders = []
        try:
            for _ in range(250):  # small requests go on the control channel: 60 kB each
                client = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.port), RawHttpClient()
                )
                client.request("POST", "/hyco/x", auth, b"b" * 60000, host="127.0.0.1")
                senders.append(client)
            await until(lambda: pending_write_bytes(channel.protocol.transport) > 0)
            self.assertEqual(service.registry.count(namespace, entity), 1)

            listener.closeHandshakeTimeout = 0  # it waits for the gateway to end the connection
            listener.sendClose(1000)
            await until(lambda: channel.protocol.state == channel.protocol.STATE_CLOSED)  # handshake done
            await sleep(4)  # every request has had its 504 (request_timeout 2 s)
            self.assertEqual(
                (service.registry.count(namespace, entity), service.connections.count("test")), (0, 0)
            )
        finally:
            for client in senders:
                client.transport.abortConnection()
            listener.transport.abortConnection()
            await sleep(0.2)
