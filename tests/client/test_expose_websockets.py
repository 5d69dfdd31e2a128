"""
Tests for C{relay expose}'s WebSocket side (L{relay.expose.Forwarder}).

Each accepted sender gets the local socket opened for it, and a sender that never arrives leaves nothing open.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from relay import expose
from relay.client.accepting import Accept, AcceptContext, Reject, decide
from relay.client.headers import Headers, parse_subprotocols
from relay.expose import Forwarder


class FakeLocal:
    """A local WebSocket as L{relay.client.protocol.open_websocket} would give it."""

    subprotocol = None

    def __init__(self, url: str) -> None:
        self.url = url
        self.closed: tuple[int, str] | None = None

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


class FakeSender:
    """An accepted sender: its tracking id and the context it was accepted with."""

    def __init__(self, context: AcceptContext) -> None:
        self.tracking_id = context.connection_id
        self.context = context
        self.closed: tuple[int, str] | None = None

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def context(connection_id: str, suffix: str) -> AcceptContext:
    return AcceptContext(connection_id, Headers(), suffix, "", None, ())


class ForwarderWebSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lines: list[str] = []
        self.opened: list[FakeLocal] = []
        self.forwarder = Forwarder(
            "http://127.0.0.1:8000", reactor=MemoryReactorClock(), log_line=self.lines.append
        )

        async def open_websocket(reactor: Any, url: str, **kwargs: Any) -> FakeLocal:
            local = FakeLocal(url)
            self.opened.append(local)
            return local

        self.patch(expose, "open_websocket", open_websocket)
        self.spliced: list[tuple[Any, Any]] = []

        async def splice(sender: Any, pending: Any) -> None:
            self.spliced.append((sender, pending.local))

        self.patch(self.forwarder, "_splice", splice)

    def accept(self, ctx: AcceptContext) -> Any:
        from twisted.internet.defer import Deferred

        return self.successResultOf(Deferred.fromCoroutine(self.forwarder.accept(ctx)))

    def test_senders_with_the_same_id_get_their_own_local_sockets(self) -> None:
        """A sender chooses its id: two with the same one are still each spliced to the socket opened for them."""
        alice, mallory = context("same", "/alice"), context("same", "/mallory")
        self.assertIsInstance(self.accept(alice), Accept)
        self.assertIsInstance(self.accept(mallory), Accept)
        self.forwarder.connected(FakeSender(mallory))  # type: ignore[arg-type]
        self.forwarder.connected(FakeSender(alice))  # type: ignore[arg-type]
        urls = [(sender.context.suffix, local.url) for sender, local in self.spliced]
        self.assertEqual(
            urls, [("/mallory", "ws://127.0.0.1:8000/mallory"), ("/alice", "ws://127.0.0.1:8000/alice")]
        )
        self.assertEqual(self.forwarder._pending, {})

    def test_a_sender_that_never_arrives_leaves_nothing_open(self) -> None:
        """The listener's C{on_accept_failed} closes the local socket opened for it and forgets it."""
        gone = context("gone", "/chat")
        self.accept(gone)
        self.forwarder.accept_failed(gone)
        self.assertEqual(self.opened[0].closed, (1001, "the sender went away"))
        self.assertEqual(self.forwarder._pending, {})
        self.assertIn('"WEBSOCKET /chat" 502 sender gone before the rendezvous', self.lines[-1])

    def test_handshakes_that_cannot_be_written_get_400(self) -> None:
        """
        A sender's header, subprotocol or path that would break the local handshake is refused (400).

        Autobahn writes headers and subprotocols as given: a line break started a header of the relay's
        choosing on the local server, a lone surrogate failed its encoding and left the sender waiting.
        """
        cases: list[tuple[dict[str, str], str, str]] = [
            ({"X-A": "1\r\nX-Injected: yes"}, "/chat", ""),
            ({"X-A": "\ud800"}, "/chat", ""),
            ({"X A": "1"}, "/chat", ""),
            ({"X-\u0100": "1"}, "/chat", ""),
            ({"Sec-WebSocket-Protocol": "chat\r\nX-Injected: yes"}, "/chat", ""),
            ({}, "/a b", ""),
            ({}, "/chat", "q=a b"),
        ]
        for headers, suffix, query in cases:
            with self.subTest(headers=headers, suffix=suffix, query=query):
                ctx = AcceptContext(
                    "c",
                    Headers(headers),
                    suffix,
                    query,
                    None,
                    parse_subprotocols(headers.get("Sec-WebSocket-Protocol")),
                )
                refused = self.accept(ctx)
                self.assertIsInstance(refused, Reject)
                self.assertEqual(refused.status_code, 400)
                self.assertEqual(self.opened, [])
                self.assertIn(" 400 bad request", self.lines[-1])
        ctx = AcceptContext("c", Headers({"X-A": "caf\u00e9"}), "/chat", "", None, ("chat",))
        self.assertIsInstance(self.accept(ctx), Accept)

    def test_websocket_senders_beyond_the_limit_get_503(self) -> None:
        """Senders being opened, waiting or relayed count against C{max_websockets}; more get 503 at once."""
        self.forwarder.max_websockets = 2
        first, second, third = context("a", "/1"), context("b", "/2"), context("c", "/3")
        self.assertIsInstance(self.accept(first), Accept)
        self.assertIsInstance(self.accept(second), Accept)
        refused = self.accept(third)
        self.assertIsInstance(refused, Reject)
        self.assertEqual(refused.status_code, 503)
        self.assertEqual(len(self.opened), 2)
        self.assertIn('"WEBSOCKET /3" 503 too many WebSocket connections', self.lines[-1])
        self.forwarder.accept_failed(first)
        self.assertIsInstance(self.accept(third), Accept)

    def test_senders_while_stopping_get_503(self) -> None:
        """While expose stops (its answers in flight finishing), a new sender is refused without a local socket."""
        self.forwarder.draining = True
        refused = self.accept(context("late", "/chat"))
        self.assertIsInstance(refused, Reject)
        self.assertEqual(refused.status_code, 503)
        self.assertEqual(self.opened, [])
        self.assertIn('"WEBSOCKET /chat" 503 shutting down', self.lines[-1])

    def test_a_sender_arriving_while_stopping_is_closed_with_1001(self) -> None:
        """
        A sender accepted before the stop but arriving after it is closed at once, as the others were.

        Before, it was relayed: expose's stop waited its full drain time for it, then dropped it (1006).
        """
        late = context("late", "/chat")
        self.accept(late)
        self.forwarder.drain()
        sender = FakeSender(late)
        self.forwarder.connected(sender)  # type: ignore[arg-type]
        self.assertEqual(self.spliced, [])
        self.assertEqual(self.forwarder.connections, {})
        self.assertEqual(sender.closed, (1001, "relay expose is shutting down"))
        self.assertEqual(self.opened[0].closed, (1001, "relay expose is shutting down"))
        self.assertEqual(self.forwarder._pending, {})
        self.assertIn('"WEBSOCKET /chat" 101 closed 1001 (shutting down)', self.lines[-1])


class LocalTrustTests(SynchronousTestCase):
    """C{--ca} is for the relay: a C{wss} local server is checked as an C{https} one is, by the platform's CAs."""

    def test_local_websocket_ignores_the_relay_ca(self) -> None:
        """
        The local WebSocket's options have no trust root, the rest as given.

        Before, it trusted only the relay's CA (and HTTP requests only the platform's), so with C{--ca}
        every WebSocket sender to an C{https} local server with a public certificate got 502.
        """
        from twisted.internet.ssl import Certificate

        from relay.client.options import WebSocketOptions

        seen: list[Any] = []

        async def open_websocket(reactor: Any, url: str, **kwargs: Any) -> FakeLocal:
            seen.append(kwargs["options"])
            return FakeLocal(url)

        self.patch(expose, "open_websocket", open_websocket)
        from relay.certs import ensure_ca

        ca_path, _key_path = ensure_ca(self.mktemp())
        relay_ca = Certificate.loadPEM(ca_path.read_bytes())
        options = WebSocketOptions(trust_root=relay_ca, receive_buffer=12345)
        forwarder = Forwarder(
            "https://127.0.0.1:8443",
            reactor=MemoryReactorClock(),
            log_line=lambda line: None,
            options=options,
        )
        from twisted.internet.defer import Deferred

        accepted = self.successResultOf(Deferred.fromCoroutine(forwarder.accept(context("c", "/ws"))))
        self.assertIsInstance(accepted, Accept)
        [used] = seen
        self.assertIsNone(used.trust_root)
        self.assertEqual(used.receive_buffer, 12345)
        self.assertIs(forwarder.options.trust_root, relay_ca)


class HungLocalUpgradeTests(SynchronousTestCase):
    """A local server that takes the connection but never answers the WebSocket upgrade."""

    def test_the_accept_window_ends_with_504(self) -> None:
        """
        When the listener's accept window ends, the sender is rejected with 504 and the access line says so.

        The cancellation was caught as an unreachable local server: a 502 with an empty reason.
        """
        from twisted.internet.defer import Deferred

        clock = MemoryReactorClock()
        lines: list[str] = []
        forwarder = Forwarder("http://127.0.0.1:8000", reactor=clock, log_line=lines.append)
        upgrades: list[Deferred[Any]] = []

        def open_websocket(reactor: Any, url: str, **kwargs: Any) -> Deferred[Any]:
            upgrades.append(Deferred())
            return upgrades[-1]

        self.patch(expose, "open_websocket", open_websocket)
        deciding = Deferred.fromCoroutine(
            decide(forwarder.accept, context("hung", "/ws"), clock=clock, timeout=30)
        )
        clock.advance(30)
        answer = self.successResultOf(deciding)
        self.assertIsInstance(answer, Reject)
        self.assertEqual(answer.status_code, 504)
        (line,) = lines
        self.assertIn(" 504 ", line)
        self.assertIn("did not answer the upgrade", line)
        self.assertEqual(len(upgrades), 1)
