"""
Tests for L{relay.writes} and its users: Nagle's algorithm is off, and WebSocket frames reach the kernel at once.

The C{TCP_NODELAY} checks use real loopback TCP sockets (the option only exists on them) inside Twisted
TCP transports driven by a memory reactor, so nothing waits on the network.
"""

from __future__ import annotations

import socket
from collections import deque
from types import SimpleNamespace
from typing import Any

import txaio
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionClosed, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bindings.credentials import parse_address
from bindings.wsclient import SoapClientFactory
from relay import wsdata
from relay.client.control import ControlChannel
from relay.client.errors import ConnectionClosedError
from relay.client.options import WebSocketOptions
from relay.client.protocol import RelayClientFactory, RelayClientProtocol
from relay.firstread import FirstRead
from relay.hybrid.handshake import accept_value
from relay.hybrid.websocket import HybridConnectionProtocol
from relay.webchannel import RelayHTTPChannel
from relay.writes import WriteGate, no_delay, pending_write_bytes, plain_socket, write_now
from relay.wsdata import QuietSendData
from relay.wsframes import server_frame
from tests.test_bridge import FakeSocket
from tests.test_splice_endings import memory_held
from tests.test_wsframes import parse_one


def tcp_pair(case: SynchronousTestCase) -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (client, server), closed after the test."""
    with socket.create_server(("127.0.0.1", 0)) as server_socket:
        client = socket.create_connection(server_socket.getsockname()[:2])
        server, _ = server_socket.accept()
    case.addCleanup(client.close)
    case.addCleanup(server.close)
    return client, server


def nagle_off(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class LoopbackConnection(tcp.Connection):
    """Twisted's TCP transport with the addresses its client and server subclasses would give."""

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 2)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 1)


def transport_over(sock: Any, protocol: Protocol, reactor: MemoryReactorClock) -> tcp.Connection:
    transport = LoopbackConnection(sock, protocol, reactor)  # type: ignore[arg-type]
    transport.connected = True
    return transport


def autobahn_clock(case: SynchronousTestCase) -> MemoryReactorClock:
    """A memory clock that Autobahn's timers (txaio's loop) also run on, until the test ends."""
    reactor = MemoryReactorClock()
    case.addCleanup(setattr, txaio.config, "loop", txaio.config.loop)
    txaio.config.loop = reactor
    return reactor


def open_over(factory: Any, sock: socket.socket, reactor: MemoryReactorClock) -> tuple[Any, tcp.Connection]:
    """The factory's client protocol, connected over C{sock}; its upgrade request is written."""
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
    transport = transport_over(sock, protocol, reactor)
    protocol.makeConnection(transport)
    return protocol, transport


def listen_factory(reactor: MemoryReactorClock) -> RelayClientFactory:
    """The client library's factory for a listener's control channel, on the given clock."""
    return RelayClientFactory(
        "ws://127.0.0.1/$hc/hyco?sb-hc-action=listen",
        reactor=reactor,
        headers={},
        subprotocols=(),
        options=WebSocketOptions(),
        make_receiver=lambda protocol: None,  # type: ignore[arg-type,return-value]
    )


def open_client(case: SynchronousTestCase) -> tuple[Any, tcp.Connection, socket.socket, MemoryReactorClock]:
    """
    A client library WebSocket over a loopback socket, its opening handshake done.

    @return: the protocol, its transport, the server's end of the socket and the clock its timers run on.
    """
    client, server = tcp_pair(case)
    reactor = autobahn_clock(case)
    protocol, transport = open_over(listen_factory(reactor), client, reactor)
    transport.doWrite()
    server.settimeout(5)
    upgrade = server.recv(65536).decode()
    key = next(
        line.split(":", 1)[1].strip()
        for line in upgrade.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    protocol.dataReceived(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_value(key).encode()
    )
    return protocol, transport, server, reactor


class NoDelayTests(SynchronousTestCase):
    """Every TCP connection the gateway accepts or the client library dials has Nagle's algorithm off."""

    def test_tcp_transport(self) -> None:
        _, server = tcp_pair(self)
        self.assertFalse(nagle_off(server))
        no_delay(transport_over(server, Protocol(), MemoryReactorClock()))
        self.assertTrue(nagle_off(server))

    def test_other_transports_are_left_alone(self) -> None:
        """A transport without TCP options (a pipe, a test transport) is not asked for them."""
        no_delay(StringTransport())

    def test_accepted_connection_before_its_first_read(self) -> None:
        """L{FirstRead} turns it off as twisted.web's channel does, for legs that never get a channel."""
        _, server = tcp_pair(self)
        site = SimpleNamespace(timeOut=None, reactor=MemoryReactorClock())
        first = FirstRead(site, IPv4Address("TCP", "127.0.0.1", 1))
        first.makeConnection(transport_over(server, first, site.reactor))
        self.assertTrue(nagle_off(server))

    def test_client_library_connection(self) -> None:
        """
        The client library's WebSocket has it off; a listener's control channel writes its frames through.

        Autobahn's own attempt to turn it off fails silently. The upgrade request is left to Twisted, like
        every frame of a connection that is not a control channel; once a control channel owns the
        connection, what it sends is on the wire before the reactor runs.
        """
        client, server = tcp_pair(self)
        reactor = autobahn_clock(self)
        protocol, transport = open_over(listen_factory(reactor), client, reactor)
        self.assertTrue(nagle_off(client))
        self.assertGreater(pending_write_bytes(transport), 0)
        transport.doWrite()
        server.settimeout(5)
        self.assertTrue(server.recv(65536).startswith(b"GET /$hc/hyco?sb-hc-action=listen HTTP/1.1\r\n"))

        ignore = lambda *args: None  # noqa: E731
        ControlChannel(protocol, listener_id="l-1", on_accept=ignore, on_request=ignore, on_closed=ignore)
        protocol.sendData(b"answer")
        self.assertEqual(pending_write_bytes(transport), 0)
        self.assertEqual(server.recv(65536), b"answer")

    def test_control_channel_frames_are_built_here(self) -> None:
        """
        A listener's messages are whole frames built here, masked, each sent in one system call.

        A response and its body go together in one. What needs Autobahn's frame machinery (here automatic fragmentation) still gets it.
        """
        protocol, transport, server, _ = open_client(self)
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        ignore = lambda *args: None  # noqa: E731
        channel = ControlChannel(
            protocol, listener_id="l-1", on_accept=ignore, on_request=ignore, on_closed=ignore
        )
        calls = []
        protocol.sendMessage = lambda *args, **kwargs: calls.append(args)  # Autobahn's path is not taken
        self.assertTrue(channel.send_message(b'{"response":{}}'))
        self.assertTrue(channel.send_message(b"\x00" * 300, is_binary=True))
        self.assertEqual(calls, [])
        wire = server.recv(65536)
        end, opcode, fin, payload = parse_one(wire, masked=True)
        self.assertEqual((opcode, fin, payload), (1, True, b'{"response":{}}'))
        self.assertTrue(wire[1] & 0x80)
        self.assertEqual(parse_one(wire[end:], masked=True)[1:], (2, True, b"\x00" * 300))
        writes = []
        protocol.sendData = lambda data, *args: writes.append(data)
        self.assertTrue(channel.send_messages([(b'{"response":{}}', False), (b"body", True)]))
        (both,) = writes  # a response and its body: one write
        end, opcode, fin, payload = parse_one(both, masked=True)
        self.assertEqual((opcode, payload), (1, b'{"response":{}}'))
        self.assertEqual(parse_one(both[end:], masked=True)[1:], (2, True, b"body"))
        del protocol.sendData
        del protocol.sendMessage
        protocol.autoFragmentSize = 4
        self.assertTrue(channel.send_message(b"0123456789"))
        transport.doWrite()
        wire = server.recv(65536)
        frames = []
        while wire:
            end, opcode, fin, payload = parse_one(wire, masked=True)
            frames.append((opcode, fin, payload))
            wire = wire[end:]
        self.assertEqual(frames, [(1, False, b"0123"), (0, False, b"4567"), (0, True, b"89")])

    def test_bindings_client_connection(self) -> None:
        """The bindings' client WebSocket (service hosts, channel factories, the bridge) has it off too."""
        client, _ = tcp_pair(self)
        reactor = autobahn_clock(self)
        factory = SoapClientFactory(
            "ws://127.0.0.1/$wcf/service",
            address=parse_address("sb://127.0.0.1/service"),
            owner=None,
            credentials=None,
            clock=reactor,
            headers={},
        )
        open_over(factory, client, reactor)
        self.assertTrue(nagle_off(client))


class CloseTimerTests(SynchronousTestCase):
    """Autobahn's close-handshake timer does not outlive the connection."""

    def test_peer_that_drops_instead_of_closing(self) -> None:
        """
        A peer that drops the TCP connection instead of answering a close frame leaves no timer behind.

        Autobahn cancels its other timers when the connection is lost, but not this one: it kept the
        protocol alive for the whole close timeout (5 s on the gateway) after the socket was gone.
        """
        protocol, _, _, reactor = open_client(self)
        protocol.sendClose(1000)
        self.assertIsNotNone(protocol.closeHandshakeTimeoutCall)
        self.assertTrue([call for call in reactor.getDelayedCalls() if call.active()])
        protocol.connectionLost(Failure(ConnectionLost("dropped")))
        self.assertIsNone(protocol.closeHandshakeTimeoutCall)
        self.assertEqual([call for call in reactor.getDelayedCalls() if call.active()], [])


class PongBacklogTests(SynchronousTestCase):
    def test_pongs_for_a_peer_that_does_not_read_hold_about_the_limit(self) -> None:
        """
        Pongs queued on an Autobahn socket whose peer pings without reading hold about PONG_BACKLOG_LIMIT.

        Each queued pong is an object of its own (6 bytes from a client, about 50 in memory): counted by
        their bytes alone, the limit's worth held nine times as much.
        """
        protocol, transport, _, _ = open_client(self)
        self.patch(wsdata, "PONG_BACKLOG_LIMIT", 65536)

        def flood() -> None:
            for _ in range(20000):
                protocol.onPing(b"")

        held = memory_held(flood)
        self.assertGreater(pending_write_bytes(transport), 0)
        self.assertLess(held, 2 * 65536)


class AutobahnStandIn:
    """What L{QuietSendData} needs of Autobahn's protocol; its own C{sendData} records what reaches it."""

    STATE_OPEN = 3

    def __init__(self) -> None:
        self.send_queue: deque[Any] = deque()
        self.state = self.STATE_OPEN
        self.trafficStats = SimpleNamespace(outgoingOctetsWireLevel=0, preopenOutgoingOctetsWireLevel=0)
        self.logOctets = False
        self.autobahn: list[tuple[bytes, bool, int | None]] = []

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        self.autobahn.append((data, sync, chopsize))


class Sender(QuietSendData, AutobahnStandIn):
    pass


class QuietSendDataTests(SynchronousTestCase):
    """Frames go to the socket at once when nothing is queued; otherwise behind what is, in order."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sock = FakeSocket()
        self.sender = Sender()
        self.transport = transport_over(self.sock, Protocol(), self.reactor)
        self.sender.transport = self.transport

    def test_straight_to_the_socket(self) -> None:
        self.sender.write_through = True
        self.sender.sendData(b"frame-1")
        self.assertEqual(bytes(self.sock.received), b"frame-1")
        self.assertNotIn(self.transport, self.reactor.getWriters())
        self.assertEqual(self.sender.trafficStats.outgoingOctetsWireLevel, 7)

    def test_behind_queued_bytes(self) -> None:
        """A frame written while earlier bytes wait in the transport's queue waits behind them."""
        self.sender.write_through = True
        self.sock.script = [2]
        self.sender.sendData(b"abcd")
        self.sender.sendData(b"ef")
        self.assertEqual(bytes(self.sock.received), b"ab")
        self.assertEqual(pending_write_bytes(self.transport), 4)
        self.transport.doWrite()
        self.assertEqual(bytes(self.sock.received), b"abcdef")

    def test_other_transports_get_the_bytes(self) -> None:
        """A transport that is not plain TCP (a TLS layer must encrypt first) gets the bytes itself."""
        other = StringTransport()
        self.sender.transport = other
        self.sender.sendData(b"secret")
        self.assertEqual(other.value(), b"secret")

    def test_batched_unless_written_through(self) -> None:
        """By default frames are left to Twisted, which sends a reactor turn's worth at once."""
        self.assertFalse(HybridConnectionProtocol.write_through)
        self.assertFalse(RelayClientProtocol.write_through)
        self.sender.sendData(b"accept-1")
        self.sender.sendData(b"accept-2")
        self.assertEqual(bytes(self.sock.received), b"")
        self.assertIn(self.transport, self.reactor.getWriters())
        self.transport.doWrite()
        self.assertEqual((bytes(self.sock.received), self.sock.calls), (b"accept-1accept-2", 1))

    def test_at_once_on_a_batching_connection(self) -> None:
        """
        C{send_wholes(..., at_once=True)} frames the messages and sends them now, in one system call.

        The gateway's control channel batches, but a relayed HTTP request and its body go out at once.
        """
        self.sender.send_state = WebSocketProtocol.SEND_STATE_GROUND
        self.sender._perMessageCompress = None
        self.sender.autoFragmentSize = 0
        self.sender.factory = SimpleNamespace(isServer=True)
        self.sender.send_wholes(((b'{"request":{}}', False), (b"body", True)), at_once=True)
        sent = bytes(self.sock.received)
        self.assertEqual(self.sock.calls, 1)
        self.assertEqual(sent, server_frame(b'{"request":{}}') + server_frame(b"body", binary=True))
        self.assertNotIn(self.transport, self.reactor.getWriters())
        self.sender.send_wholes(((b"accept", False),))
        self.assertEqual((bytes(self.sock.received), self.sock.calls), (sent, 1))
        self.assertIn(self.transport, self.reactor.getWriters())

    def test_at_once_behind_autobahns_queue(self) -> None:
        """With frames waiting in Autobahn's own queue, a message sent at once still goes behind them."""
        self.sender.send_state = WebSocketProtocol.SEND_STATE_GROUND
        self.sender._perMessageCompress = None
        self.sender.autoFragmentSize = 0
        self.sender.factory = SimpleNamespace(isServer=True)
        self.sender.send_queue.append((b"queued", False))
        self.sender.send_wholes(((b"late", False),), at_once=True)
        self.assertEqual(self.sender.autobahn, [(server_frame(b"late"), False, None)])
        self.assertEqual(bytes(self.sock.received), b"")

    def test_autobahn_keeps_what_it_does_specially(self) -> None:
        """Synchronous and chopped writes, and writes behind Autobahn's own queue, are Autobahn's."""
        self.sender.sendData(b"a", sync=True)
        self.sender.sendData(b"b", chopsize=1)
        self.sender.send_queue.append((b"queued", False))
        self.sender.sendData(b"c")
        self.assertEqual(self.sender.autobahn, [(b"a", True, None), (b"b", False, 1), (b"c", False, None)])
        self.assertEqual(bytes(self.sock.received), b"")

    def test_nothing_after_an_abort(self) -> None:
        """After C{abortConnection}, nothing reaches the socket (Twisted's own writes are dropped too)."""
        self.sender.write_through = True
        self.sender.sendData(b"before")
        self.transport.abortConnection()
        self.sender.sendData(b"after")
        self.assertFalse(write_now(self.transport, b"late", plain_socket(self.transport)))
        self.assertEqual(bytes(self.sock.received), b"before")


class ResponseWriteTests(SynchronousTestCase):
    """The gateway's HTTP responses go to the socket at once too, behind anything already queued."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sock = FakeSocket()
        self.channel = RelayHTTPChannel()
        self.transport = transport_over(self.sock, self.channel, self.reactor)
        self.channel.transport = self.transport

    def test_head_and_body_in_one_send(self) -> None:
        self.channel.writeSequence([b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n", b"ok"])
        self.assertEqual(bytes(self.sock.received), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.sock.calls, 1)
        self.assertNotIn(self.transport, self.reactor.getWriters())

    def test_behind_queued_bytes(self) -> None:
        self.sock.script = [3]
        self.channel.write(b"chunk-1")
        self.channel.write(b"chunk-2")
        self.assertEqual(bytes(self.sock.received), b"chu")
        self.transport.doWrite()
        self.assertEqual(bytes(self.sock.received), b"chunk-1chunk-2")


class WriteGateTests(SynchronousTestCase):
    """L{WriteGate}: writers wait while the transport's buffer is full, and fail once it is gone."""

    def test_waiters_released_on_resume(self) -> None:
        gate = WriteGate()
        self.successResultOf(gate.when_writable())
        gate.pauseProducing()
        waiting = gate.when_writable()
        self.assertNoResult(waiting)
        gate.resumeProducing()
        self.successResultOf(waiting)

    def test_stopped_gate_fails_with_the_owners_error(self) -> None:
        """Twisted's C{ConnectionClosed} unless the owner names its own error (the client library does)."""
        gate = WriteGate()
        gate.pauseProducing()
        waiting = gate.when_writable()
        gate.stopProducing()
        self.failureResultOf(waiting, ConnectionClosed)
        self.failureResultOf(gate.when_writable(), ConnectionClosed)
        client_gate = WriteGate(ConnectionClosedError)
        client_gate.pauseProducing()
        waiting = client_gate.when_writable()
        client_gate.stop()
        self.failureResultOf(waiting, ConnectionClosedError)
        self.failureResultOf(client_gate.when_writable(), ConnectionClosedError)
