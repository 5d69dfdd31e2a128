"""
A fake relay that speaks the public hybrid connections protocol, for the client's tests.

Everything runs on one L{MemoryReactorClock}: the client dials through C{HostnameEndpoint} as in
production, the connection lands in C{reactor.tcpClients}, and L{Network} (in C{network}) joins it to
a server-side protocol with L{twisted.test.iosim}. L{FakeRelay} is a small Autobahn server implementing the parts of
the hybrid connections protocol the client relies on (spec sections 2-5, 7): listen, connect, accept,
reject (410), renewToken, token expiry (1008), message relaying. It is verified against the spec,
independently of the client, in C{test_fakes}.

Simplifications, each irrelevant to the client: one namespace, no HTTP relaying, the first live
listener gets every sender, and a forwarded close completes each leg's handshake independently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from typing_extensions import override

from relay.auth import Denial, Grant, Rights, SharedAccessRule, validate_any
from relay.hybrid.addressing import hc_path, rendezvous_address, split_target
from relay.hybrid.messages import Accept, RemoteEndpoint, decode_object, parse_renew_token

from .network import Network

ROOT_KEY_NAME = "root"
ROOT_KEY = "root-secret"
SEND_KEY_NAME = "send-only"
SEND_KEY = "send-secret"


@dataclass
class Upgrade:
    """One upgrade request the fake relay received, as the relay sees it."""

    action: str | None
    path: str
    query: str
    params: dict[str, str]
    headers: dict[str, str]
    protocols: list[str]
    time: float = 0.0


@dataclass
class _Pending:
    sender: FakeRelayProtocol
    answer: Deferred[Any]
    offered: list[str]
    timeout: Any = None


@dataclass
class ListenerRecord:
    """A registered control channel."""

    protocol: FakeRelayProtocol
    entity: str
    expiry_call: Any = None
    renewals: list[str] = field(default_factory=list)


class FakeRelayProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    """One server-side connection of the fake relay; its role is decided in C{onConnect}."""

    relay: FakeRelay
    kind: str = "unknown"
    entity: str = ""
    grant: Grant | None = None
    peer_leg: FakeRelayProtocol | None = None

    @override
    def onConnect(self, request: Any) -> Any:
        return self.factory.relay.upgrade(self, request)

    @override
    def onOpen(self) -> None:
        self.factory.relay.opened(self)

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.relay.message(self, payload, isBinary)

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.relay.closed(self, wasClean, code, reason)

    def relay_close(self, code: int, reason: str) -> None:
        """Close with any code (Autobahn's C{sendClose} only allows 1000 and 3000-4999)."""
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)


class FakeRelay:
    """
    A relay namespace C{relay.test} with hybrid connections, served as plain C{ws://} on one port.

    @ivar upgrades: every upgrade request received, in order.
    @ivar accepts: every C{accept} command sent to a listener.
    @ivar control_messages: JSON objects listeners sent on their control channels.
    @ivar deny: when set, called with each L{Upgrade}; returning C{(status, reason)} refuses it.
    @ivar sender_results: per connection id, the status a sender's upgrade was answered with.
    @ivar listener_closes: how registered control channels ended: C{(clean, code, reason)}.
    """

    def __init__(
        self,
        reactor: MemoryReactorClock,
        *,
        host: str = "relay.test",
        port: int = 80,
        entities: tuple[str, ...] = ("hyco", "team/app"),
        anonymous_senders: bool = False,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.entities = entities
        self.anonymous_senders = anonymous_senders
        self.rules = [
            SharedAccessRule(ROOT_KEY_NAME, ROOT_KEY, Rights.MANAGE),
            SharedAccessRule(SEND_KEY_NAME, SEND_KEY, Rights.SEND),
        ]
        self.upgrades: list[Upgrade] = []
        self.accepts: list[Accept] = []
        self.control_messages: list[Any] = []
        self.listeners: list[ListenerRecord] = []
        self.pending: dict[str, _Pending] = {}
        self.deny: Any = None
        self.sender_results: dict[str, int] = {}
        self.listener_closes: list[tuple[bool, int | None, str | None]] = []

    @property
    def ws_base(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def factory(self) -> WebSocketServerFactory:
        factory = WebSocketServerFactory(url=None, reactor=self.reactor)
        factory.protocol = FakeRelayProtocol
        factory.relay = self
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=5)
        return factory

    # -- upgrades ----------------------------------------------------------------------------

    def upgrade(self, protocol: FakeRelayProtocol, request: Any) -> Any:
        target = split_target(protocol.http_request_uri)
        upgrade = Upgrade(
            action=target.param("action"),
            path=target.path,
            query=target.query,
            params=dict(target.relay_params),
            headers=dict(request.headers),
            protocols=list(request.protocols),
            time=self.reactor.seconds(),
        )
        self.upgrades.append(upgrade)
        if self.deny is not None:
            denial = self.deny(upgrade)
            if denial is not None:
                raise ConnectionDeny(*denial)
        below = hc_path(target.path)
        entity, _suffix = self._match(below or "")
        if below is None or entity is None:
            raise ConnectionDeny(404, "Entity not found")
        protocol.entity = entity
        if upgrade.action == "listen":
            protocol.grant = self._authorize(upgrade, entity, Rights.LISTEN)
            protocol.kind = "listener"
            return None
        if upgrade.action == "connect":
            if not self.anonymous_senders:
                self._authorize(upgrade, entity, Rights.SEND)
            return self._start_rendezvous(protocol, upgrade, entity, below or "")
        if upgrade.action == "accept":
            return self._finish_rendezvous(protocol, upgrade)
        raise ConnectionDeny(400, "Unknown sb-hc-action")

    def _match(self, below: str) -> tuple[str | None, str]:
        segments = [s for s in below.split("/") if s]
        for entity in sorted(self.entities, key=lambda e: -len(e.split("/"))):
            own = entity.split("/")
            if [s.lower() for s in segments[: len(own)]] == [s.lower() for s in own]:
                return entity, "/".join(segments[len(own) :])
        return None, ""

    def _authorize(self, upgrade: Upgrade, entity: str, needed: Rights) -> Grant:
        tokens = [
            t
            for t in (upgrade.headers.get("servicebusauthorization"), upgrade.params.get("sb-hc-token"))
            if t
        ]
        decision = validate_any(
            tokens,
            rules=self.rules,
            namespace_hosts=[self.host],
            entity_path=entity,
            needed=needed,
            now=self.reactor.seconds(),
        )
        if isinstance(decision, Denial):
            raise ConnectionDeny(decision.kind.status, decision.reason)
        return decision

    def _start_rendezvous(
        self, sender: FakeRelayProtocol, upgrade: Upgrade, entity: str, below: str
    ) -> Deferred[Any]:
        live = [r for r in self.listeners if r.entity == entity]
        if not live:
            raise ConnectionDeny(404, "No listener")
        connection_id = upgrade.params.get("sb-hc-id") or str(uuid.uuid4())
        sender.kind = "sender"
        headers = {k: v for k, v in upgrade.headers.items() if k != "servicebusauthorization"}
        peer = sender.transport.getPeer()
        accept = Accept(
            address=rendezvous_address(self.ws_base, below, upgrade.query, "accept", connection_id),
            id=connection_id,
            connect_headers=headers,
            remote_endpoint=RemoteEndpoint(peer.host, peer.port),
        )
        answer: Deferred[Any] = Deferred()
        pending = _Pending(sender=sender, answer=answer, offered=upgrade.protocols)
        pending.timeout = self.reactor.callLater(30, self._expire, connection_id)
        self.pending[connection_id] = pending
        self.accepts.append(accept)
        live[0].protocol.sendMessage(accept.encode(), isBinary=False)

        def record(result: Any) -> Any:
            self.sender_results[connection_id] = 101
            return result

        def record_failure(failure: Failure) -> Failure:
            if failure.check(ConnectionDeny):
                self.sender_results[connection_id] = failure.value.code
            return failure

        return answer.addCallbacks(record, record_failure)

    def _expire(self, connection_id: str) -> None:
        pending = self.pending.pop(connection_id, None)
        if pending is not None:
            pending.answer.errback(ConnectionDeny(504, "Listener did not accept in time"))

    def _finish_rendezvous(self, listener_leg: FakeRelayProtocol, upgrade: Upgrade) -> Any:
        connection_id = upgrade.params.get("sb-hc-id", "")
        pending = self.pending.pop(connection_id, None)
        if pending is None:
            raise ConnectionDeny(403, "Rendezvous address unknown or used")
        pending.timeout.cancel()
        status = upgrade.params.get("sb-hc-statuscode")
        if status is not None:
            description = upgrade.params.get("sb-hc-statusdescription", "")
            pending.answer.errback(ConnectionDeny(int(status), description))
            raise ConnectionDeny(410, "Gone")
        chosen = upgrade.protocols[0] if upgrade.protocols else None
        if chosen is not None and chosen not in pending.offered:
            pending.answer.errback(
                ConnectionDeny(502, "Listener chose a subprotocol the sender did not offer")
            )
            raise ConnectionDeny(400, "Subprotocol was not offered")
        listener_leg.kind = "rendezvous"
        listener_leg.peer_leg = pending.sender
        pending.sender.peer_leg = listener_leg
        # 101 to the listener first (returning below), then to the sender.
        self.reactor.callLater(0, pending.answer.callback, chosen)
        return chosen

    # -- open connections --------------------------------------------------------------------

    def opened(self, protocol: FakeRelayProtocol) -> None:
        if protocol.kind == "listener" and protocol.grant is not None:
            record = ListenerRecord(protocol, protocol.entity)
            self._schedule_expiry(record, protocol.grant.expiry)
            self.listeners.append(record)

    def _schedule_expiry(self, record: ListenerRecord, expiry: float) -> None:
        if record.expiry_call is not None and record.expiry_call.active():
            record.expiry_call.cancel()
        delay = max(expiry - self.reactor.seconds(), 0)
        record.expiry_call = self.reactor.callLater(delay, record.protocol.relay_close, 1008, "Token expired")

    def record_for(self, protocol: FakeRelayProtocol) -> ListenerRecord | None:
        return next((r for r in self.listeners if r.protocol is protocol), None)

    def message(self, protocol: FakeRelayProtocol, payload: bytes, is_binary: bool) -> None:
        if protocol.kind == "listener":
            obj = payload if is_binary else decode_object(payload)
            self.control_messages.append(obj)
            record = self.record_for(protocol)
            if record is not None and isinstance(obj, dict) and "renewToken" in obj:
                token = parse_renew_token(obj["renewToken"]).token
                upgrade = Upgrade("listen", "", "", {}, {"servicebusauthorization": token}, [])
                try:
                    grant = self._authorize(upgrade, record.entity, Rights.LISTEN)
                except ConnectionDeny:
                    protocol.relay_close(1008, "Invalid renewToken")
                    return
                record.renewals.append(token)
                self._schedule_expiry(record, grant.expiry)
            return
        if protocol.peer_leg is not None and protocol.peer_leg.state == WebSocketProtocol.STATE_OPEN:
            protocol.peer_leg.sendMessage(payload, isBinary=is_binary)

    def closed(
        self, protocol: FakeRelayProtocol, was_clean: bool, code: int | None, reason: str | None
    ) -> None:
        record = self.record_for(protocol)
        if record is not None:
            self.listener_closes.append((was_clean, code, reason))
            self.listeners.remove(record)
            if record.expiry_call is not None and record.expiry_call.active():
                record.expiry_call.cancel()
        peer = protocol.peer_leg
        if peer is not None:
            if not was_clean:
                peer.relay_close(1001, "Peer went away")
            else:
                peer.relay_close(code if code not in (None, 1005, 1006) else 1000, reason or "")

    def close_listeners(self, code: int = 1001, reason: str = "Shutting down") -> None:
        """Close every control channel from the relay side."""
        for record in list(self.listeners):
            record.protocol.relay_close(code, reason)

    def drop_listeners(self) -> None:
        """Cut every control channel's TCP connection without a close frame."""
        for record in list(self.listeners):
            record.protocol.transport.abortConnection()


class FakeRelayTestCase:
    """
    Mixin for L{SynchronousTestCase}: a clock-driven reactor, a network and a fake relay on port 80.

    Autobahn's timers go through C{txaio.config.loop}, so it points at the same clock for the test.
    """

    reactor: MemoryReactorClock
    network: Network
    relay: FakeRelay

    def setUp(self) -> None:
        import txaio

        self.reactor = MemoryReactorClock()
        previous = txaio.config.loop
        txaio.config.loop = self.reactor
        self.addCleanup(setattr, txaio.config, "loop", previous)  # type: ignore[attr-defined]
        self.network = Network(self.reactor)
        self.relay = FakeRelay(self.reactor)
        self.network.serve(80, self.relay.factory())

    def root_tokens(self) -> Any:
        from relay.client import SharedAccessKeyTokenProvider

        return SharedAccessKeyTokenProvider(ROOT_KEY_NAME, ROOT_KEY, clock=self.reactor)
