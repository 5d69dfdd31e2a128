"""
End to end multicast and unicast delivery on loopback: ordering, membership, load balancing, slow subscribers.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from bindings.addressing import new_message_id
from bindings.contracts import contract_of
from bindings.control import Registration, register_envelope
from bindings.settings import MULTICAST, MulticastBinding, OneWayBinding
from bindings.wsdl import generate_wsdl
from relay.listeners import RoundRobinChooser

from .calculator import IChat
from .e2e_support import BindingsE2E
from .services import ChatRoom

SAY = contract_of(IChat).operation("Say")


class RawSubscriber(WebSocketClientProtocol):
    """A subscriber that registers by hand and can stop reading its socket."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.received = 0

    def onOpen(self) -> None:
        registration = Registration(kind=MULTICAST, wsdl=generate_wsdl(contract_of(IChat), "sb://x/chat"))
        self.sendMessage(register_envelope(registration, new_message_id()).to_bytes(), isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.registered.called:
            self.registered.callback(None)
        else:
            self.received += 1

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed.callback((code, reason))


class MulticastTests(BindingsE2E):
    """Spec 5.2 with real sockets and our own hosts and channel factory."""

    async def subscribers(self, count: int) -> list[ChatRoom]:
        rooms = [ChatRoom() for _ in range(count)]
        for room in rooms:
            await self.host(room, IChat, "chat", MulticastBinding())
        return rooms

    async def test_fan_out_in_order(self) -> None:
        """Three subscribers each receive all 100 events in publish order; the publisher is told 3 each time."""
        await self.start()
        rooms = await self.subscribers(3)
        _, chat = self.channel(IChat, "chat", MulticastBinding())
        counts = [await chat.Say("pub", str(i)) for i in range(100)]
        self.assertEqual(set(counts), {3})
        expected = [("pub", str(i)) for i in range(100)]
        await self.until(lambda: all(len(r.heard) == 100 for r in rooms))
        for room in rooms:
            self.assertEqual(room.heard, expected)

    async def test_membership_change(self) -> None:
        """A subscriber that joins after event 50 gets only later events; one that leaves gets no more."""
        await self.start()
        early = await self.subscribers(2)
        _, chat = self.channel(IChat, "chat", MulticastBinding())
        for i in range(50):
            await chat.Say("pub", str(i))
        late = ChatRoom()
        late_host = await self.host(late, IChat, "chat", MulticastBinding())
        for i in range(50, 100):
            await chat.Say("pub", str(i))
        await late_host.close()
        self.assertEqual(await chat.Say("pub", "after"), 2)
        await self.until(lambda: all(len(r.heard) == 101 for r in early))
        self.assertEqual(late.heard, [("pub", str(i)) for i in range(50, 100)])

    async def test_slow_subscriber_disconnected(self) -> None:
        """A subscriber that stops reading is closed with 1008; the others get everything, unslowed."""
        await self.start()
        fast = await self.subscribers(2)
        factory = WebSocketClientFactory(
            f"{self.gateway.ws_url}/$wcf/chat?sb-wcf-action=listen",
            protocols=["soap"],
            headers={"ServiceBusAuthorization": self.token("chat")},
            reactor=reactor,
        )
        factory.protocol = RawSubscriber
        built: list[RawSubscriber] = []
        original = factory.buildProtocol

        def build(addr: Any) -> RawSubscriber:
            protocol: RawSubscriber = original(addr)
            built.append(protocol)
            return protocol

        factory.buildProtocol = build  # type: ignore[method-assign]
        connectWS(factory)
        await self.until(lambda: built)
        slow = built[0]
        await slow.registered
        slow.transport.pauseProducing()  # stop reading: kernel buffers, then the gateway's queue fill up
        _, chat = self.channel(IChat, "chat", MulticastBinding())
        text = "x" * 60_000
        counts = []
        for i in range(2000):
            counts.append(await chat.Say("pub", f"{i}:{text}"))
            if counts[-1] == 2:
                break
        self.assertEqual(counts[-1], 2, "the slow subscriber was never dropped")
        slow.transport.resumeProducing()
        code, reason = await slow.closed
        self.assertEqual(code, 1008)
        self.assertIn("subscriber queue overflow", reason or "")
        published = len(counts)
        await self.until(lambda: all(len(r.heard) == published for r in fast), timeout=20)
        for room in fast:
            self.assertEqual([t.split(":")[0] for _, t in room.heard], [str(i) for i in range(published)])


class UnicastTests(BindingsE2E):
    """Spec 5.1 with two listeners and a deterministic chooser."""

    async def test_load_balanced_in_order(self) -> None:
        """200 datagrams to two listeners: each delivered exactly once, both get some, order kept per listener."""
        await self.start(chooser=RoundRobinChooser())
        rooms = [ChatRoom(), ChatRoom()]
        for room in rooms:
            await self.host(room, IChat, "events", OneWayBinding())
        _, events = self.channel(IChat, "events", OneWayBinding())
        for i in range(200):
            self.assertEqual(await events.Say("s", str(i)), 1)
        await self.until(lambda: sum(len(r.heard) for r in rooms) == 200)
        numbers = [[int(t) for _, t in r.heard] for r in rooms]
        self.assertEqual(sorted(numbers[0] + numbers[1]), list(range(200)))
        for got in numbers:
            self.assertTrue(got)
            self.assertEqual(got, sorted(got))
