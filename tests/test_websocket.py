"""Transport tests for the C{$hc} endpoint on in-memory connections (no sockets, no real time)."""

from __future__ import annotations

import gc
import json
import re
import struct
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from relay import wsdata
from relay.auth import make_token
from relay.hybrid import bridge, direct
from relay.hybrid.legs import SplicedConnection
from relay.hybrid.websocket import HybridConnectionProtocol

from .test_auth import count_signatures
from .wsharness import HOST, KEY, GatewayTestCase, RecordingClient

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DATE = re.compile(rb"Date: [^\r]*")


class RawClient(Protocol):
    """A client that writes whatever the test gives it and records the answer."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class ListenerTests(GatewayTestCase):
    """The control channel."""

    def test_listen_registers(self) -> None:
        """A listener with a Listen token is registered and gets a 101."""
        listener = self.listen()
        self.assertTrue(listener.opened)
        self.assertEqual(self.gateway.registry.total(), 1)
        listener.sendClose(1000)
        self.net.flush()
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_refusals_are_delayed_per_source(self) -> None:
        """A refused listener gets 401 only after a delay that grows with its source's failures."""
        delays = []
        for _ in range(3):
            listener = self.listen(token="SharedAccessSignature sr=x&sig=AAAA&se=1&skn=root")
            self.assertIsNone(listener.status)
            waited = 0.0
            while listener.status is None:
                self.net.advance(0.5)
                waited += 0.5
            delays.append(waited)
            self.assertEqual(listener.status, 401)
            self.assertIn("TrackingId:", listener.status_line)
        self.assertEqual(delays, [1.0, 2.0, 4.0])
        other = self.listen(token="bad", source="10.9.9.9")
        self.net.advance(1.0)
        self.assertEqual(other.status, 401)

    def test_refusal_statuses(self) -> None:
        """Unknown HC 404, wrong rights 403, quota 403, unknown action 400."""
        unknown = self.listen("nothing", token=self.token("nothing"))
        wrong_right = self.send("hyco", token=self.token(key_name="listen-only", key=KEY[::-1]))
        self.listen(), self.listen()
        third = self.listen(source="10.0.0.2")
        bad_action = self.net.connect(f"wss://{HOST}/$hc/hyco?sb-hc-action=dance")
        self.net.advance(10)
        self.assertEqual(unknown.status, 404)
        self.assertEqual(wrong_right.status, 403)
        self.assertEqual(third.status, 403)
        self.assertIn("Quota exceeded", third.status_line)
        self.assertEqual(bad_action.status, 400)

    def test_listener_with_a_suffix_is_refused(self) -> None:
        """A listener of C{hyco/extra} gets 404 and never receives the senders of C{hyco}."""
        stray = self.listen("hyco/extra", token=self.token("hyco"))
        self.net.advance(10)
        self.assertEqual(stray.status, 404)
        self.assertEqual(self.gateway.registry.total(), 0)
        sender = self.send("hyco/extra")
        self.net.advance(10)
        self.assertEqual(sender.status, 404)

    def test_token_expiry_closes_with_1008(self) -> None:
        """A control channel whose token lapses unrenewed is closed with 1008, after the 10 s grace."""
        listener = self.listen(token=self.token(ttl=60))
        self.net.advance(69)
        self.assertIsNone(listener.closed)
        self.net.advance(2)
        assert listener.closed is not None
        self.assertEqual(listener.closed[1], 1008)
        self.assertIn("Token expired", listener.closed[2] or "")
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_renew_token_extends(self) -> None:
        """A valid renewToken replaces the expiry; the channel outlives the first token."""
        listener = self.listen(token=self.token(ttl=60))
        self.net.advance(50)
        listener.sendMessage(json.dumps({"renewToken": {"token": self.token(ttl=120)}}).encode())
        self.net.advance(100)
        self.assertIsNone(listener.closed)
        self.net.advance(30)
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]

    def test_a_renewal_sent_as_the_token_lapses_is_taken(self) -> None:
        """
        A renewToken that arrives just after the expiry, as the Node libraries send it, keeps the channel.

        hyco-ws and hyco-https renew every hour with a token that lives an hour, made when the previous one
        was: the renewal comes a fraction of a second after the token lapsed. Closed right at the expiry,
        every such listener was dropped with 1008 once an hour, just before it would have renewed.
        """
        listener = self.listen(token=self.token(ttl=60))
        self.net.advance(60.5)
        listener.sendMessage(json.dumps({"renewToken": {"token": self.token(ttl=60)}}).encode())
        self.net.advance(60)
        self.assertIsNone(listener.closed)
        self.assertEqual(self.gateway.registry.total(), 1)

    def test_renew_token_crossing_the_expiry_close_leaves_no_timer(self) -> None:
        """
        A renewToken that crosses the gateway's expiry close arms no timer for the closed channel.

        It used to schedule a new expiry after the close had cancelled the old one: the timer kept the
        channel and its protocol until the renewed token's expiry, long after the socket was gone.
        """
        listener = self.listen(token=self.token(ttl=60))
        self.net.flush()
        self.clock.advance(
            71
        )  # the gateway closes with 1008 (past the grace); the listener has not read it yet
        listener.sendMessage(json.dumps({"renewToken": {"token": self.token(ttl=86400)}}).encode())
        self.net.advance(10)
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]
        self.assertEqual(self.gateway.hybrid_factory.connections, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unknown_control_messages_are_logged_within_a_budget(self) -> None:
        """A flood of unknown control messages gets 20 lines, then 10 a second; the rest are counted."""
        listener = self.listen()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for i in range(100):
            listener.sendMessage(b'{"x%d": 1}' % i)
        self.net.flush()
        self.assertIsNone(listener.closed)
        self.assertEqual(len([e for e in events if "unknown control message" in formatEvent(e)]), 20)
        self.clock.advance(1)
        listener.sendMessage(b'{"late": 1}')
        self.net.flush()
        self.assertTrue(formatEvent(events[-1]).endswith("(80 lines before this one were not logged)"))
        for i in range(30):  # 9 of them fit the second's budget
            listener.sendMessage(b'{"x%d": 1}' % i)
        listener.sendClose(1000)
        self.net.flush()
        held = [formatEvent(e) for e in events if "were not logged (at most" in formatEvent(e)]
        self.assertEqual(len(held), 1)
        self.assertTrue(held[0].startswith("21 more lines about listener "), held[0])

    def test_renew_token_flood_is_logged_within_a_budget(self) -> None:
        """Renewing the token a thousand times a second keeps the channel and logs a burst of lines, not one each."""
        listener = self.listen()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        payload = json.dumps({"renewToken": {"token": self.token()}}).encode()
        for _ in range(1000):
            listener.sendMessage(payload)
        self.net.flush()
        self.assertIsNone(listener.closed)
        self.assertEqual(len([e for e in events if "renewed its token" in formatEvent(e)]), 20)

    def test_invalid_renew_token_closes(self) -> None:
        """A renewToken with a bad token closes the channel with 1008."""
        listener = self.listen()
        listener.sendMessage(json.dumps({"renewToken": {"token": "SharedAccessSignature nope"}}).encode())
        self.net.flush()
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]
        self.assertIn("Invalid renewToken", listener.closed[2])  # type: ignore[index]

    def test_renew_token_with_lone_surrogate_closes(self) -> None:
        """A renewToken whose C{sr} holds a lone surrogate (a JSON escape) closes with 1008, not a crash."""
        listener = self.listen()
        token = "SharedAccessSignature sr=\\ud800&sig=AAAA&se=9999999999&skn=root"
        listener.sendMessage(b'{"renewToken": {"token": "%s"}}' % token.encode())
        self.net.flush()
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]
        self.assertIn("Invalid renewToken", listener.closed[2])  # type: ignore[index]

    def test_deeply_nested_control_message_closes(self) -> None:
        """JSON nested past the recursion limit is a malformed message (1008), not a RecursionError."""
        listener = self.listen()
        listener.sendMessage(b'{"response": ' + b"[" * 100_000 + b"}")
        self.net.flush()
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]
        self.assertIn("Malformed control message", listener.closed[2])  # type: ignore[index]
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_malformed_and_unknown_messages(self) -> None:
        """Unknown keys and stray binary messages are ignored; non-JSON text closes with 1008."""
        listener = self.listen()
        listener.sendMessage(b'{"futureThing": {}}')
        listener.sendMessage(b"\x00\x01", isBinary=True)
        self.net.flush()
        self.assertIsNone(listener.closed)
        listener.sendMessage(b"not json")
        self.net.flush()
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]

    def test_malformed_control_message_flood_is_logged_within_a_budget(self) -> None:
        """
        Malformed messages sent in a burst get the channel's budget of lines, not one each.

        The first closes the channel (1008), but those already sent, and those the listener goes on sending
        until it answers the close, are read too: each made a warning, as fast as the listener sent them.
        """
        listener = self.listen()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for _ in range(200):
            listener.sendMessage(b"not json")
        self.net.flush()
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]
        lines = [formatEvent(e) for e in events if "malformed control message" in formatEvent(e)]
        self.assertEqual(len(lines), 20)
        held = [formatEvent(e) for e in events if "were not logged (at most" in formatEvent(e)]
        self.assertEqual(len(held), 1)
        self.assertTrue(held[0].startswith("180 more lines about listener "), held[0])

    def test_a_long_close_reason_keeps_its_tracking_id_whole(self) -> None:
        """
        A close reason too long for the close frame is shortened before its tracking id, not through it.

        The whole text was clipped to the frame's 123 bytes, so a long cause (a JSON error with its position)
        cut the tracking id in the middle, and the listener's operator could not find the gateway's lines.
        """
        listener = self.listen()
        listener.sendMessage(b'{"renewToken": {"token": "x"}, ' + b'"y": ' * 10)
        self.net.flush()
        assert listener.closed is not None
        code, reason = listener.closed[1], listener.closed[2] or ""
        self.assertEqual(code, 1008)
        self.assertTrue(reason.startswith("Malformed control message: not a JSON text: "), reason)
        self.assertRegex(
            reason, r"\. TrackingId:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
        )
        self.assertLessEqual(len(reason.encode()), 123)

    def test_fragmented_control_message(self) -> None:
        """
        A control message in fragments, with a ping between them, is read as one message.

        Whole frames are read without Autobahn (L{relay.wsfast}); fragments and pings still go to Autobahn,
        and the next whole message is read fast again.
        """
        listener = self.listen(token=self.token(ttl=60))
        self.net.advance(50)
        renew = json.dumps({"renewToken": {"token": self.token(ttl=120)}}).encode()
        listener.beginMessage(isBinary=False)
        listener.sendMessageFrame(renew[:10])
        listener.sendPing(b"between")
        listener.sendMessageFrame(renew[10:])
        listener.endMessage()
        self.net.advance(100)
        self.assertIsNone(listener.closed)
        listener.sendMessage(json.dumps({"renewToken": {"token": self.token(ttl=120)}}).encode())
        self.net.advance(100)
        self.assertIsNone(listener.closed)
        self.net.advance(30)
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]

    def test_whole_control_messages_skip_autobahns_parser(self) -> None:
        """Whole text and binary control messages reach the channel without Autobahn's frame parser."""
        listener = self.listen(token=self.token(ttl=60))
        factory = self.gateway.hybrid_factory
        (control,) = [p for p in factory.connections if isinstance(p, HybridConnectionProtocol)]
        parsed: list[bytes] = []
        self.patch(control, "_dataReceived", parsed.append)
        received: list[tuple[bytes, bool]] = []
        real_message = control.control.message  # type: ignore[union-attr]

        def message(payload: bytes, is_binary: bool) -> None:
            received.append((payload, is_binary))
            real_message(payload, is_binary)

        self.patch(control.control, "message", message)
        renew = json.dumps({"renewToken": {"token": self.token(ttl=120)}}).encode()
        listener.sendMessage(renew)
        listener.sendMessage(b"\x00\x01", isBinary=True)
        self.net.advance(90)
        self.assertEqual([frame[0] & 0x0F for frame in parsed], [0xA] * len(parsed))  # only pongs
        self.assertEqual(received, [(renew, False), (b"\x00\x01", True)])
        self.assertIsNone(listener.closed)  # the renewal took effect

    def test_control_text_that_is_not_utf8(self) -> None:
        """A control-channel text message that is not UTF-8 closes the channel with 1007, as Autobahn does."""
        listener = self.listen()
        listener.sendMessage(b'{"renewToken": "\xff"}')
        self.net.flush()
        assert listener.closed is not None
        self.assertEqual(listener.closed[1], 1007)
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_oversized_control_message(self) -> None:
        """A control-channel frame over the gateway's limit closes the channel with 1009."""
        listener = self.listen()
        listener.sendMessage(b"{" + b" " * (5 * 1024 * 1024) + b"}")
        self.net.flush()
        assert listener.closed is not None
        self.assertEqual(listener.closed[1], 1009)
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_placeholder_and_real_token_headers(self) -> None:
        """Of two C{ServiceBusAuthorization} headers (a placeholder, then a token) the valid one admits, as on HTTP."""
        answers = []
        for action in ("listen", "connect"):
            raw = RawClient()
            self.net.attach(raw)
            raw.transport.write(
                (
                    f"GET /$hc/hyco?sb-hc-action={action} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\nServiceBusAuthorization: placeholder\r\n"
                    f"ServiceBusAuthorization: {self.token()}\r\n\r\n"
                ).encode()
            )
            self.net.advance(2)  # past the delay of a refused listener's answer
            answers.append(raw.received.split(b"\r\n", 1)[0])
        self.assertEqual(
            answers, [b"HTTP/1.1 101 Switching Protocols", b""]
        )  # the sender waits for an accept

    def test_malformed_url(self) -> None:
        """An upgrade whose target cannot be split (two actions) is refused with 400."""
        client = self.net.connect(f"wss://{HOST}/$hc/hyco?sb-hc-action=connect&sb-hc-action=listen")
        self.assertEqual(client.status, 400)
        self.assertIn("more than once", client.status_line)


class StrictTokenExpiryTests(GatewayTestCase):
    """A gateway with C{listener_token_grace = 0}: a listener's channel closes right at its token's expiry."""

    def limits(self) -> dict[str, float]:
        return {"listener_token_grace": 0.0}

    def test_closed_at_the_expiry(self) -> None:
        """The channel is closed with 1008 as the token lapses; a renewal sent after that is too late."""
        listener = self.listen(token=self.token(ttl=60))
        self.net.advance(59)
        self.assertIsNone(listener.closed)
        self.net.advance(2)
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]
        self.assertEqual(self.gateway.registry.total(), 0)


class SenderTests(GatewayTestCase):
    """WebSocket senders and the accept rendezvous."""

    def accept_next(
        self, listener: RecordingClient, protocols: list[str] | None = None, extra: str = ""
    ) -> RecordingClient:
        payload, is_binary = listener.messages[-1]
        self.assertFalse(is_binary)
        accept = json.loads(payload)["accept"]
        return self.net.connect(accept["address"] + extra, protocols=protocols)

    def pair(self, **sender_kwargs) -> tuple[RecordingClient, RecordingClient, RecordingClient]:
        listener = self.listen()
        sender = self.send(**sender_kwargs)
        self.assertIsNone(sender.status)  # held until the listener accepts
        rendezvous = self.accept_next(listener)
        return listener, sender, rendezvous

    def test_no_listener(self) -> None:
        """With nobody listening the sender gets 404 at once."""
        sender = self.send()
        self.assertEqual(sender.status, 404)
        self.assertIn("No listener", sender.status_line)

    def test_a_header_of_many_tokens_costs_no_signature_check(self) -> None:
        """A 60 KB token header of a thousand comma-separated pieces is refused (401) without one HMAC."""
        calls = count_signatures(self)
        bogus = "SharedAccessSignature sr=a&sig=&se=1&skn=root"
        sender = self.send(token=", ".join([bogus] * (60 * 1024 // (len(bogus) + 2))))
        self.assertEqual(sender.status, 401)
        self.assertIn("Too many tokens", sender.status_line)
        self.assertEqual(calls, [])

    def test_accept_message(self) -> None:
        """The accept names the address, the sender's id and headers (minus the token) and its endpoint."""
        listener = self.listen()
        self.send("hyco/chat", query="room=1&sb-hc-id=trace-1")
        accept = json.loads(listener.messages[-1][0])["accept"]
        self.assertEqual(accept["id"], "trace-1")
        self.assertTrue(
            accept["address"].startswith(
                f"wss://{HOST}/$hc/hyco/chat?room=1&sb-hc-action=accept&sb-hc-id=trace-1&sb-hc-key="
            )
        )
        headers = accept["connectHeaders"]
        self.assertIn("Sec-WebSocket-Key", headers)
        self.assertEqual(headers["Sec-WebSocket-Version"], "13")
        self.assertNotIn("Servicebusauthorization", headers)
        self.assertEqual(
            accept["remoteEndpoint"], {"address": "10.0.0.1", "port": accept["remoteEndpoint"]["port"]}
        )

    def test_relay_both_ways(self) -> None:
        """After the rendezvous both sides exchange text and binary messages, types preserved."""
        _, sender, rendezvous = self.pair()
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        sender.sendMessage("héllo".encode(), isBinary=False)
        sender.sendMessage(bytes(range(256)) * 1000, isBinary=True)
        rendezvous.sendMessage(b"back", isBinary=False)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [("héllo".encode(), False), (bytes(range(256)) * 1000, True)])
        self.assertEqual(sender.messages, [(b"back", False)])

    def test_fragmented_message(self) -> None:
        """A message sent as several frames arrives whole."""
        _, sender, rendezvous = self.pair()
        sender.beginMessage(isBinary=True)
        for part in (b"ab", b"cd", b"ef"):
            sender.sendMessageFrame(part)
        sender.endMessage()
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"abcdef", True)])

    def test_close_is_end_to_end(self) -> None:
        """The sender's close code and reason reach the listener, and the listener's answer completes it."""
        _, sender, rendezvous = self.pair()
        rendezvous.echoCloseCodeReason = True
        sender.sendClose(4001, "done here")
        self.net.flush()
        self.assertEqual(rendezvous.closed[1:], (4001, "done here"))  # type: ignore[index]
        self.assertEqual(sender.closed, (True, 4001, "done here"))
        self.assertEqual(self.gateway.hybrid_factory.splices, set())

    def test_a_pair_is_one_log_event(self) -> None:
        """
        A pair is logged once, when it ends: entity, listener, both close codes and the bytes each way.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _, sender, _rendezvous = self.pair()
        (online,) = [
            e for e in events if str(e.get("log_format")).startswith("listener {listener_id} online")
        ]
        sender.sendMessage(b"12345", isBinary=True)
        self.net.flush()
        self.assertEqual([e for e in events if e.get("connection_id")], [])
        sender.sendClose(4001, "done")
        self.net.flush()
        (ended,) = [e for e in events if e.get("connection_id")]
        self.assertEqual(
            formatEvent(ended),
            f"pair {ended['connection_id']} on hyco (listener {online['listener_id']}) ended after 0.0s; "
            "close codes: sender 4001, listener 1000 (- for none); bytes relayed: 7 from the sender, "
            "0 from the listener",
        )
        self.assertEqual(ended["entity"], "hyco")
        self.assertEqual(ended["listener_id"], online["listener_id"])
        self.assertEqual((ended["sender_code"], ended["listener_code"]), (4001, 1000))
        self.assertEqual((ended["sender_bytes"], ended["listener_bytes"]), (7, 0))

    def test_protocol_options_come_from_the_factory(self) -> None:
        """Connections read Autobahn's options from the factory instead of copying them; their own win."""
        self.listen()
        factory = self.gateway.hybrid_factory
        (control,) = [p for p in factory.connections if isinstance(p, HybridConnectionProtocol)]
        self.assertNotIn("closeHandshakeTimeout", vars(control))
        self.assertEqual(control.closeHandshakeTimeout, factory.closeHandshakeTimeout)
        self.assertEqual(control.autoPingInterval, 30.0)
        control.autoPingInterval = 0
        self.assertEqual((control.autoPingInterval, factory.autoPingInterval), (0, 30.0))
        with self.assertRaises(AttributeError):
            control.no_such_option  # noqa: B018

    def test_spliced_legs_leave_autobahn(self) -> None:
        """Once joined, both transports deliver to small spliced connections; the Autobahn objects are dropped."""
        earlier = {id(o) for o in gc.get_objects() if isinstance(o, HybridConnectionProtocol)}
        _, sender, rendezvous = self.pair()
        factory = self.gateway.hybrid_factory
        (splice,) = factory.splices
        legs = (splice.sender, splice.listener)
        self.assertEqual({leg.protocol for leg in legs}, {None})
        self.assertEqual(
            [
                type(c)
                for c in factory.connections
                if not isinstance(c, HybridConnectionProtocol) or not c.control
            ],
            [SplicedConnection, SplicedConnection],
        )
        for leg in legs:
            # Under TLS the leg's transport is the TLS layer, which delivers to its wrapped protocol.
            receiver = getattr(leg.transport, "wrappedProtocol", None) or leg.transport.protocol
            self.assertIs(receiver, leg.connection)
        gc.collect()
        mine = [
            o for o in gc.get_objects() if isinstance(o, HybridConnectionProtocol) and id(o) not in earlier
        ]
        self.assertEqual([o for o in mine if o.control is None], [])
        sender.sendMessage(b"after the swap", isBinary=True)
        rendezvous.sendClose(1000)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"after the swap", True)])
        self.assertEqual(factory.splices, set())
        self.assertEqual([c for c in factory.connections if isinstance(c, SplicedConnection)], [])

    def test_senders_and_rendezvous_are_answered_without_autobahn(self) -> None:
        """Only the control channel is an Autobahn protocol; a waiting sender is a direct leg."""
        listener = self.listen()
        self.send()
        factory = self.gateway.hybrid_factory
        self.assertEqual(
            sorted(type(c).__name__ for c in factory.connections), ["DirectLeg", "HybridConnectionProtocol"]
        )
        created = [o for o in gc.get_objects() if isinstance(o, HybridConnectionProtocol)]
        self.accept_next(listener)
        self.assertEqual(
            [o for o in gc.get_objects() if isinstance(o, HybridConnectionProtocol) and o not in created], []
        )

    def test_extensions_are_declined(self) -> None:
        """An extension offer is answered with no extension, as Autobahn's factory declines them."""
        listener = self.listen()
        sender = self.send(headers_extra={"Sec-WebSocket-Extensions": "permessage-deflate"})
        self.accept_next(listener)
        self.assertEqual(sender.status, 101)
        self.assertNotIn("sec-websocket-extensions", sender.http_headers)

    def test_special_upgrades_still_go_through_autobahn(self) -> None:
        """A sender whose upgrade has an Origin is handled by Autobahn and pairs with a direct rendezvous."""
        listener = self.listen()
        sender = self.send(headers_extra={"Origin": "https://app.example"})
        factory = self.gateway.hybrid_factory
        self.assertIn(
            "HybridConnectionProtocol", [type(c).__name__ for c in factory.connections if c is not listener]
        )
        rendezvous = self.accept_next(listener)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        sender.sendMessage(b"mixed", isBinary=True)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"mixed", True)])

    def test_unexpected_error_is_a_500(self) -> None:
        """A bug in the direct path answers 500, as Autobahn answers an onConnect that raised."""
        self.listen()

        def broken(*args: object) -> None:
            raise ValueError("boom")

        self.patch(direct, "announce_sender", broken)
        sender = self.send()
        self.assertEqual(sender.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def record_requests(self) -> list[bytes]:
        """The targets of the requests twisted.web builds a C{Request} for from now on."""
        site: Any = self.gateway.site
        targets: list[bytes] = []

        class Recording(site.requestFactory):  # type: ignore[misc, name-defined]
            def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
                targets.append(path)
                super().requestReceived(command, path, version)

        self.patch(site, "requestFactory", Recording)
        return targets

    def raw_head(self, target: str, fields: str = "") -> bytes:
        """A plain version-13 upgrade head for C{target} with the test token."""
        return (
            f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"ServiceBusAuthorization: {self.token()}\r\n{fields}\r\n"
        ).encode()

    def raw_answer(self, head: bytes, pieces: int) -> bytes:
        """What the gateway answers to C{head} written in one or more pieces, until it goes quiet."""
        raw = RawClient()
        self.net.attach(raw)
        size = -(-len(head) // pieces)
        for start in range(0, len(head), size):
            raw.transport.write(head[start : start + size])
            self.net.flush()
        return raw.received

    def test_a_sender_writing_before_its_101_is_read_no_further_than_one_splice_read(self) -> None:
        """
        Bytes a waiting sender writes early are held up to one splice read, then reading stops.

        Once a listener accepts, the splice gets what was held and reads the rest: nothing is lost.
        """
        listener = self.listen()
        raw = RawClient()
        self.net.attach(raw)
        raw.transport.write(self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=early"))
        self.net.flush()
        self.assert_early_bytes_held(listener, raw, piece=None)

    def assert_early_bytes_held(self, listener: RecordingClient, raw: RawClient, piece: int | None) -> None:
        """
        A message of one splice read, written by a waiting sender in pieces of C{piece} bytes (or whole).

        Reading stops with it held and nothing answered; the listener's accept brings the 101, reading
        again, and the whole message to the rendezvous.
        """
        limit = int(self.gateway.settings.limits["splice_buffer_bytes"])
        payload = bytes(range(256)) * (limit // 256)
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frame = b"\x82\xff" + struct.pack("!Q", len(payload)) + mask + masked
        step = piece or len(frame)
        for start in range(0, len(frame), step):
            raw.transport.write(frame[start : start + step])
            self.net.flush()
        self.assertTrue(raw.server_transport.reading_paused)
        self.assertEqual(raw.received, b"")
        rendezvous = self.accept_next(listener)
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), raw.received)
        self.assertFalse(raw.server_transport.reading_paused)
        self.assertEqual(rendezvous.messages, [(payload, True)])

    def test_an_autobahn_sender_writing_before_its_101_is_read_no_further_than_one_splice_read(self) -> None:
        """
        The same bound for a sender whose upgrade Autobahn answers (here: it names an C{Origin}).

        Autobahn keeps whatever arrives before the handshake completes; the gateway stops reading once that
        reaches one splice read, and the splice gets all of it when the listener accepts.
        """
        listener = self.listen()
        targets = self.record_requests()
        raw = RawClient()
        self.net.attach(raw)
        target = "/$hc/hyco?sb-hc-action=connect&sb-hc-id=early-autobahn"
        raw.transport.write(self.raw_head(target, "Origin: http://example.org\r\n"))
        self.net.flush()
        self.assertEqual(targets, [target.encode()])  # not the direct path
        self.assert_early_bytes_held(listener, raw, piece=4096)

    def test_a_waiting_autobahn_sender_that_sends_another_head_gets_one_ticket(self) -> None:
        """A second request head on a sender still waiting for its listener is not a second upgrade."""
        listener = self.listen()
        raw = RawClient()
        self.net.attach(raw)
        head = self.raw_head(
            "/$hc/hyco?sb-hc-action=connect&sb-hc-id=twice", "Origin: http://example.org\r\n"
        )
        accepts_before = len(listener.messages)
        for _ in range(5):
            raw.transport.write(head)
            self.net.flush()
        self.assertEqual(len(listener.messages) - accepts_before, 1)
        self.assertEqual(len(self.gateway.hybrid.rendezvous), 1)

    def test_a_refused_listener_waiting_out_its_delay_is_read_no_further_than_one_splice_read(self) -> None:
        """
        A listener refused with a delay (bad token) holds at most one splice read while it waits.

        Further heads on its socket take no more throttle slots, and the slot is freed after the refusal.
        """
        limit = int(self.gateway.settings.limits["splice_buffer_bytes"])
        raw = RawClient()
        self.net.attach(raw, source="10.9.9.9")
        head = (
            f"GET /$hc/hyco?sb-hc-action=listen HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nServiceBusAuthorization: bad\r\n\r\n"
        ).encode()
        raw.transport.write(head)
        self.net.flush()
        throttle = self.gateway.throttle
        self.assertEqual(throttle._pending, {"10.9.9.9": 1})
        raw.transport.write(head * 3)
        self.net.flush()
        for _ in range(2 * limit // 65536):  # the harness delivers while paused: stop writing then
            raw.transport.write(b"z" * 65536)
            self.net.flush()
            if raw.server_transport.reading_paused:
                break
        self.assertTrue(raw.server_transport.reading_paused)
        held = [len(p.data) for p in self.gateway.hybrid_factory.connections if hasattr(p, "data")]
        self.assertEqual(len(held), 1)
        self.assertLess(held[0], limit + 65536 + len(head) * 3)
        self.assertEqual(throttle._pending, {"10.9.9.9": 1})
        self.net.advance(100)
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 401"), raw.received[:40])
        self.assertEqual(throttle._pending, {})

    def test_pairs_are_answered_without_twisted_web_requests(self) -> None:
        """A sender's and a rendezvous upgrade whose head comes in one piece never become a Request."""
        listener = self.listen()
        targets = self.record_requests()
        sender = self.send()
        rendezvous = self.accept_next(listener)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        self.assertEqual(targets, [])
        sender.sendMessage(b"direct", isBinary=True)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"direct", True)])

    def test_head_in_pieces_goes_through_twisted_web(self) -> None:
        """A head that arrives in pieces is parsed by twisted.web and answered by the same code."""
        listener = self.listen()
        targets = self.record_requests()
        raw = RawClient()
        self.net.attach(raw)
        head = self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=pieces")
        raw.transport.write(head[:40])
        self.net.flush()
        raw.transport.write(head[40:])
        self.net.flush()
        self.assertEqual(targets, [b"/$hc/hyco?sb-hc-action=connect&sb-hc-id=pieces"])
        rendezvous = self.accept_next(listener)
        self.assertEqual(rendezvous.status, 101)
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), raw.received)
        self.assertEqual(len(targets), 1)

    def test_refusals_are_the_same_with_or_without_twisted_web(self) -> None:
        """Refused upgrades get the same bytes whether their head came whole (direct) or in pieces."""
        self.listen()
        cases = {
            "unknown entity": self.raw_head("/$hc/nothing?sb-hc-action=connect&sb-hc-id=t1"),
            "bad token": self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=t2").replace(
                b"ServiceBusAuthorization: ", b"ServiceBusAuthorization: x"
            ),
            "unknown rendezvous": self.raw_head("/$hc/hyco?sb-hc-action=accept&sb-hc-id=t3&sb-hc-key=nope"),
            "no upgrade token": self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=t4").replace(
                b"Upgrade: websocket", b"Upgrade: websocket, h2c"
            ),
            "upgrade with a vertical tab": self.raw_head(
                "/$hc/hyco?sb-hc-action=connect&sb-hc-id=t5"
            ).replace(b"Upgrade: websocket", b"Upgrade: websocket\x0b"),
            "no Host": self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=t6").replace(
                f"Host: {HOST}\r\n".encode(), b""
            ),
            "bad key": self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=t7").replace(
                b"dGhlIHNhbXBsZSBub25jZQ==", b"short"
            ),
            "bad header name": self.raw_head("/$hc/hyco?sb-hc-action=connect&sb-hc-id=t8", "X Bad: 1\r\n"),
            "request line too long": self.raw_head(
                "/$hc/hyco?sb-hc-action=connect&sb-hc-id=t9&x=" + "a" * 20000
            ),
        }
        for name, head in cases.items():
            with self.subTest(name):
                # twisted.web's own refusals carry a new tracking id each time, and a Date of the wall clock
                whole = _DATE.sub(b"Date: <date>", _UUID.sub(b"<id>", self.raw_answer(head, 1)))
                in_pieces = _DATE.sub(b"Date: <date>", _UUID.sub(b"<id>", self.raw_answer(head, 3)))
                self.assertTrue(whole.startswith(b"HTTP/1.1 4"), (name, whole))
                self.assertEqual(whole, in_pieces, name)

    def test_idle_timeout_stops_for_a_direct_upgrade(self) -> None:
        """The HTTP idle timeout does not end a pair whose upgrades were answered from their heads."""
        listener = self.listen()
        targets = self.record_requests()
        sender = self.send()
        rendezvous = self.accept_next(listener)
        self.assertEqual(targets, [])
        self.clock.advance(self.gateway.settings.limits["http_idle_timeout"] + 60)
        self.net.flush()
        sender.sendMessage(b"still here", isBinary=True)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"still here", True)])
        self.assertIsNone(sender.closed)

    def test_silent_connection_times_out_as_in_twisted_web(self) -> None:
        """
        A connection that sends nothing is closed after the HTTP idle timeout, with twisted.web's log line.

        Until its first read a connection has no twisted.web channel (L{relay.firstread.FirstRead}); the
        timeout must still be there, and end it as twisted.web would.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        raw = RawClient()
        self.net.attach(raw)
        timeout = self.gateway.settings.limits["http_idle_timeout"]
        self.clock.advance(timeout - 1)
        self.net.flush()
        self.assertFalse(raw.server_transport.disconnecting)
        self.clock.advance(1)
        self.net.flush()
        self.assertTrue(raw.server_transport.disconnecting)
        self.assertTrue(any("Timing out client" in str(e.get("log_format")) for e in events))

    def test_gone_before_first_read_leaves_no_timer(self) -> None:
        """A connection that closes before sending anything leaves no idle timer behind."""
        raw = RawClient()
        self.net.attach(raw)
        before = len(self.clock.getDelayedCalls())
        raw.transport.loseConnection()
        self.net.flush()
        self.assertEqual(len(self.clock.getDelayedCalls()), before - 1)

    def test_other_first_requests_get_twisted_web_from_the_first_byte(self) -> None:
        """A first request that is not a whole C{$hc} upgrade head is twisted.web's, bytes and timer alike."""
        targets = self.record_requests()
        raw = RawClient()
        self.net.attach(raw)
        raw.transport.write(b"GET /$hc/hyco HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        self.net.flush()
        self.assertEqual(targets, [b"/$hc/hyco"])
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 4"), raw.received)
        # The keep-alive connection is now twisted.web's: idle, it times out as twisted.web's do.
        self.clock.advance(self.gateway.settings.limits["http_idle_timeout"])
        self.net.flush()
        self.assertTrue(raw.server_transport.disconnecting)

    def test_invalid_version_refused_as_before(self) -> None:
        """A version Autobahn does not speak is still refused by Autobahn, with its own answer."""
        listener = self.listen()
        raw = RawClient()
        self.net.attach(raw)
        raw.transport.write(
            b"GET /$hc/hyco?sb-hc-action=connect HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 7\r\n\r\n"
        )
        self.net.flush()
        self.assertTrue(
            raw.received.startswith(b"HTTP/1.1 400 WebSocket version 7 not supported"), raw.received
        )
        self.assertIn(b"Sec-WebSocket-Version: 13,8", raw.received)
        self.assertEqual(listener.messages, [])

    def test_listener_vanishes(self) -> None:
        """A listener leg that drops without a close becomes a 1001 close for the sender."""
        _, sender, rendezvous = self.pair()
        rendezvous.transport.abortConnection()
        self.net.advance(6)
        self.assertEqual(sender.closed[1], 1001)  # type: ignore[index]
        self.assertEqual(sender.state, WebSocketProtocol.STATE_CLOSED)

    def test_ping_answered_per_leg(self) -> None:
        """Pings are answered by the gateway on the same leg, not forwarded."""
        _, sender, rendezvous = self.pair()
        pongs = []
        sender.onPong = pongs.append
        rendezvous_pings = []
        rendezvous.onPing = rendezvous_pings.append
        sender.sendPing(b"x")
        self.net.flush()
        self.assertEqual(pongs, [b"x"])
        self.assertEqual(rendezvous_pings, [])

    def test_pings_without_reading_get_no_pongs_past_one_read_queued(self) -> None:
        """A leg whose queue holds a read's worth gets no more pongs (and one log line); later ones again."""
        _, sender, _rendezvous = self.pair()
        pongs: list[bytes] = []
        sender.onPong = pongs.append
        queued = {"bytes": 1 << 30}
        self.patch(bridge, "pending_write_bytes", lambda transport: queued["bytes"])
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for _ in range(100):
            sender.sendPing(b"p")
        self.net.flush()
        self.assertEqual(pongs, [])
        skipped = [e for e in observer if "pongs skipped" in formatEvent(e)]
        self.assertEqual(len(skipped), 1)
        queued["bytes"] = 0
        sender.sendPing(b"q")
        self.net.flush()
        self.assertEqual(pongs, [b"q"])

    def test_control_channel_pings_without_reading_get_no_pongs(self) -> None:
        """The same for a socket Autobahn answers (a listener's control channel)."""
        listener = self.listen()
        pongs: list[bytes] = []
        listener.onPong = pongs.append
        queued = {"bytes": wsdata.PONG_BACKLOG_LIMIT}
        self.patch(wsdata, "pending_write_bytes", lambda transport: queued["bytes"])
        for _ in range(100):
            listener.sendPing(b"p")
        self.net.flush()
        self.assertEqual(pongs, [])
        queued["bytes"] = 0
        listener.sendPing(b"q")
        self.net.flush()
        self.assertEqual(pongs, [b"q"])

    def test_protocol_error_on_a_leg(self) -> None:
        """A leg that sends a reserved opcode is failed with 1002; the other leg is closed with 1001."""
        _, sender, rendezvous = self.pair()
        sender.transport.write(bytes((0x83, 0x80)) + b"mask")
        self.net.advance(6)
        self.assertEqual(rendezvous.closed[1], 1001)  # type: ignore[index]

    def test_reject(self) -> None:
        """A listener's reject fails the sender with its status; the listener's upgrade gets 410."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.accept_next(
            listener, extra="&statusCode=401&statusDescription=Unauthorized%20by%20app"
        )
        self.assertEqual(rendezvous.status, 410)
        self.assertEqual(sender.status, 401)
        self.assertIn("Unauthorized by app", sender.status_line)

    def test_prefixed_reject(self) -> None:
        """.NET's C{sb-hc-statusCode} spelling works as well."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.accept_next(listener, extra="&sb-hc-statusCode=403&sb-hc-statusDescription=No")
        self.assertEqual((rendezvous.status, sender.status), (410, 403))

    def test_plain_reject_on_an_address_its_client_escaped(self) -> None:
        """
        A plain C{statusCode} reject is recognised when the listener's URL parser escaped the sender's query.

        Node's parsers escape characters the sender sent raw (C{'}, and C{{}}|^} in ws 1.x): the address the
        listener dialed no longer started with the one issued, so its reject was taken for an accept, and
        the sender was joined to a rendezvous its listener had refused.
        """
        listener = self.listen()
        sender = self.send(query="name=O'Brien&f={a}|b")
        address = json.loads(listener.messages[-1][0])["accept"]["address"]
        escaped = address.replace("'", "%27").replace("{", "%7B").replace("}", "%7D").replace("|", "%7C")
        self.assertNotEqual(escaped, address)
        rendezvous = self.net.connect(escaped + "&statusCode=401&statusDescription=Not%20you")
        self.assertEqual((rendezvous.status, sender.status), (410, 401))
        self.assertIn("Not you", sender.status_line)

    def test_sender_status_code_param_is_not_a_reject(self) -> None:
        """A sender's own C{statusCode} query parameter does not look like a rejection."""
        listener = self.listen()
        sender = self.send(query="statusCode=500")
        rendezvous = self.accept_next(listener)
        self.assertEqual((rendezvous.status, sender.status), (101, 101))

    def test_subprotocol(self) -> None:
        """The listener's choice among the sender's offers is given to both legs."""
        listener = self.listen()
        sender = self.send(protocols=["chat", "superchat"])
        rendezvous = self.accept_next(listener, protocols=["superchat"])
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        self.assertEqual((sender.response_protocol, rendezvous.response_protocol), ("superchat", "superchat"))

    def test_subprotocol_not_offered(self) -> None:
        """A subprotocol the sender did not offer fails the listener (400) and the sender (502)."""
        listener = self.listen()
        sender = self.send(protocols=["chat"])
        rendezvous = self.accept_next(listener, protocols=["other"])
        self.assertEqual((rendezvous.status, sender.status), (400, 502))

    def test_accept_timeout(self) -> None:
        """A listener that never comes makes the sender fail with 504 after 30 s; the address then is dead."""
        listener = self.listen()
        sender = self.send()
        self.net.advance(29)
        self.assertIsNone(sender.status)
        self.net.advance(2)
        self.assertEqual(sender.status, 504)
        late = self.accept_next(listener)
        self.assertEqual(late.status, 403)

    def test_address_single_use(self) -> None:
        """A second upgrade to the same address is refused with 403."""
        listener = self.listen()
        self.send()
        first = self.accept_next(listener)
        second = self.accept_next(listener)
        self.assertEqual((first.status, second.status), (101, 403))

    def test_accept_address_used_for_a_request_rendezvous(self) -> None:
        """
        An accept address opened with C{sb-hc-action=request} is unknown to that action (403), not a 500.

        The address stays the sender's: the listener can still accept it.
        """
        listener = self.listen()
        sender = self.send()
        accept = json.loads(listener.messages[-1][0])["accept"]
        wrong = self.net.connect(accept["address"].replace("sb-hc-action=accept", "sb-hc-action=request"))
        self.assertEqual(wrong.status, 403)
        self.assertIn("Rendezvous address is unknown", wrong.status_line)
        self.assertEqual(self.flushLoggedErrors(), [])
        rendezvous = self.accept_next(listener)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))

    def test_listener_channel_drops_while_sender_waits(self) -> None:
        """If the chosen listener goes offline before accepting, the sender fails (504) at once."""
        listener = self.listen()
        sender = self.send()
        listener.transport.abortConnection()
        self.net.flush()
        self.assertEqual(sender.status, 504)
        self.assertIn("went away", sender.status_line)

    def test_sender_goes_to_another_listener_when_its_own_drops(self) -> None:
        """
        A sender whose listener goes offline before accepting is announced to another one, same address.

        It used to fail with 504 while another listener was online (a listener restarted in a rolling
        deployment failed every sender it had not yet accepted).
        """
        first = self.listen()
        second = self.listen()
        sender = self.send()
        chosen, other = (
            (first, second) if any("accept" in m[0].decode() for m in first.messages) else (second, first)
        )
        announced = json.loads(chosen.messages[-1][0])["accept"]
        chosen.transport.abortConnection()
        self.net.flush()
        self.assertIsNone(sender.status)
        again = json.loads(other.messages[-1][0])["accept"]
        self.assertEqual(again, announced)
        rendezvous = self.accept_next(other)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))

    def test_sender_leaves_while_waiting(self) -> None:
        """A sender that disconnects before the accept withdraws its address (late accept: 403)."""
        listener = self.listen()
        sender = self.send()
        sender.transport.abortConnection()
        self.net.flush()
        late = self.accept_next(listener)
        self.assertEqual(late.status, 403)

    def test_anonymous_sender(self) -> None:
        """Senders need no token on an HC that does not require client authorization."""
        listener = self.listen("open")
        sender = self.net.connect(f"wss://{HOST}/$hc/open?sb-hc-action=connect")
        rendezvous = self.accept_next(listener)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))

    def test_a_sender_without_an_action(self) -> None:
        """
        An upgrade with no C{sb-hc-action} is a sender's, as Azure takes it (a browser's plain WebSocket).

        The .NET client's own tests connect raw C{ClientWebSocket}s to C{wss://ns/$hc/path?sb-hc-token=..}
        and, on an anonymous hybrid connection, to C{wss://ns/$hc/path}; the gateway refused both (400).
        """
        from urllib.parse import quote

        listener = self.listen()
        sender = self.net.connect(
            f"wss://{HOST}/$hc/hyco/chat?room=1&sb-hc-token={quote(self.token(), safe='')}"
        )
        accept = json.loads(listener.messages[-1][0])["accept"]
        self.assertIn("/$hc/hyco/chat?room=1&sb-hc-action=accept&sb-hc-id=", accept["address"])
        rendezvous = self.net.connect(accept["address"])
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        open_listener = self.listen("open")
        anonymous = self.net.connect(f"wss://{HOST}/$hc/open")
        rendezvous = self.accept_next(open_listener)
        self.assertEqual((anonymous.status, rendezvous.status), (101, 101))
        empty = self.net.connect(f"wss://{HOST}/$hc/open?sb-hc-action=")
        rendezvous = self.accept_next(open_listener)
        self.assertEqual((empty.status, rendezvous.status), (101, 101))

    def test_query_token(self) -> None:
        """A token in C{sb-hc-token} works and is not shown to the listener."""
        from urllib.parse import quote

        listener = self.listen()
        self.net.connect(
            f"wss://{HOST}/$hc/hyco?x=1&sb-hc-action=connect&sb-hc-token={quote(self.token(), safe='')}"
        )
        address = json.loads(listener.messages[-1][0])["accept"]["address"]
        self.assertNotIn("token", address)
        self.assertIn("?x=1&sb-hc-action=accept", address)

    def test_one_pair_failing_does_not_touch_another(self) -> None:
        """Breaking one pair leaves a second pair working."""
        listener = self.listen()
        first = self.send()
        first_rdv = self.accept_next(listener)
        second = self.send()
        second_rdv = self.accept_next(listener)
        first.transport.write(struct.pack("!BB", 0x8F, 0x80) + b"mask")
        self.net.advance(6)
        second.sendMessage(b"still here")
        self.net.flush()
        self.assertEqual(second_rdv.messages, [(b"still here", False)])
        self.assertIsNotNone(first_rdv.closed)
        self.assertIsNone(second.closed)


class ShutdownTests(GatewayTestCase):
    """Stopping the gateway."""

    def test_a_listener_that_drops_instead_of_closing(self) -> None:
        """
        A listener that drops its socket instead of answering the gateway's close leaves no timer behind.

        Autobahn cancels its other timers when the connection is lost, but not the closing handshake's
        (5 s here), which kept the protocol alive and left test reactors unclean.
        """
        listener = self.listen()
        (channel,) = self.gateway.hybrid_factory.connections
        channel.sendClose(1000)
        self.assertIsNotNone(channel.closeHandshakeTimeoutCall)
        listener.transport.abortConnection()
        self.net.flush()
        self.assertIsNone(channel.closeHandshakeTimeoutCall)
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if "_notify_bucket" in repr(call.func)], []
        )

    def test_stop_closes_everything_with_1001(self) -> None:
        """Listeners and joined pairs get 1001, waiting senders 503, and stopping waits for them."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.net.connect(json.loads(listener.messages[-1][0])["accept"]["address"])
        waiting = self.send()
        stopped = self.gateway.stopService()
        self.net.flush()
        self.assertEqual(listener.closed[1], 1001)  # type: ignore[index]
        self.assertEqual(sender.closed[1], 1001)  # type: ignore[index]
        self.assertEqual(rendezvous.closed[1], 1001)  # type: ignore[index]
        self.assertEqual(waiting.status, 503)
        self.successResultOf(stopped)
        self.assertEqual(self.gateway.hybrid_factory.connections, set())


class Ipv6HostTests(GatewayTestCase):
    """
    A client that dialed an IPv6 literal (C{Host: [::1]:9080}) in the development namespace (hosts C{*}).

    Its upgrades are admitted with a token for C{http://[::1]/hyco/}, as its HTTP requests are.
    """

    def namespace_hosts(self) -> tuple[str, ...]:
        return ("*",)

    def upgrade(self, action: str, fields: str = "") -> bytes:
        """The status line the gateway answers, if any, to an upgrade with C{Host: [::1]:9080}."""
        token = make_token("http://[::1]/hyco/", "root", KEY, now=self.clock.seconds())
        raw = RawClient()
        self.net.attach(raw)
        raw.transport.write(
            (
                f"GET /$hc/hyco?sb-hc-action={action} HTTP/1.1\r\nHost: [::1]:9080\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nServiceBusAuthorization: {token}\r\n{fields}\r\n"
            ).encode()
        )
        self.net.advance(2)  # past the delay of a refused listener's answer
        return raw.received.split(b"\r\n", 1)[0]

    def test_listener(self) -> None:
        """A listener's upgrade is admitted (101), not refused with 403 for the token's audience."""
        self.assertEqual(self.upgrade("listen"), b"HTTP/1.1 101 Switching Protocols")

    def test_sender(self) -> None:
        """A sender's upgrade, answered directly or (with an C{Origin}) by Autobahn, is announced."""
        listener = self.listen()
        self.assertEqual(self.upgrade("connect"), b"")  # waiting for the listener's answer
        self.assertEqual(self.upgrade("connect", "Origin: http://app.example\r\n"), b"")
        accepts = [m for m, _ in listener.messages if b'"accept"' in m]
        self.assertEqual(len(accepts), 2)
