"""End-to-end smoke test: a real gateway on loopback with raw Autobahn clients."""

from __future__ import annotations

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from .gateway import start_gateway


class Client(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.messages: list[Deferred[tuple[bytes, bool]]] = []
        self.received: list[tuple[bytes, bool]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.messages:
            self.messages.pop(0).callback((payload, isBinary))
        else:
            self.received.append((payload, isBinary))

    def next_message(self) -> Deferred[tuple[bytes, bool]]:
        if self.received:
            d: Deferred[tuple[bytes, bool]] = Deferred()
            d.callback(self.received.pop(0))
            return d
        d = Deferred()
        self.messages.append(d)
        return d

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(reason))
        self.closed.callback((code, reason))


async def connect(url: str, headers: dict[str, str] | None = None, protocol: type[Client] = Client) -> Client:
    factory = WebSocketClientFactory(url, headers=headers or {}, reactor=reactor)
    factory.protocol = protocol
    connector = connectWS(factory)
    proto: list[Client] = []
    original = factory.buildProtocol

    def build(addr):  # type: ignore[no-untyped-def]
        p = original(addr)
        proto.append(p)
        return p

    factory.buildProtocol = build  # type: ignore[method-assign]
    while not proto:
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.01, lambda: None)
    await proto[0].opened
    del connector
    return proto[0]


class GatewaySmokeTests(TestCase):
    """The assembled gateway relays a message between raw WebSocket clients over loopback."""

    async def test_echo_through_gateway(self) -> None:
        """A listener accepts a sender and echoes one message back through the real gateway."""
        gateway = await start_gateway(self)
        listener = await connect(
            f"{gateway.ws_url}/$hc/hyco?sb-hc-action=listen",
            {"ServiceBusAuthorization": gateway.token("hyco")},
        )
        sender_connecting = Deferred.fromCoroutine(
            connect(
                f"{gateway.ws_url}/$hc/hyco?sb-hc-action=connect",
                {"ServiceBusAuthorization": gateway.token("hyco")},
            )
        )
        payload, _ = await listener.next_message()
        rendezvous = await connect(json.loads(payload)["accept"]["address"])
        sender = await sender_connecting
        sender.sendMessage(b"ping", isBinary=True)
        message = await rendezvous.next_message()
        self.assertEqual(message, (b"ping", True))
        rendezvous.sendMessage(message[0], isBinary=True)
        self.assertEqual(await sender.next_message(), (b"ping", True))
        sender.sendClose(1000)
        self.assertEqual((await rendezvous.closed)[0], 1000)
        await sender.closed
        listener.sendClose(1000)
        await listener.closed
