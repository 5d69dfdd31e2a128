"""
Sender and rendezvous upgrades answered without Autobahn, straight from the request twisted.web parsed.

A sender's upgrade (C{sb-hc-action=connect}) and a listener's rendezvous upgrade (C{accept}) become one
leg of a splice right after their 101 and never exchange a WebSocket message with the gateway itself, so
Autobahn's handshake and per-connection set-up bought them nothing. L{DirectUpgrades} takes such a request
over from twisted.web (as Autobahn's C{WebSocketResource} does), makes the same decisions as
L{HybridConnectionProtocol} through the functions both share (L{announce_sender}, L{claim_rendezvous},
L{rendezvous_subprotocol}, L{sender_refusal}), and answers with L{relay.hybrid.handshake}. A L{DirectLeg}
holds the socket until the splice takes it over.

Requests that are not plainly valid version-13 handshakes (see L{read_upgrade}) and every other action
still go to Autobahn, which answers them as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from autobahn.twisted.util import peer2str
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from relay.errors import RelayError, new_tracking_id
from relay.firstread import FirstRead, attach
from relay.httphead import RequestHead
from relay.hybrid.addressing import (
    ACTION_ACCEPT,
    ACTION_CONNECT,
    AddressError,
    RequestTarget,
    hc_path,
    split_target,
)
from relay.hybrid.frames import OP_CLOSE, ControlFrame, FrameError, FrameRelay, encode_close
from relay.hybrid.handshake import Upgrade, read_upgrade, refusal, switching_protocols
from relay.hybrid.messages import RemoteEndpoint
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.upgrades import (
    EarlyBytes,
    Handoff,
    SenderLease,
    announce_sender,
    claim_rendezvous,
    deny,
    rendezvous_subprotocol,
    sender_refusal,
)
from relay.hybrid.websocket import HybridConnectionFactory
from relay.logger import Logger
from relay.writes import plain_socket, write_now

DIRECT_ACTIONS = frozenset({ACTION_CONNECT, ACTION_ACCEPT})


class DirectLeg(EarlyBytes, SenderLease, Protocol):
    """
    A sender's or a listener's rendezvous socket from its upgrade until the splice takes it over.

    @ivar data: bytes received after the upgrade request, for the splice (a listener may send right after
        its 101, before its sender has been answered).
    @ivar is_open: whether the 101 was sent.
    """

    transport: Any

    def __init__(self, factory: HybridConnectionFactory, tracking_id: str) -> None:
        self.factory = factory
        self.tracking_id = tracking_id
        self.data = b""
        self.is_open = False
        self._ticket: Ticket | None = None
        self._gone = False
        self._closing: FrameRelay | None = None
        self._close_timer: IDelayedCall | None = None

    @property
    def peer(self) -> str:
        """The peer as Autobahn names it in log events (C{tcp4:127.0.0.1:53321})."""
        return str(peer2str(self.transport))

    def remote(self) -> RemoteEndpoint:
        """The peer's address for the C{accept} message."""
        peer = self.transport.getPeer()
        return RemoteEndpoint(address=getattr(peer, "host", ""), port=int(getattr(peer, "port", 0)))

    # -- answers ---------------------------------------------------------------------------------------

    def switch(self, key: str, subprotocol: str | None) -> None:
        """Send the 101: the WebSocket is open."""
        self.is_open = True
        answer = switching_protocols(key, subprotocol, self.factory.server)
        write_now(self.transport, answer, plain_socket(self.transport))

    def refuse(self, status: int, reason: str) -> None:
        """Refuse the upgrade with a status line and close the connection, as Autobahn does."""
        self.transport.write(refusal(status, reason))
        self.transport.loseConnection()

    def close_with(self, code: int, reason: str) -> None:
        """
        Close an open leg that will not be spliced (its sender left meanwhile) with a closing handshake.

        The connection ends when the peer answers the close (or after the close timeout), so the peer sees
        the close code rather than a reset.
        """
        if not self.is_open or self._gone:
            self.transport.abortConnection()
            return
        if self._closing is not None:
            return
        self._closing = FrameRelay()
        self.transport.write(encode_close(code, reason[:123]))
        self._close_timer = self.factory.clock.callLater(
            float(self.factory.closeHandshakeTimeout), self.transport.abortConnection
        )
        held, self.data = self.data, b""
        if held:
            self._await_close(held)

    # -- the socket ------------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Count the connection, so shutdown can wait for it."""
        self.factory.connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        """Keep what arrives for the splice (L{EarlyBytes}), or look for the answer to our close."""
        if self._closing is not None:
            self._await_close(data)
            return
        self.hold_early(data)

    def _await_close(self, data: bytes) -> None:
        closing = self._closing
        if closing is None:
            return
        try:
            items = closing.feed(data)
        except FrameError:
            self.transport.abortConnection()
            return
        if any(isinstance(item, ControlFrame) and item.opcode == OP_CLOSE for item in items):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Withdraw a waiting sender; forget the connection."""
        self._gone = True
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        if self._ticket is not None and not self._ticket.done:
            DirectUpgrades.log.info(
                "sender {tracking_id} left before a listener accepted", tracking_id=self.tracking_id
            )
            self.factory.router.sender_left(self._ticket)
        self.release_lease()
        self.factory.connection_closed(self)

    # -- sender ----------------------------------------------------------------------------------------

    def wait_for_listener(self, ticket: Ticket, key: str) -> None:
        """Answer the sender once its listener accepted (101 and splice) or failed (its refusal)."""
        self._ticket = ticket
        ticket.outcome.addCallbacks(self._listener_arrived, self._listener_failed, callbackArgs=(key,))

    def _listener_arrived(self, handoff: Handoff, key: str) -> None:
        if self._gone:
            handoff.protocol.close_with(1001, "Sender went away")
            return
        self.switch(key, handoff.subprotocol)
        self.factory.start_splice(self, handoff.protocol, self.tracking_id, self._ticket)
        self.release_early()  # the splice has what was held; it reads the rest

    def _listener_failed(self, failure: Failure) -> None:
        self.release_lease()  # refused: no longer a relay connection, however long its socket lingers
        if self._gone:
            return
        try:
            status, reason = sender_refusal(failure, self.tracking_id)
        except Exception as e:
            DirectUpgrades.log.failure("sender {tracking_id} failed", failure, tracking_id=self.tracking_id)
            status, reason = 500, f"Internal server error: {e}"
        self.refuse(status, reason)


@dataclass(frozen=True, slots=True)
class _Direct:
    """A request L{DirectUpgrades} answers: its upgrade, target, action and target text."""

    upgrade: Upgrade
    target: RequestTarget
    action: str | None
    uri: str


class DirectUpgrades:
    """
    Answers senders' and rendezvous upgrades on C{/$hc} itself (see the module docstring).

    @ivar factory: the C{$hc} factory: router, limits, connection counting, splices.
    @ivar target_prefix: the targets the site's channels offer it (L{take_head}).
    """

    log = Logger()
    target_prefix = b"/$hc/"

    def __init__(self, factory: HybridConnectionFactory) -> None:
        self.factory = factory

    def take(self, request: IRequest) -> bool:
        """
        Handle C{request} if it is a sender's or a rendezvous upgrade this module answers.

        @return: whether it did (the request then stays unfinished: its transport belongs to a leg).
        """
        raw_uri: bytes = request.uri
        if b"sb-hc-action=connect" not in raw_uri and b"sb-hc-action=accept" not in raw_uri:
            return False  # a cheap filter; the parsed target decides below
        channel: Any = request.channel  # type: ignore[attr-defined]
        if channel.transport is None:
            return False
        direct = self._read(
            request.method,
            request.clientproto,  # type: ignore[attr-defined]
            raw_uri,
            request.requestHeaders.getAllRawHeaders(),
        )
        if direct is None:
            return False
        transport, channel.transport = channel.transport, None
        content: Any = request.content
        leg = self._leg(transport, direct.target)
        leg.data = content.read()
        self._answer(leg, direct)
        return True

    def take_head(self, channel: FirstRead, head: RequestHead) -> bool:
        """
        Handle a connection's first request from its head alone, before twisted.web builds a C{Request}.

        A new connection's L{FirstRead} offers it its first read's head (L{RelaySite.head_taker}).

        Takes exactly the requests that twisted.web would route to L{take} and that L{take} would handle,
        with the same answers; for the others it returns C{False} and twisted.web handles them as before.
        """
        raw_uri = head.target
        if b"sb-hc-action=connect" not in raw_uri and b"sb-hc-action=accept" not in raw_uri:
            return False
        for name, values in head.headers:
            if name == b"upgrade":
                if values[0].lower() != b"websocket":
                    return False  # the $hc resource refuses it with 400
                break
        else:
            return False
        direct = self._read(head.method, head.version, raw_uri, head.headers)
        if direct is None:
            return False
        leg = self._leg(channel.release_transport(), direct.target, paused=False)
        self._answer(leg, direct)
        return True

    def _read(
        self,
        method: bytes,
        version: bytes,
        raw_uri: bytes,
        raw_headers: Iterable[tuple[bytes, Sequence[bytes]]],
    ) -> _Direct | None:
        """The upgrade, target and action of a request this module answers, or C{None}."""
        upgrade = read_upgrade(method, version, raw_uri, raw_headers)
        if upgrade is None:
            return None
        uri = raw_uri.decode("latin-1")
        try:
            target = split_target(uri)
        except AddressError:
            return None
        action = target.param("action")
        if action not in DIRECT_ACTIONS:
            return None
        return _Direct(upgrade, target, action, uri)

    def _leg(self, transport: Any, target: RequestTarget, paused: bool = True) -> DirectLeg:
        """
        Move the socket to a new leg, as Autobahn's resource does.

        @param paused: whether twisted.web paused reading while it handled the request (not so for a
            head taken on the connection's first read).
        """
        leg = DirectLeg(self.factory, target.param("id") or new_tracking_id())
        attach(transport, leg)
        if paused:
            producer = getattr(transport, "_networkProducer", None)
            if producer is not None:
                producer.resumeProducing()
            else:
                transport.resumeProducing()
        return leg

    def _answer(self, leg: DirectLeg, direct: _Direct) -> None:
        """Admit and pair (or refuse) the upgrade now held by C{leg}."""
        action, target, upgrade = direct.action, direct.target, direct.upgrade
        path = hc_path(target.path) or "/"
        try:
            if action == ACTION_CONNECT:
                self._sender(leg, upgrade, target, path)
            else:
                self._rendezvous(leg, upgrade, target, direct.uri)
        except RelayError as e:
            self.log.info(
                "refused {action} upgrade on {path}: {kind} {reason}",
                action=action,
                path=path[:200],
                kind=e.kind.name,
                reason=e.message,
                tracking_id=leg.tracking_id,
                peer=leg.peer,
            )
            refused = deny(e, leg.tracking_id)
            leg.refuse(refused.code, str(refused.reason))
        except Exception as e:  # a bug: answer as Autobahn answers an onConnect that raised
            self.log.failure("{action} upgrade failed", action=action, tracking_id=leg.tracking_id)
            leg.refuse(500, f"Internal server error: {e}")

    def _sender(self, leg: DirectLeg, upgrade: Upgrade, target: RequestTarget, path: str) -> None:
        ticket, leg.connection_lease = announce_sender(
            self.factory,
            target,
            path,
            upgrade.host,
            upgrade.headers,
            leg.remote(),
            upgrade.protocols,
            leg.tracking_id,
        )
        leg.wait_for_listener(ticket, upgrade.key)

    def _rendezvous(self, leg: DirectLeg, upgrade: Upgrade, target: RequestTarget, uri: str) -> None:
        ticket = claim_rendezvous(self.factory, target)
        leg.tracking_id = ticket.connection_id
        chosen = rendezvous_subprotocol(ticket, target, uri, upgrade.protocols)
        leg.switch(upgrade.key, chosen)
        ticket.outcome.callback(Handoff(leg, chosen))  # type: ignore[arg-type]
