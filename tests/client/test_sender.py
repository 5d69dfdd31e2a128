"""Tests for L{relay.client.sender.HybridConnectionClient}."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from relay.auth import Grant, Rights, make_token, validate_token
from relay.client import (
    AuthorizationError,
    ConnectError,
    EndpointNotFoundError,
    HybridConnectionClient,
    HybridConnectionListener,
    Reject,
    SharedAccessSignatureTokenProvider,
    WebSocketOptions,
)

from .fakes import ROOT_KEY, ROOT_KEY_NAME, FakeRelay, FakeRelayTestCase


class SenderTestCase(FakeRelayTestCase):
    def listen(self, **kwargs: Any) -> HybridConnectionListener:
        listener = HybridConnectionListener(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor, **kwargs
        )
        d = listener.open()
        self.network.flush()
        self.successResultOf(d)
        self.addCleanup(listener.close)
        return listener

    def client(
        self, tokens: Any = None, endpoint: str = "ws://relay.test:80", **kwargs: Any
    ) -> HybridConnectionClient:
        return HybridConnectionClient(
            endpoint, "hyco", tokens or self.root_tokens(), reactor=self.reactor, **kwargs
        )

    def connect(self, client: HybridConnectionClient, **kwargs: Any) -> Deferred[Any]:
        d = client.connect(**kwargs)
        self.network.flush()
        return d


class ConnectUrlTests(SenderTestCase, SynchronousTestCase):
    def test_url_headers_and_tracking_id(self) -> None:
        """
        The upgrade carries suffix, query, action, tracking id and a Send token in the header.

        Extra headers, suffix and query reach the listener.
        """
        listener = self.listen()
        connection = self.successResultOf(
            self.connect(
                self.client(),
                suffix="chat",
                query={"room": "1"},
                headers={"X-App": "v"},
                subprotocols=["chat"],
                connection_id="trace-1",
            )
        )
        upgrade = self.relay.upgrades[-2]
        self.assertEqual(upgrade.action, "connect")
        self.assertEqual((upgrade.path, upgrade.query), ("/$hc/hyco/chat", "room=1"))
        self.assertEqual(upgrade.params["sb-hc-id"], "trace-1")
        self.assertNotIn("sb-hc-token", upgrade.params)
        decision = validate_token(
            upgrade.headers["servicebusauthorization"],
            rules=self.relay.rules,
            namespace_hosts=["relay.test"],
            entity_path="hyco",
            needed=Rights.SEND,
            now=self.reactor.seconds(),
        )
        self.assertIsInstance(decision, Grant)
        accepted = self.successResultOf(listener.accept_connection())
        assert accepted is not None and accepted.context is not None
        self.assertEqual(accepted.request_headers["x-app"], "v")
        self.assertEqual((accepted.context.suffix, accepted.context.query), ("/chat", "room=1"))
        self.assertEqual((connection.tracking_id, accepted.tracking_id), ("trace-1", "trace-1"))
        self.assertEqual((connection.subprotocol, accepted.subprotocol), ("chat", "chat"))

    def test_default_tracking_id_is_a_guid(self) -> None:
        """Without a caller's id, each connection gets a fresh GUID, sent as C{sb-hc-id}."""
        self.listen()
        client = self.client()
        first = self.successResultOf(self.connect(client))
        second = self.successResultOf(self.connect(client))
        self.assertNotEqual(first.tracking_id, second.tracking_id)
        uuid.UUID(first.tracking_id)
        self.assertEqual(self.relay.accepts[0].id, first.tracking_id)

    def test_anonymous(self) -> None:
        """Without a token provider no token is sent; relays requiring one answer 401."""
        self.listen()
        client = HybridConnectionClient("ws://relay.test:80", "hyco", reactor=self.reactor)
        error = self.failureResultOf(self.connect(client), AuthorizationError).value
        self.assertEqual(error.status_code, 401)
        self.assertNotIn("servicebusauthorization", self.relay.upgrades[-1].headers)
        self.relay.anonymous_senders = True
        self.successResultOf(self.connect(client))

    def test_user_agent_replaces_the_clients_own(self) -> None:
        """A caller's C{User-Agent} is the one sent (Autobahn would add its own beside it) and reaches the listener."""
        listener = self.listen()
        self.successResultOf(self.connect(self.client(), headers={"user-agent": "mine/1.0"}))
        connect = [u for u in self.relay.upgrades if u.action == "connect"][-1]
        self.assertEqual(connect.headers["user-agent"], "mine/1.0")
        accepted = self.successResultOf(listener.accept_connection())
        assert accepted is not None
        self.assertEqual(accepted.request_headers["user-agent"], "mine/1.0")
        self.successResultOf(self.connect(self.client()))
        connect = [u for u in self.relay.upgrades if u.action == "connect"][-1]
        self.assertEqual(connect.headers["user-agent"], WebSocketOptions().user_agent)

    def test_reserved_headers_are_refused(self) -> None:
        """Headers owned by the handshake, the token header and header injection are refused."""
        client = self.client()
        for headers in (
            {"Sec-WebSocket-Protocol": "x"},
            {"servicebusauthorization": "x"},
            {"Host": "h"},
            {"X-A": "1\r\nX-B: 2"},
            {"Bad:Name": "v"},
        ):
            self.assertRaises(ValueError, client.connect, headers=headers)
        self.assertRaises(ValueError, client.connect, query="sb-hc-action=listen")

    def test_headers_and_subprotocols_that_cannot_be_sent_are_refused(self) -> None:
        """
        A header name that is no HTTP token, a value with a lone surrogate, a subprotocol that is no token.

        Each is a C{ValueError} at once. A lone surrogate made Autobahn's handshake fail to encode, with
        a traceback logged, and C{connect} hung until the open timeout (60 s), then failed as a timeout;
        a subprotocol C{"a,b"} was offered as two and failed as a mismatch, C{"a b"} reached the relay.
        """
        client = self.client()
        for headers in ({"X-A": "\ud800"}, {"X App": "1"}, {"X(A)": "1"}, {"": "1"}):
            with self.subTest(headers=headers):
                self.assertRaises(ValueError, client.connect, headers=headers)
        for subprotocols in (["\ud800"], ["a,b"], ["a b"], [""]):
            with self.subTest(subprotocols=subprotocols):
                self.assertRaises(ValueError, client.connect, subprotocols=subprotocols)
        self.assertEqual(self.relay.upgrades, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_development_connection_string(self) -> None:
        """C{UseDevelopmentEmulator=true} connection strings dial plain C{ws://} with their own key."""
        self.listen()
        client = HybridConnectionClient(
            f"Endpoint=sb://relay.test:80/;SharedAccessKeyName={ROOT_KEY_NAME};SharedAccessKey={ROOT_KEY};"
            "UseDevelopmentEmulator=true",
            "hyco",
            reactor=self.reactor,
        )
        self.reactor.advance(100)
        self.successResultOf(self.connect(client))

    def test_tokens_stay_out_of_logs(self) -> None:
        """Log events name tracking ids, never the token."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.listen()
        self.successResultOf(self.connect(self.client(), connection_id="traced"))
        text = repr(list(observer))
        self.assertNotIn("SharedAccessSignature", text)
        self.assertNotIn("sig=", text)
        self.assertIn("traced", [event.get("connection_id") for event in observer])


class ConnectFailureTests(SenderTestCase, SynchronousTestCase):
    def test_no_listener(self) -> None:
        """With nobody listening the relay answers 404, raised as L{EndpointNotFoundError}."""
        error = self.failureResultOf(self.connect(self.client()), EndpointNotFoundError).value
        self.assertEqual((error.status_code, error.reason), (404, "No listener"))
        self.assertEqual(str(error), "404 No listener")

    def test_wrong_scope(self) -> None:
        """A genuine token for another entity is refused with 403."""
        self.listen()
        token = make_token("http://relay.test/team/app", ROOT_KEY_NAME, ROOT_KEY, now=self.reactor.seconds())
        client = self.client(SharedAccessSignatureTokenProvider(token))
        self.assertEqual(
            self.failureResultOf(self.connect(client), AuthorizationError).value.status_code, 403
        )

    def test_listener_rejects(self) -> None:
        """A listener's rejection reaches the sender with the listener's status and description."""

        def no(_: Any) -> bool:
            raise Reject(451, "Not here")

        self.listen(accept_handler=no)
        error = self.failureResultOf(self.connect(self.client()), ConnectError).value
        self.assertEqual((error.status_code, error.reason), (451, "Not here"))

    def test_no_accept_in_time(self) -> None:
        """When no listener accepts within 30 s the relay answers 504."""
        self.listen(accept_handler=lambda _: Deferred())
        d = self.connect(self.client())
        self.assertNoResult(d)
        self.network.advance(30)
        self.assertEqual(self.failureResultOf(d, ConnectError).value.status_code, 504)

    def test_connection_refused(self) -> None:
        """With nothing on the port, Twisted's connection error surfaces as is."""
        d = self.connect(self.client(endpoint="ws://relay.test:81"))
        self.network.advance(1)
        self.failureResultOf(d, ConnectionRefusedError)

    def test_handshake_timeout(self) -> None:
        """A server that never answers the upgrade fails the connect after C{open_timeout}, no status."""
        self.network.serve(82, Factory.forProtocol(Protocol))
        d = self.connect(self.client(endpoint="ws://relay.test:82", options=WebSocketOptions(open_timeout=5)))
        self.network.advance(4)
        self.assertNoResult(d)
        self.network.advance(2)
        error = self.failureResultOf(d, ConnectError).value
        self.assertIsNone(error.status_code)
        self.assertIn("timeout", error.reason)

    def test_token_provider_that_never_answers(self) -> None:
        """A token provider that never answers fails the connect after C{open_timeout}; its call is cancelled."""
        cancelled: list[bool] = []

        class Hung:
            def get_token(self, audience: str, ttl: float) -> Deferred[str]:
                return Deferred(lambda _: cancelled.append(True))

        client = self.client(tokens=Hung(), options=WebSocketOptions(open_timeout=5))
        d = self.connect(client)
        self.network.advance(4)
        self.assertNoResult(d)
        self.network.advance(2)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.relay.upgrades, [], "nothing was dialled")

    def test_subsecond_open_timeout(self) -> None:
        """An C{open_timeout} under a second is kept as it is (it was truncated to 0: every connect failed)."""
        from twisted.internet.testing import MemoryReactorClock

        from relay.client.protocol import endpoint_for

        reactor = MemoryReactorClock()
        endpoint_for(reactor, "ws://127.0.0.1:80/x", WebSocketOptions(open_timeout=0.5)).connect(
            Factory.forProtocol(Protocol)
        )
        reactor.advance(0)
        self.assertEqual(reactor.tcpClients[0][3], 0.5)

    def test_status_must_be_three_digits(self) -> None:
        """
        A refusal whose status is not three ASCII digits carries no status.

        C{int()} alone read C{"+404"}, C{"4_04"} and C{"0404"} as 404: a listener given up for good.
        """
        for status in (b"+404", b"4_04", b"0404"):
            with self.subTest(status=status):
                self.network.serve(83, Factory.forProtocol(lambda status=status: Answer(status)))
                d = self.connect(self.client(endpoint="ws://relay.test:83"))
                error = self.failureResultOf(d, ConnectError).value
                self.assertNotIsInstance(error, EndpointNotFoundError)
                self.assertIsNone(error.status_code)
        self.network.serve(83, Factory.forProtocol(lambda: Answer(b"404")))
        d = self.connect(self.client(endpoint="ws://relay.test:83"))
        self.assertEqual(self.failureResultOf(d, EndpointNotFoundError).value.reason, "Not Found")

    def test_latin1_refusal_keeps_its_status(self) -> None:
        """
        A refusal that is not UTF-8 (a latin-1 reason phrase) still carries its status.

        Autobahn decoded the answer as UTF-8 for a debug line: L{UnicodeDecodeError} escaped from
        C{dataReceived}, and the attempt failed as a dropped connection without a status.
        """
        self.network.serve(83, Factory.forProtocol(lambda: Answer(b"404", b"N\xe3o encontrado")))
        d = self.connect(self.client(endpoint="ws://relay.test:83"))
        error = self.failureResultOf(d, EndpointNotFoundError).value
        self.assertEqual((error.status_code, error.reason), (404, "N\u00e3o encontrado"))
        self.network.serve(83, Factory.forProtocol(lambda: Answer(b"\xb2")))
        d = self.connect(self.client(endpoint="ws://relay.test:83"))
        self.assertIsNone(self.failureResultOf(d, ConnectError).value.status_code)

    def test_cancel(self) -> None:
        """Cancelling a pending connect abandons the upgrade; the relay sees the sender leave."""
        self.listen(accept_handler=lambda _: Deferred())
        d = self.connect(self.client())
        d.cancel()
        self.network.flush()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(all(t.disconnected for t in self.network.transports[1:]))


class Answer(Protocol):
    """A server that answers any upgrade with C{HTTP/1.1 <status> <phrase>}."""

    def __init__(self, status: bytes, phrase: bytes = b"Not Found") -> None:
        self.status = status
        self.phrase = phrase

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %s %s\r\nContent-Length: 0\r\n\r\n" % (self.status, self.phrase))


def development_ca_pem() -> bytes:
    """A throw-away self-signed CA certificate, as a development deployment would use."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-ca")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class TlsTests(FakeRelayTestCase, SynchronousTestCase):
    def test_wss_uses_tls_for_the_url_host(self) -> None:
        """C{sb://} endpoints dial port 443 with TLS settings made for the URL's host."""
        hosts: list[str] = []

        def tls(host: str) -> IOpenSSLClientConnectionCreator:
            hosts.append(host)
            return optionsForClientTLS(host)

        client = HybridConnectionClient(
            "sb://relay.test",
            "hyco",
            self.root_tokens(),
            reactor=self.reactor,
            options=WebSocketOptions(tls_options=tls),
        )
        d = client.connect()
        self.reactor.advance(0)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, hosts), ("127.0.0.1", 443, ["relay.test"]))
        self.assertIsInstance(factory._wrappedFactory, TLSMemoryBIOFactory)
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_trust_root(self) -> None:
        """A trust root (a development CA) becomes part of the default TLS settings."""
        creator = WebSocketOptions(trust_root=Certificate.loadPEM(development_ca_pem())).tls_creator(
            "relay.test"
        )
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))


class FakeRelayPortTests(SynchronousTestCase):
    def test_ws_base(self) -> None:
        """The fake relay hands out addresses on its own host and port (sanity check for the suite)."""
        from twisted.internet.testing import MemoryReactorClock

        self.assertEqual(FakeRelay(MemoryReactorClock(), port=9080).ws_base, "ws://relay.test:9080")
