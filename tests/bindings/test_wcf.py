"""The $wcf WebSocket endpoint on in-memory transports: admission, registration, delivery, limits, tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from bindings import wcf
from bindings.addressing import ANONYMOUS, new_message_id, read_addressing, read_sender
from bindings.contracts import contract_of
from bindings.control import (
    ACTION_DELIVERED,
    ACTION_REGISTERED,
    ACTION_TOKEN_RENEWED,
    Registration,
    parse_delivered,
    parse_registered,
    register_envelope,
    renew_token_envelope,
)
from bindings.faults import parse_fault
from bindings.outlet import IListenerConnection
from bindings.settings import MULTICAST, ONEWAY
from bindings.soap import Envelope, SoapVersion, parse_envelope
from bindings.wcfroles import ListenerRole, ReadGate
from bindings.wcfsender import SenderRole
from bindings.wcftarget import TargetError, parse_target
from bindings.wsdl import generate_wsdl
from relay.auth import make_token

from ..httpharness import RawHttpClient
from ..recording import RecordingProducer
from .calculator import ICalculator, IChat
from .wcfharness import HOST, KEY, LISTEN_KEY, SEND_KEY, BindingsTestCase, envelope_bytes

CALC = contract_of(ICalculator)
CHAT = contract_of(IChat)
ADD = CALC.operation("Add")
NOTIFY = CALC.operation("Notify")


def envelope(payload: bytes) -> Envelope:
    return parse_envelope(payload, SoapVersion.SOAP12)


def subcode(payload: bytes) -> str:
    env = envelope(payload)
    assert env.is_fault, payload
    return parse_fault(env.body[0], SoapVersion.SOAP12).subcodes[-1][1]


def add_request(a: int = 2, b: int = 3, message_id: str | None = None) -> bytes:
    return envelope_bytes(
        ADD.encode_request(a, b), action=ADD.action, message_id=message_id or new_message_id(), reply_to=True
    )


def reply_for(request: bytes, value: int) -> bytes:
    headers = read_addressing(envelope(request))
    return envelope_bytes(
        ADD.encode_response(value), action=ADD.reply_action, message_id=None, to=None
    ).replace(
        b"</s:Header>",
        f'<wsa:RelatesTo xmlns:wsa="http://www.w3.org/2005/08/addressing">{headers.message_id}</wsa:RelatesTo></s:Header>'.encode(),
    )


class TargetTests(BindingsTestCase):
    """Parsing $wcf URLs."""

    def test_parse(self) -> None:
        """Path, action, token and client id are read; other parameters are ignored."""
        target = parse_target("/$wcf/a/b?sb-wcf-action=listen&sb-wcf-token=T%20x&sb-wcf-id=me&other=1")
        self.assertEqual(
            (target.path, target.action, target.token, target.client_id), ("a/b", "listen", "T x", "me")
        )
        self.assertEqual(parse_target("/%24wcf/x").path, "x")

    def test_bad(self) -> None:
        """A path outside $wcf or a repeated parameter is refused."""
        self.assertRaises(TargetError, parse_target, "/calc?sb-wcf-action=listen")
        self.assertRaises(TargetError, parse_target, "/$wcf/x?sb-wcf-action=listen&sb-wcf-action=send")


class AdmissionTests(BindingsTestCase):
    """Handshake refusals name the cause and a tracking id (spec 3)."""

    def assertRefused(self, client: object, status: int, text: str) -> None:
        self.assertEqual(client.status, status)  # type: ignore[attr-defined]
        self.assertIn(text, client.status_line)  # type: ignore[attr-defined]
        self.assertIn("TrackingId:", client.status_line)  # type: ignore[attr-defined]
        self.assertFalse(client.opened)  # type: ignore[attr-defined]

    def test_subprotocol_required(self) -> None:
        """Without the soap subprotocol: 400."""
        self.assertRefused(self.wcf("calc", "listen", protocols=[]), 400, "subprotocol")

    def test_unknown_action(self) -> None:
        """An unknown sb-wcf-action: 400."""
        self.assertRefused(self.wcf("calc", "connect"), 400, "sb-wcf-action")

    def test_no_token(self) -> None:
        """No token: 401 for listeners and for senders of a token name."""
        self.assertRefused(self.wcf("calc", "listen", token=None), 401, "No token")
        self.assertRefused(self.wcf("calc", "send", token=None), 401, "No token")

    def test_query_token(self) -> None:
        """The sb-wcf-token query parameter carries a token too."""
        client = self.wcf("calc", "send", token=None, query=f"&sb-wcf-token={quote(self.token('calc'))}")
        self.assertTrue(client.opened)

    def test_placeholder_and_real_token_headers(self) -> None:
        """Of two C{ServiceBusAuthorization} headers (a placeholder, then a real token) the valid one admits."""
        for action in ("listen", "send"):
            client = self.net.attach(RawHttpClient())
            client.send(
                (
                    f"GET /$wcf/calc?sb-wcf-action={action} HTTP/1.1\r\nHost: {HOST}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: soap\r\nServiceBusAuthorization: placeholder\r\n"
                    f"ServiceBusAuthorization: {self.token('calc')}\r\n\r\n"
                ).encode("latin-1")
            )
            self.net.flush()
            self.assertEqual(client.data.split(b"\r\n", 1)[0], b"HTTP/1.1 101 Switching Protocols", action)

    def test_rights(self) -> None:
        """A Listen-only token cannot send and a Send-only token cannot listen: 403."""
        listen_only = self.token("calc", "listen-only", LISTEN_KEY)
        send_only = self.token("calc", "send-only", SEND_KEY)
        self.assertRefused(self.wcf("calc", "send", token=listen_only), 403, "Send")
        self.assertRefused(self.wcf("calc", "listen", token=send_only), 403, "Listen")

    def test_anonymous_sender(self) -> None:
        """A client_auth=anonymous name takes senders without a token, but not with a bad one."""
        self.assertTrue(self.wcf("open", "send", token=None).opened)
        self.assertRefused(
            self.wcf("open", "send", token="SharedAccessSignature sr=x&sig=AA%3D%3D&se=1&skn=root"), 401, ""
        )
        self.assertRefused(self.wcf("open", "listen", token=None), 401, "No token")

    def test_wrong_kind(self) -> None:
        """A hybrid connection name is not a binding name: 404."""
        self.assertRefused(self.wcf("hyco", "listen"), 404, "not a SOAP relay binding")
        self.assertRefused(self.wcf("hyco", "send"), 404, "not a SOAP relay binding")
        self.assertRefused(self.wcf("nothing", "send"), 404, "No entity")

    def test_quota(self) -> None:
        """A full name refuses further listeners with 403 QuotaExceeded; the registered one keeps working."""
        first = self.listener("small")
        self.assertEqual(read_addressing(envelope(first.messages[-1][0])).action, ACTION_REGISTERED)
        self.assertRefused(self.wcf("small", "listen"), 403, "Quota exceeded")
        self.assertIsNone(first.closed)


class AccessLogTests(BindingsTestCase):
    """twisted.web's access line for a refused binding request shows no C{sb-wcf-token}."""

    def setUp(self) -> None:
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.service.site.doStart()  # what listening on a port does: the access log goes to the log
        self.addCleanup(self.service.site.doStop)

    def assertNotLogged(self, token: str) -> None:
        signature = token.split("sig=")[1].split("&")[0]
        lines = [formatEvent(event) for event in self.events]
        for secret in (signature, quote(signature, safe=""), quote(quote(signature, safe=""), safe="")):
            self.assertEqual([line for line in lines if secret in line], [])

    def test_wcf_url_without_upgrade(self) -> None:
        """A C{$wcf} URL opened without an upgrade (400) does not log the live token in its query."""
        token = self.token("calc")
        client = self.net.attach(RawHttpClient())
        client.request("GET", "/$wcf/calc?sb-wcf-action=send&sb-wcf-token=" + quote(token, safe=""), {})
        self.net.flush()
        self.assertTrue(client.data.startswith(b"HTTP/1.1 400"), client.data[:80])
        self.assertNotLogged(token)

    def test_soap_post_with_query_token(self) -> None:
        """A refused SOAP POST whose URL carries C{sb-wcf-token} does not log it either."""
        token = self.token("calc")
        client = self.net.attach(RawHttpClient())
        client.request(
            "POST", "/calc?sb-wcf-token=" + quote(token, safe=""), {"Content-Type": "text/xml"}, b"<x/>"
        )
        self.net.flush()
        self.assertTrue(client.data.startswith(b"HTTP/1.1 400"), client.data[:80])
        self.assertNotLogged(token)


class Ipv6HostTests(BindingsTestCase):
    """A client that dialed an IPv6 literal (C{Host: [::1]:9080}) in a wildcard namespace (hosts C{*})."""

    def namespace_hosts(self) -> tuple[str, ...]:
        return ("*",)

    def test_token_for_the_literal(self) -> None:
        """A listener and a sender with a token for C{http://[::1]/calc} are admitted (101), not refused 403."""
        token = make_token("http://[::1]/calc", "root", KEY, now=self.clock.seconds())
        for action in ("listen", "send"):
            client = self.net.attach(RawHttpClient())
            client.send(
                (
                    f"GET /$wcf/calc?sb-wcf-action={action} HTTP/1.1\r\nHost: [::1]:9080\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Sec-WebSocket-Protocol: soap\r\nServiceBusAuthorization: {token}\r\n\r\n"
                ).encode("latin-1")
            )
            self.net.flush()
            self.assertEqual(client.data.split(b"\r\n", 1)[0], b"HTTP/1.1 101 Switching Protocols", action)


class RegistrationTests(BindingsTestCase):
    """r:Register and the listener policy (spec 4, 10.3)."""

    def test_registered(self) -> None:
        """A listener registers its contract and learns the public address of the name."""
        client = self.wcf("calc", "listen")
        message_id = self.register(client)
        answer = envelope(client.messages[-1][0])
        self.assertEqual(read_addressing(answer).relates_to, message_id)
        registered = parse_registered(answer)
        self.assertEqual(
            (registered.address, registered.entity, registered.kind),
            (f"https://{HOST}/calc", "calc", "requestreply"),
        )
        bound = self.bindings.names.existing(self.namespace, self.service.store.get(self.namespace, "calc"))  # type: ignore[arg-type]
        self.assertEqual(len(bound.listeners), 1)  # type: ignore[union-attr]
        self.assertEqual(self.service.registry.count(self.namespace, bound.entity), 1)  # type: ignore[union-attr]

    def test_first_message_must_register(self) -> None:
        """Anything before r:Register is answered with InvalidMessage and the socket is closed with 1008."""
        client = self.wcf("calc", "listen")
        client.sendMessage(add_request(), isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(client.messages[-1][0]), "InvalidMessage")
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]

    def test_register_timeout(self) -> None:
        """A listener that never registers is closed with 1008."""
        client = self.wcf("calc", "listen")
        self.net.advance(31)
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]

    def test_wsdl_required(self) -> None:
        """A request/reply listener must register a WSDL; a multicast one need not."""
        client = self.wcf("calc", "listen")
        self.register(client, interface=None)
        self.assertEqual(subcode(client.messages[-1][0]), "InvalidMessage")
        subscriber = self.wcf("chat", "listen")
        self.register(subscriber, MULTICAST, interface=None)
        self.assertEqual(read_addressing(envelope(subscriber.messages[-1][0])).action, ACTION_REGISTERED)

    def test_two_way_contract_on_oneway_name(self) -> None:
        """A oneway name needs an all one-way contract."""
        client = self.wcf("events", "listen")
        self.register(client, ONEWAY, ICalculator)
        self.assertEqual(subcode(client.messages[-1][0]), "InvalidMessage")
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]

    def test_address_in_use(self) -> None:
        """A listener with another contract or auth policy gets AddressInUse and 1008; the first is untouched."""
        first = self.listener("calc")
        other_contract = self.wcf("calc", "listen")
        self.register(other_contract, interface=IChat)
        self.assertEqual(subcode(other_contract.messages[-1][0]), "AddressInUse")
        self.assertEqual(other_contract.closed[1], 1008)  # type: ignore[index]
        other_auth = self.wcf("calc", "listen")
        self.register(other_auth, client_auth="anonymous")
        self.assertEqual(subcode(other_auth.messages[-1][0]), "AddressInUse")
        self.assertIsNone(first.closed)
        same = self.listener("calc")
        self.assertEqual(read_addressing(envelope(same.messages[-1][0])).action, ACTION_REGISTERED)

    def test_address_in_use_for_other_types(self) -> None:
        """A listener whose contract has the same operations but other types gets AddressInUse too."""
        first = self.listener("calc")
        retyped = generate_wsdl(CALC, "sb://elsewhere/x").replace(
            b'<xsd:element name="a" type="xsd:long"/>', b'<xsd:element name="a" type="xsd:string"/>', 1
        )
        other = self.wcf("calc", "listen")
        other.sendMessage(
            register_envelope(
                Registration(kind="requestreply", wsdl=retyped, discovery="public"), new_message_id()
            ).to_bytes(),
            isBinary=False,
        )
        self.net.flush()
        self.assertEqual(subcode(other.messages[-1][0]), "AddressInUse")
        self.assertIsNone(first.closed)

    def test_dynamic_name(self) -> None:
        """An unknown name is created by its first listener and removed with its last one."""
        store = self.service.store
        client = self.wcf("dyn/room", "listen")
        self.register(client, MULTICAST, IChat, discovery="public", display_name="Room")
        entity = store.get(self.namespace, "dyn/room")
        assert entity is not None
        self.assertEqual(
            (entity.kind, entity.dynamic, entity.settings.discovery.value), ("multicast", True, "public")
        )
        client.sendClose(1000)
        self.net.flush()
        self.assertIsNone(store.get(self.namespace, "dyn/room"))

    def test_shutdown(self) -> None:
        """Stopping the gateway closes listeners and senders with 1001."""
        listener = self.listener("calc")
        sender = self.wcf("calc", "send")
        self.service.stopService()
        self.net.flush()
        self.assertEqual(listener.closed[1], 1001)  # type: ignore[index]
        self.assertEqual(sender.closed[1], 1001)  # type: ignore[index]

    def test_roles_verified(self) -> None:
        """The listener role provides IListenerConnection; the sender role the sender flow."""
        from zope.interface.verify import verifyObject

        from bindings.outlet import ISenderFlow

        self.listener("calc")
        sender = self.wcf("calc", "send")
        self.assertTrue(sender.opened)
        roles = [p.role for p in self.bindings.websocket_factory.connections]
        listener_role = next(r for r in roles if isinstance(r, ListenerRole))
        sender_role = next(r for r in roles if isinstance(r, SenderRole))
        self.assertTrue(verifyObject(IListenerConnection, listener_role))
        self.assertTrue(verifyObject(ISenderFlow, sender_role))


class BusyListenerTests(BindingsTestCase):
    """A listener busy with its calls is not dropped for pongs it has not read."""

    def limits(self) -> dict[str, float]:
        return {"control_ping_interval": 0.5}  # a pong is due within 1 s; "calc" calls time out at 5 s

    def setUp(self) -> None:
        super().setUp()
        self.listen = self.listener("calc")
        self.listen.messages.clear()
        self.sender = self.wcf("calc", "send")

    def test_busy_listener_is_not_dropped_for_its_pong(self) -> None:
        """
        A listener that reads nothing while a call is in flight keeps its connection past the pong timeout.

        A service host at max_concurrent_calls stops reading until a call ends; the gateway dropped it for
        the pong it had not read yet, and every call in flight failed with ListenerGone. Once no call is in
        flight, a listener that still answers no ping is dropped.
        """
        self.sender.sendMessage(add_request(message_id="urn:uuid:busy"), isBinary=False)
        self.net.flush()
        request = self.listen.messages[-1][0]
        self.net.pumps.remove(self.listen.pump)  # the host reads nothing while its call runs
        (server,) = [p for p in self.bindings.websocket_factory.connections if p.role_name == "listener"]
        for _ in range(45):  # 4.5 s: pings every 0.5 s, each pong due within 1 s
            self.net.advance(0.1)
        self.assertEqual(server.state, server.STATE_OPEN)
        self.net.pumps.append(self.listen.pump)
        self.listen.sendMessage(reply_for(request, 5), isBinary=False)
        self.net.flush()
        self.assertEqual(read_addressing(envelope(self.sender.messages[-1][0])).relates_to, "urn:uuid:busy")
        self.net.pumps.remove(self.listen.pump)  # idle now, and still silent: dropped at the pong timeout
        for _ in range(30):
            self.net.advance(0.1)
        self.assertNotEqual(server.state, server.STATE_OPEN)

    def test_heard_listener_is_not_dropped(self) -> None:
        """
        What the gateway hears from a listener since its ping shows it is there, when the pong does not.

        A host busy with one-way calls (whose end the gateway cannot see) reads nothing, the gateway's pings
        included, and sends unsolicited pongs instead; the gateway dropped it for the pong it had not read.
        Once it is silent too, it is dropped.
        """
        before = set(self.bindings.websocket_factory.connections)
        listener = self.listener("events", ONEWAY, IChat)
        self.net.pumps.remove(listener.pump)  # reads nothing, and nothing it writes moves by itself
        (server,) = set(self.bindings.websocket_factory.connections) - before
        for step in range(45):  # 4.5 s: pings every 0.5 s, each pong due within 1 s
            if step % 4 == 0:
                server.dataReceived(b"\x8a\x80\x00\x00\x00\x00")  # an unsolicited pong, masked, empty
            self.net.advance(0.1)
        self.assertEqual(server.state, server.STATE_OPEN)
        for _ in range(30):  # silent now
            self.net.advance(0.1)
        self.assertNotEqual(server.state, server.STATE_OPEN)


class RequestReplyTests(BindingsTestCase):
    """Spec 5.3 over the WebSocket channel."""

    def setUp(self) -> None:
        super().setUp()
        self.listen = self.listener("calc")
        self.listen.messages.clear()
        self.sender = self.wcf("calc", "send")

    def test_round_trip(self) -> None:
        """The listener gets SOAP 1.2 with To = public URL, anonymous ReplyTo and r:Sender; its reply returns."""
        self.sender.sendMessage(add_request(message_id="urn:uuid:1"), isBinary=False)
        self.net.flush()
        request = self.listen.messages[-1][0]
        delivered = envelope(request)
        headers = read_addressing(delivered)
        self.assertEqual(
            (headers.to, headers.action, headers.message_id, headers.reply_to),
            (f"https://{HOST}/calc", ADD.action, "urn:uuid:1", ANONYMOUS),
        )
        self.assertEqual(read_sender(delivered).key_name, "root")  # type: ignore[union-attr]
        self.listen.sendMessage(reply_for(request, 5), isBinary=False)
        self.net.flush()
        answer = envelope(self.sender.messages[-1][0])
        self.assertEqual(read_addressing(answer).relates_to, "urn:uuid:1")
        self.assertEqual(ADD.decode_response(answer.body[0]), 5)

    def test_any_order(self) -> None:
        """Several requests may be in flight; replies return in any order."""
        self.sender.sendMessage(add_request(message_id="urn:uuid:a"), isBinary=False)
        self.sender.sendMessage(add_request(message_id="urn:uuid:b"), isBinary=False)
        self.net.flush()
        first, second = (m[0] for m in self.listen.messages[-2:])
        self.listen.sendMessage(reply_for(second, 2), isBinary=False)
        self.listen.sendMessage(reply_for(first, 1), isBinary=False)
        self.net.flush()
        related = [read_addressing(envelope(m[0])).relates_to for m in self.sender.messages]
        self.assertEqual(related, ["urn:uuid:b", "urn:uuid:a"])

    def test_message_id_required(self) -> None:
        """WebSocket senders must carry a MessageID."""
        self.sender.sendMessage(envelope_bytes(ADD.encode_request(1, 2), action=ADD.action), isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(self.sender.messages[-1][0]), "MessageAddressingHeaderRequired")
        self.assertEqual(self.listen.messages, [])

    def test_unknown_action(self) -> None:
        """An action the contract does not know: ActionNotSupported; nothing reaches the listener."""
        from lxml import etree

        body = etree.Element("{urn:other}Thing")
        self.sender.sendMessage(
            envelope_bytes(body, action="urn:nope", message_id="urn:uuid:x"), isBinary=False
        )
        self.net.flush()
        self.assertEqual(subcode(self.sender.messages[-1][0]), "ActionNotSupported")
        self.assertEqual(read_addressing(envelope(self.sender.messages[-1][0])).relates_to, "urn:uuid:x")
        self.assertEqual(self.listen.messages, [])

    def test_timeout_and_late_reply(self) -> None:
        """No reply within request_timeout: Timeout; the late reply is dropped and logged."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.sender.sendMessage(add_request(message_id="urn:uuid:t"), isBinary=False)
        self.net.advance(5.1)
        self.assertEqual(subcode(self.sender.messages[-1][0]), "Timeout")
        self.listen.sendMessage(reply_for(self.listen.messages[-1][0], 5), isBinary=False)
        self.net.flush()
        self.assertEqual(len(self.sender.messages), 1)
        self.assertTrue(
            any(e.get("relates_to") == "urn:uuid:t" and "dropped" in e["log_format"] for e in events)
        )

    def test_listener_gone(self) -> None:
        """A listener that leaves with requests pending: each caller gets ListenerGone, no retry."""
        second = self.listener("calc")
        self.sender.sendMessage(add_request(message_id="urn:uuid:g"), isBinary=False)
        self.net.flush()
        self.listen.sendClose(1000)
        self.net.flush()
        self.assertEqual(subcode(self.sender.messages[-1][0]), "ListenerGone")
        self.assertEqual(len(second.messages), 1)  # its r:Registered only

    def test_replies_to_a_sender_that_does_not_read(self) -> None:
        """A sender that stops reading is closed with 1008 once its replies back up; the rest are withdrawn."""
        for i in range(50):  # 50 small requests, about 26 KB: one read in production
            self.sender.sendMessage(add_request(message_id=f"urn:uuid:q{i}"), isBinary=False)
        self.net.flush()
        self.assertEqual(len(self.listen.messages), 50)
        # The sender stops reading: its connection is no longer pumped, and what the gateway writes to it
        # stays queued where pending_write_bytes sees it, as it sees Twisted's write buffer in production.
        self.net.pumps.remove(self.sender.pump)
        transport = self.sender.server_transport

        class Queued:
            def __len__(self) -> int:
                return sum(len(chunk) for chunk in transport.stream)

        transport.dataBuffer = Queued()
        pad = b"<p:pad xmlns:p='urn:p'>" + b"x" * (256 * 1024) + b"</p:pad></s:Header>"
        for payload, _ in self.listen.messages:  # an honest service answering with 256 KB replies
            self.listen.sendMessage(reply_for(payload, 5).replace(b"</s:Header>", pad), isBinary=False)
        self.net.flush()
        limit = self.service.store.get(self.namespace, "calc").settings.message_limit  # type: ignore[union-attr]
        bound = wcf.FAULT_BACKLOG_LIMIT + limit + len(pad) + 2048  # the limit, and the reply that passed it
        self.assertLess(len(transport.dataBuffer), bound)  # 13 MB were queued
        (server,) = [p for p in self.bindings.websocket_factory.connections if p.role_name == "sender"]
        self.assertEqual(server.state, server.STATE_CLOSING)  # closed with 1008 "Answers are not being read"
        self.assertEqual(self.bindings.names.under_way(), 0)

    def test_oversized_reply(self) -> None:
        """A reply over the name's limit reaches the caller as MessageTooLarge; the listener is told too."""
        small_listener = self.listener("small")
        sender = self.wcf("small", "send")
        sender.sendMessage(add_request(message_id="urn:uuid:big"), isBinary=False)
        self.net.flush()
        request = small_listener.messages[-1][0]
        padded = reply_for(request, 5).replace(
            b"</s:Header>", b"<p:pad xmlns:p='urn:p'>" + b"x" * 3000 + b"</p:pad></s:Header>"
        )
        small_listener.sendMessage(padded, isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(sender.messages[-1][0]), "MessageTooLarge")
        self.assertEqual(subcode(small_listener.messages[-1][0]), "MessageTooLarge")

    def test_hostile_xml(self) -> None:
        """A DOCTYPE in a frame is refused with InvalidMessage and never reaches the listener."""
        hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>' + add_request()
        self.sender.sendMessage(hostile, isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(self.sender.messages[-1][0]), "InvalidMessage")
        self.assertEqual(self.listen.messages, [])

    def test_action_mismatch(self) -> None:
        """wsa:Action naming another operation than the body's element: ActionMismatch."""
        self.sender.sendMessage(
            envelope_bytes(ADD.encode_request(1, 2), action=NOTIFY.action, message_id="urn:uuid:m"),
            isBinary=False,
        )
        self.net.flush()
        self.assertEqual(subcode(self.sender.messages[-1][0]), "ActionMismatch")

    def test_version_mismatch(self) -> None:
        """A SOAP 1.1 envelope on the WebSocket channel: VersionMismatch."""
        self.sender.sendMessage(
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            isBinary=False,
        )
        self.net.flush()
        env = envelope(self.sender.messages[-1][0])
        self.assertEqual(parse_fault(env.body[0], SoapVersion.SOAP12).code.value, "VersionMismatch")


class DrainTests(BindingsTestCase):
    """With C{drain_timeout}, a SOAP request under way when the gateway stops still gets its reply."""

    def limits(self) -> dict[str, float]:
        """Ten seconds of drain."""
        return {"drain_timeout": 10.0}

    def test_a_request_awaiting_its_reply(self) -> None:
        """
        The listener stays connected until it has replied; then the stop closes it with 1001.

        The drain used to count only hybrid connections' pairs and HTTP requests, so SOAP requests under
        way were cut off at once.
        """
        listener = self.listener("calc")
        sender = self.wcf("calc", "send")
        sender.sendMessage(add_request(message_id="urn:uuid:d"), isBinary=False)
        self.net.flush()
        request = listener.messages[-1][0]
        stopped = self.service.stopService()
        self.net.flush()
        self.assertIsNone(listener.closed)
        listener.sendMessage(reply_for(request, 5), isBinary=False)
        self.net.flush()
        self.assertEqual(ADD.decode_response(envelope(sender.messages[-1][0]).body[0]), 5)
        self.clock.advance(0.2)
        self.net.flush()
        self.assertEqual(listener.closed[1], 1001)  # type: ignore[index]
        self.clock.advance(10)
        self.net.flush()
        self.successResultOf(stopped)

    def test_no_new_message_from_a_sender_while_draining(self) -> None:
        """
        A WebSocket sender's new message during the drain is refused with ServerBusy; what was under way goes on.

        HTTP senders get 503 from the moment the stop begins, but a connected WebSocket sender's messages
        were still routed: a busy one kept the drain from ever emptying, and what it sent last was cut off
        with ListenerGone when the drain timed out.
        """
        listener = self.listener("calc")
        sender = self.wcf("calc", "send")
        sender.sendMessage(add_request(message_id="urn:uuid:d"), isBinary=False)
        self.net.flush()
        request = listener.messages[-1][0]
        before = len(listener.messages)
        stopped = self.service.stopService()
        self.net.flush()
        sender.sendMessage(add_request(message_id="urn:uuid:late"), isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages), before)
        late = envelope(sender.messages[-1][0])
        self.assertEqual(subcode(sender.messages[-1][0]), "ServerBusy")
        self.assertEqual(read_addressing(late).relates_to, "urn:uuid:late")
        listener.sendMessage(reply_for(request, 5), isBinary=False)
        self.net.flush()
        self.assertEqual(ADD.decode_response(envelope(sender.messages[-1][0]).body[0]), 5)
        self.clock.advance(0.2)  # nothing is under way any more: the drain ends before its timeout
        self.net.flush()
        self.assertEqual(listener.closed[1], 1001)  # type: ignore[index]
        self.clock.advance(10)
        self.net.flush()
        self.successResultOf(stopped)


class DatagramTests(BindingsTestCase):
    """One-way and multicast over the WebSocket channel (spec 5.1, 5.2), frames and flow."""

    def test_one_way_delivered(self) -> None:
        """A datagram is answered with r:Delivered, count 1, related to its MessageID."""
        listener = self.listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        say = CHAT.operation("Say")
        sender.sendMessage(
            envelope_bytes(say.encode_request("a", "b"), action=say.action, message_id="urn:uuid:d"),
            isBinary=False,
        )
        self.net.flush()
        answer = envelope(sender.messages[-1][0])
        self.assertEqual(
            (read_addressing(answer).action, read_addressing(answer).relates_to),
            (ACTION_DELIVERED, "urn:uuid:d"),
        )
        self.assertEqual(parse_delivered(answer), 1)
        self.assertIsNone(read_addressing(envelope(listener.messages[-1][0])).reply_to)

    def test_no_listener(self) -> None:
        """Without listeners: NoListener."""
        self.listener("events", ONEWAY, IChat).sendClose(1000)
        self.net.flush()
        sender = self.wcf("events", "send")
        say = CHAT.operation("Say")
        sender.sendMessage(
            envelope_bytes(say.encode_request("a", "b"), action=say.action, message_id="urn:uuid:n"),
            isBinary=False,
        )
        self.net.flush()
        self.assertEqual(subcode(sender.messages[-1][0]), "NoListener")

    def test_multicast_count_and_order(self) -> None:
        """Every subscriber gets every event in order; the publisher learns the count."""
        subscribers = [self.listener("chat", MULTICAST, IChat) for _ in range(3)]
        for s in subscribers:
            s.messages.clear()
        sender = self.wcf("chat", "send")
        say = CHAT.operation("Say")
        for i in range(10):
            sender.sendMessage(
                envelope_bytes(
                    say.encode_request("me", str(i)), action=say.action, message_id=f"urn:uuid:{i}"
                ),
                isBinary=False,
            )
        self.net.flush()
        for s in subscribers:
            texts = [say.decode_request(envelope(m[0]).body[0])["text"] for m in s.messages]
            self.assertEqual(texts, [str(i) for i in range(10)])
        self.assertEqual({parse_delivered(envelope(m[0])) for m in sender.messages}, {3})

    def test_slow_subscriber_dropped(self) -> None:
        """A subscriber whose queue overflows is closed with 1008 and not counted; others keep up."""
        slow, fast = self.listener("chat", MULTICAST, IChat), self.listener("chat", MULTICAST, IChat)
        slow.pump.serverIO.producer.pauseProducing()  # the subscriber's socket is full
        sender = self.wcf("chat", "send")
        say = CHAT.operation("Say")
        for i in range(5):
            sender.sendMessage(
                envelope_bytes(
                    say.encode_request("me", str(i)), action=say.action, message_id=f"urn:uuid:{i}"
                ),
                isBinary=False,
            )
        self.net.flush()
        self.assertEqual(slow.closed[1], 1008)  # type: ignore[index]
        self.assertIn("subscriber queue overflow", slow.closed[2])  # type: ignore[index]
        self.assertEqual(len(fast.messages), 6)
        self.assertEqual([parse_delivered(envelope(m[0])) for m in sender.messages], [2, 2, 2, 1, 1])

    def test_binary_frame(self) -> None:
        """Binary frames close the socket with 1003."""
        sender = self.wcf("calc", "send")
        sender.sendMessage(b"\x00\x01", isBinary=True)
        self.net.flush()
        self.assertEqual(sender.closed[1], 1003)  # type: ignore[index]

    def test_bad_messages_without_reading_the_faults(self) -> None:
        """A listener that draws faults while its queue is full is closed with 1008; none is queued."""
        listener = self.listener()
        listener.sendMessage(b"x", isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(listener.messages[-1][0]), "InvalidMessage")
        answers = len(listener.messages)
        self.patch(wcf, "pending_write_bytes", lambda transport: wcf.FAULT_BACKLOG_LIMIT)
        for _ in range(50):
            listener.sendMessage(b"x", isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages), answers)
        self.assertEqual(listener.closed[1], 1008)  # type: ignore[index]

    def test_repeated_addressing_warnings_are_budgeted(self) -> None:
        """A sender repeating an addressing header with another value in every message: 20 warnings, not 50."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.listener("calc")
        sender = self.wcf("calc", "send")
        extra = (
            b'<wsa:Action xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:other</wsa:Action></s:Header>'
        )
        for _ in range(50):
            request = add_request().replace(b"</s:Header>", extra)
            sender.sendMessage(request, isBinary=False)
        self.net.flush()
        warnings = [e for e in events if "repeated addressing headers" in str(e.get("log_format", ""))]
        self.assertEqual(len(warnings), 20)

    def test_fault_log_lines_are_budgeted(self) -> None:
        """
        A peer that reads its faults gets every one, but its log lines are budgeted: 20, then 10 a second.

        The next line let through says how many were left out; so does the close.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listener()
        answers = len(listener.messages)

        def fault_lines() -> list[dict[str, object]]:
            return [e for e in events if str(e.get("log_format", "")).startswith("fault {subcode}")]

        for _ in range(50):
            listener.sendMessage(b"x", isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages) - answers, 50)
        self.assertTrue(all(subcode(m[0]) == "InvalidMessage" for m in listener.messages[answers:]))
        self.assertEqual(len(fault_lines()), 20)
        self.clock.advance(0.15)  # one more line's worth (and a half)
        listener.sendMessage(b"x", isBinary=False)
        self.net.flush()
        self.assertEqual(len(fault_lines()), 21)
        self.assertEqual(fault_lines()[-1]["unlogged"], 30)
        self.assertIn("were not logged", str(fault_lines()[-1]["log_format"]))
        for _ in range(7):
            listener.sendMessage(b"x", isBinary=False)
        self.net.flush()
        listener.sendClose(1000)
        self.net.flush()
        (summary,) = [e for e in events if "more faults to" in str(e.get("log_format", ""))]
        self.assertEqual((summary["unlogged"], summary["role"]), (7, "listener"))

    def test_too_large(self) -> None:
        """Over the name's limit: MessageTooLarge and the socket stays open; over the kind's cap: 1009."""
        self.listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        sender.sendMessage(b"x" * 5000, isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(sender.messages[-1][0]), "MessageTooLarge")
        self.assertIsNone(sender.closed)
        sender.sendMessage(b"x" * (1024 * 1024 + 1), isBinary=False)
        self.net.flush()
        self.assertEqual(sender.closed[1], 1009)  # type: ignore[index]

    def test_faults_before_parsing_relate_to_the_message(self) -> None:
        """Over the name's limit or nested too deep, the fault still relates to the MessageID (spec 7.1)."""
        from lxml import etree

        self.listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        say = CHAT.operation("Say")
        large = envelope_bytes(
            say.encode_request("a", "x" * 5000), action=say.action, message_id="urn:uuid:l"
        )
        deep = body = etree.Element("{urn:x}d")
        for _ in range(100):
            deep = etree.SubElement(deep, "{urn:x}d")
        nested = envelope_bytes(body, action=say.action, message_id="urn:uuid:n")
        for frame in (large, nested):
            sender.sendMessage(frame, isBinary=False)
        self.net.flush()
        self.assertEqual(
            [(subcode(m[0]), read_addressing(envelope(m[0])).relates_to) for m in sender.messages],
            [("MessageTooLarge", "urn:uuid:l"), ("InvalidMessage", "urn:uuid:n")],
        )

    def test_removed_name_relates_no_listener_to_the_message(self) -> None:
        """A sender whose name was removed since it connected gets NoListener related to its message."""
        listener = self.wcf("dyn/room", "listen")
        self.register(listener, MULTICAST, IChat)
        sender = self.wcf("dyn/room", "send")
        listener.sendClose(1000)
        self.net.flush()
        say = CHAT.operation("Say")
        sender.sendMessage(
            envelope_bytes(say.encode_request("a", "b"), action=say.action, message_id="urn:uuid:r"),
            isBinary=False,
        )
        self.net.flush()
        answer = sender.messages[-1][0]
        self.assertEqual(
            (subcode(answer), read_addressing(envelope(answer)).relates_to), ("NoListener", "urn:uuid:r")
        )

    def test_busy_listener(self) -> None:
        """A listener whose queue stays full: the sender is held back, then gets ServerBusy."""
        listener = self.listener("events", ONEWAY, IChat)
        outlet = listener.pump.serverIO.producer
        outlet.pauseProducing()
        sender = self.wcf("events", "send")
        say = CHAT.operation("Say")
        for i in range(3):
            sender.sendMessage(
                envelope_bytes(
                    say.encode_request("me", str(i)), action=say.action, message_id=f"urn:uuid:{i}"
                ),
                isBinary=False,
            )
        self.net.flush()
        self.assertEqual(sender.messages, [])
        self.net.advance(2.1)
        self.assertEqual(subcode(sender.messages[-1][0]), "ServerBusy")
        outlet.resumeProducing()
        self.net.flush()
        self.assertEqual(
            [read_addressing(envelope(m[0])).action for m in sender.messages[1:]], [ACTION_DELIVERED] * 2
        )

    def test_held_back_sender_is_handed_no_more_of_its_read(self) -> None:
        """The frames a sender sent after the message that held it back wait until it is let go, in order."""
        listener, outlet = self.paused_listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        say = CHAT.operation("Say")
        for i in range(6):  # one read: two fill the queue, the third holds the sender back
            sender.sendMessage(
                envelope_bytes(
                    say.encode_request("me", str(i)), action=say.action, message_id=f"urn:uuid:{i}"
                ),
                isBinary=False,
            )
        self.net.flush()
        self.assertEqual((outlet.queued_messages, outlet.waiting_senders), (2, 1))
        self.assertEqual(sender.messages, [])
        outlet.resumeProducing()
        self.net.advance(0)
        self.assertEqual(
            [read_addressing(envelope(m[0])).message_id for m in listener.messages[-6:]],
            [f"urn:uuid:{i}" for i in range(6)],
        )
        self.assertEqual(
            [read_addressing(envelope(m[0])).action for m in sender.messages], [ACTION_DELIVERED] * 6
        )


class PerMessageLogLineTests(BindingsTestCase):
    """A peer that sends a thousand messages within a second gets a budget of log lines, not a thousand."""

    BUDGET = 20 + 10 + 5  # a burst of 20, 10 a second, some slack

    def count_lines(self, client: Any, payloads: list[bytes]) -> int:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for payload in payloads:
            client.sendMessage(payload, isBinary=False)
        self.net.flush()
        self.assertIsNone(client.closed)
        return len([e for e in events if str(e.get("log_namespace", "")).startswith(("bindings", "relay"))])

    def say(self, message_id: str) -> bytes:
        say = CHAT.operation("Say")
        return envelope_bytes(say.encode_request("a", "b"), action=say.action, message_id=message_id)

    def test_sender_soap11_version_mismatch(self) -> None:
        """A sender's SOAP 1.1 envelopes each get a counted VersionMismatch fault, their lines budgeted."""
        self.listener("calc")
        sender = self.wcf("calc", "send")
        soap11 = b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>'
        self.assertLessEqual(self.count_lines(sender, [soap11] * 1000), self.BUDGET)
        self.assertEqual(len(sender.messages), 1000)
        self.assertEqual(
            envelope(sender.messages[-1][0]).body[0].tag, "{http://www.w3.org/2003/05/soap-envelope}Fault"
        )
        self.assertEqual(self.bindings.instruments.faults.labels("calc", "VersionMismatch").value, 1000)

    def test_sender_version_mismatches_without_reading(self) -> None:
        """A sender that draws VersionMismatch faults without reading them is closed with 1008."""
        sender = self.wcf("calc", "send")
        self.patch(wcf, "pending_write_bytes", lambda transport: wcf.FAULT_BACKLOG_LIMIT)
        sender.sendMessage(
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            isBinary=False,
        )
        self.net.flush()
        self.assertEqual(sender.messages, [])
        self.assertEqual(sender.closed[1], 1008)  # type: ignore[index]

    def test_listener_renew_token_flood(self) -> None:
        """A listener renewing its token a thousand times gets every answer and a budget of lines."""
        listener = self.listener("calc")
        answers = len(listener.messages)
        token = self.token("calc")
        payloads = [renew_token_envelope(token, f"urn:uuid:r{i}").to_bytes() for i in range(1000)]
        self.assertLessEqual(self.count_lines(listener, payloads), self.BUDGET)
        self.assertEqual(len(listener.messages) - answers, 1000)

    def test_subscriber_sending_messages(self) -> None:
        """A subscriber's own messages are dropped with a budget of lines."""
        subscriber = self.listener("chat", MULTICAST, IChat)
        self.assertLessEqual(self.count_lines(subscriber, [self.say("urn:uuid:s")] * 1000), self.BUDGET)

    def test_oneway_listener_replying(self) -> None:
        """A one-way listener's replies are dropped with a budget of lines."""
        listener = self.listener("events", ONEWAY, IChat)
        self.assertLessEqual(self.count_lines(listener, [self.say("urn:uuid:o")] * 1000), self.BUDGET)

    def test_requestreply_listener_unmatched_replies(self) -> None:
        """Replies that match nothing are dropped with a budget of lines; the close says how many were not."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listener("calc")
        payloads = [reply_for(add_request(message_id=new_message_id()), 1) for _ in range(1000)]
        self.assertLessEqual(self.count_lines(listener, payloads), self.BUDGET)
        dropped = [e for e in events if str(e.get("log_format", "")).startswith("dropped a reply")]
        self.assertEqual(len(dropped), 20)
        self.clock.advance(0.15)
        listener.sendMessage(payloads[0], isBinary=False)
        self.net.flush()
        self.assertEqual(events[-1]["unlogged"], 980)
        for payload in payloads[:7]:
            listener.sendMessage(payload, isBinary=False)
        self.net.flush()
        listener.sendClose(1000)
        self.net.flush()
        (summary,) = [e for e in events if "more lines about messages from" in str(e.get("log_format", ""))]
        self.assertEqual((summary["unlogged"], summary["role"]), (7, "listener"))


class TokenTests(BindingsTestCase):
    """Token expiry and r:RenewToken (spec 4)."""

    def test_expiry_closes(self) -> None:
        """A listener whose token lapses is closed with 1008."""
        client = self.wcf("calc", "listen", token=self.token("calc", ttl=60))
        self.register(client)
        self.net.advance(61)
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]
        self.assertIn("Token expired", client.closed[2])  # type: ignore[index]

    def test_renewal_keeps_open(self) -> None:
        """Renewing before expiry moves it; an invalid renewal is refused and the old expiry stays."""
        client = self.wcf("calc", "listen", token=self.token("calc", ttl=60))
        self.register(client)
        self.net.advance(50)
        client.sendMessage(
            renew_token_envelope(self.token("calc", ttl=600), "urn:uuid:r").to_bytes(), isBinary=False
        )
        self.net.advance(20)
        self.assertIsNone(client.closed)
        self.assertEqual(read_addressing(envelope(client.messages[-1][0])).action, ACTION_TOKEN_RENEWED)
        client.sendMessage(
            renew_token_envelope("SharedAccessSignature bogus", "urn:uuid:s").to_bytes(), isBinary=False
        )
        self.net.flush()
        self.assertEqual(subcode(client.messages[-1][0]), "Unauthorized")
        self.net.advance(600)
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]

    def test_renewals_without_reading_the_answers(self) -> None:
        """
        A listener that keeps renewing its token without reading the answers is closed with 1008.

        A listener is read however full its socket is, and every r:TokenRenewed used to be queued for it:
        one that sent renewals without reading made the gateway buffer answers without end.
        """
        client = self.listener()
        answers = len(client.messages)
        limit = self.bindings.names.store.get(self.namespace, "calc").settings.message_limit  # type: ignore[union-attr]
        self.patch(wcf, "pending_write_bytes", lambda transport: wcf.FAULT_BACKLOG_LIMIT + limit)
        for i in range(50):
            client.sendMessage(
                renew_token_envelope(self.token("calc"), f"urn:uuid:r{i}").to_bytes(), isBinary=False
            )
        self.net.flush()
        self.assertEqual(len(client.messages), answers)
        self.assertEqual(client.closed[1], 1008)  # type: ignore[index]

    def test_renewal_answered_behind_a_large_message(self) -> None:
        """A renewal is answered while one message as large as the name allows still waits to be read."""
        client = self.listener()
        self.patch(wcf, "pending_write_bytes", lambda transport: wcf.FAULT_BACKLOG_LIMIT)
        client.sendMessage(renew_token_envelope(self.token("calc"), "urn:uuid:r").to_bytes(), isBinary=False)
        self.net.flush()
        self.assertIsNone(client.closed)
        self.assertEqual(read_addressing(envelope(client.messages[-1][0])).action, ACTION_TOKEN_RENEWED)

    def test_sender_expiry(self) -> None:
        """Senders are closed with 1008 on expiry too."""
        sender = self.wcf("calc", "send", token=self.token("calc", ttl=30))
        self.net.advance(31)
        self.assertEqual(sender.closed[1], 1008)  # type: ignore[index]


class ReadGateTests(BindingsTestCase):
    """Counted pauses."""

    def test_counts(self) -> None:
        """The transport is paused by the first hold and resumed by the last release."""
        transport = RecordingProducer()
        gate = ReadGate(transport)
        gate.hold()
        gate.hold()
        gate.release()
        gate.release()
        gate.release()
        self.assertEqual(transport.calls, ["pause", "resume"])
