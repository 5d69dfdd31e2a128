"""
Hybrid connection routing: admission, listener registration, and pairing senders with listeners.

Admission resolves the namespace and entity and checks tokens; each WebSocket sender is paired with a
listener through a one-time rendezvous ticket.

Nothing here touches a socket: transports hand in decoded upgrade requests and get decisions, tickets or
L{RelayError}s back, and the listener side is reached only through L{IListenerChannel}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface

from relay.auth import Grant, Rights, validate_any
from relay.connectionquota import ConnectionLease, ConnectionQuotaExceeded, NamespaceConnections
from relay.entities import (
    HYBRID_CONNECTION,
    Entity,
    EntityMatch,
    EntityNameError,
    HybridConnectionSettings,
    Namespace,
    split_name,
)
from relay.errors import ErrorKind, RelayError, new_tracking_id
from relay.hybrid.addressing import ACTION_ACCEPT, RequestTarget, rendezvous_address
from relay.hybrid.instruments import HybridInstruments
from relay.hybrid.messages import MAX_ANNOUNCEMENT, Accept, RemoteEndpoint
from relay.hybrid.rendezvous import RendezvousTable, Ticket, new_key
from relay.listeners import ListenerRegistry, QuotaExceeded
from relay.logger import Logger
from relay.store import EntityConflict, EntityQuotaExceeded, IGatewayStore

CLIENT_CLOSED_REQUEST = 499
"""The status a sender that hung up while it waited is counted with (nginx's "client closed request")."""

GRANT_CACHE_SIZE = 4096
"""Validated tokens remembered (the cache starts afresh when full)."""

GRANT_CACHE_TOKEN_CHARS = 1024
"""
Longest presented tokens (characters, in all) whose grant is remembered.

Real tokens are a few hundred characters, but fields the signature does not cover can pad a valid one to
the header limit: remembered, 4,096 of them would hold hundreds of megabytes. Longer ones are checked anew.
"""


class IListenerChannel(Interface):
    """A listener's control channel as routing sees it."""

    listener_id = Attribute("The listener's tracking id.")
    closing = Attribute("True once the channel is closing; it then gets no new work.")
    keeps_rendezvous = Attribute(
        "Whether the listener may take a sender's later requests on a rendezvous it fetched one over "
        "(not the .NET listener: it reads one request there and closes the socket)."
    )

    def send_control(payload: bytes) -> bool:
        """Send one JSON text message; return C{False} if the channel can no longer take it."""

    def send_request(payload: bytes, body: bytes) -> bool:
        """
        Send an HTTP C{request} message and its body (one binary message, unless empty) at once.

        @return: C{False} if the channel can no longer take work (then nothing was sent).
        """

    def add_pending(ticket: Ticket) -> None:
        """Remember a ticket issued through this channel, to fail it if the channel drops."""


@dataclass(frozen=True, slots=True)
class Admission:
    """
    A request that passed admission.

    @ivar namespace: the namespace the host selected.
    @ivar match: the entity and the path suffix.
    @ivar grant: the validated token, or C{None} for an anonymous sender.
    """

    namespace: Namespace
    match: EntityMatch
    grant: Grant | None

    @property
    def entity(self) -> Entity:
        """The hybrid connection."""
        return self.match.entity

    @property
    def settings(self) -> HybridConnectionSettings:
        """The hybrid connection's settings."""
        settings: HybridConnectionSettings = self.match.entity.settings
        return settings


@dataclass(frozen=True, slots=True)
class SenderContext:
    """
    What a waiting WebSocket sender offered, kept on its ticket for the listener's upgrade.

    @ivar announcement: the C{accept} message and where it went, to announce the sender to another
        listener when this one goes away first (L{HybridConnectionRouter.announce_again}).
    """

    offered_protocols: tuple[str, ...]
    issued_query: str
    entity: str = ""
    listener_id: str = ""
    announcement: tuple[Admission, bytes] | None = None


class HybridConnectionRouter:
    """
    Decide who may listen or send, and pair senders with listeners.

    @ivar registry: live control channels per hybrid connection.
    @ivar rendezvous: pending sender tickets.
    @ivar instruments: the hybrid connection metrics (admission outcomes are counted here).
    """

    log = Logger()

    def __init__(
        self,
        store: IGatewayStore,
        registry: ListenerRegistry[IListenerChannel],
        clock: IReactorTime,
        websocket_base: str,
        rendezvous_timeout: float = 30.0,
        instruments: HybridInstruments | None = None,
        connections: NamespaceConnections | None = None,
    ) -> None:
        self.store = store
        self.connections = connections if connections is not None else NamespaceConnections()
        self._listener_leases: dict[IListenerChannel, ConnectionLease] = {}
        self.instruments = instruments if instruments is not None else HybridInstruments()
        self.registry = registry
        self.clock = clock
        self.websocket_base = websocket_base
        self.rendezvous = RendezvousTable(clock, rendezvous_timeout)
        # Grants by everything their validation depended on (tokens, rules, audience, entity, right): a
        # sender presents the same token on every connection until it expires, and checking its
        # signature was a tenth of the gateway's CPU per established pair.
        self._grants: dict[tuple[Any, ...], Grant] = {}

    def resolve(
        self, host: str, path: str, *, listener: bool = False, tokens: Sequence[str] = ()
    ) -> tuple[Namespace, EntityMatch]:
        """
        Find the namespace and hybrid connection for a host and an entity path (after C{$hc}).

        A sender's path is matched by its longest prefix (the rest is its suffix); a listener's path is
        the whole name (L{_listener_match}).

        @param listener: resolve for a listener: the exact name, made if the namespace auto-creates
            hybrid connections, but only once C{tokens} grant Listen on it.
        @raise RelayError: 404 when either is unknown or the name belongs to another entity kind; 401 or
            403 when a hybrid connection would be created but the tokens do not allow it.
        """
        namespace = self.store.namespace_for_host(host)
        if namespace is None:
            raise RelayError(ErrorKind.NOT_FOUND, "No namespace is served under this host name")
        if listener:
            match = self._listener_match(namespace, path, host, tokens)
        else:
            match = self.store.match(namespace, path)
        if match is None:
            raise RelayError(ErrorKind.NOT_FOUND, "No hybrid connection with this name")
        if match.entity.kind != HYBRID_CONNECTION:
            raise RelayError(ErrorKind.NOT_FOUND, f"{match.entity.name!r} is not a hybrid connection")
        return namespace, match

    def _listener_match(
        self, namespace: Namespace, path: str, host: str, tokens: Sequence[str]
    ) -> EntityMatch | None:
        """
        The entity a listener names: the whole path, never a prefix of it, or C{None}.

        A listener of C{hyco/extra} must not become one of C{hyco} and take its senders, and in an
        auto-create namespace it makes C{hyco/extra}, as the bindings' dynamic names do. Below an entity
        of another kind nothing is made: that entity is returned, to be refused.
        """
        try:
            name = "/".join(split_name(path))
        except EntityNameError:
            return None
        entity = self.store.get(namespace, name)
        if entity is not None:
            return EntityMatch(entity, "")
        if not namespace.auto_create:
            return None
        below = self.store.match(namespace, path)
        if below is not None and below.entity.kind != HYBRID_CONNECTION:
            return below
        return self._auto_create(namespace, name, host, tokens)

    def _auto_create(
        self, namespace: Namespace, name: str, host: str, tokens: Sequence[str]
    ) -> EntityMatch | None:
        candidate = Entity(name=name, kind=HYBRID_CONNECTION, dynamic=True)
        # Authorize before the store changes, so that a refused listener leaves nothing behind. The new
        # entity has no rules of its own: the namespace's rules decide, as they will once it exists (and
        # the grant cached here is the one admission then finds).
        self.authorize(namespace, EntityMatch(candidate, ""), host, tokens, Rights.LISTEN)
        try:
            entity = self.store.add(namespace, candidate)
        except EntityConflict:
            return None
        except EntityQuotaExceeded as e:
            raise RelayError(ErrorKind.QUOTA_EXCEEDED, str(e)) from None
        self.log.info(
            "created hybrid connection {entity} in {namespace} for its first listener",
            entity=entity.name,
            namespace=namespace.name,
        )
        return EntityMatch(entity, "")

    def authorize(
        self,
        namespace: Namespace,
        match: EntityMatch,
        host: str,
        tokens: Sequence[str],
        needed: Rights,
    ) -> Grant | None:
        """
        Check the presented tokens for C{needed} on the matched entity.

        Senders of a hybrid connection that does not require client authorization need no token, but a
        token they present anyway must still be valid (no silent downgrade of a bad credential).

        @return: the grant, or C{None} for an anonymous sender.
        @raise RelayError: 401 or 403.
        """
        entity = match.entity
        settings: HybridConnectionSettings = entity.settings
        anonymous_ok = needed == Rights.SEND and not settings.requires_client_authorization
        if anonymous_ok and not tokens:
            return None
        rules = (*namespace.rules, *entity.rules)
        hosts = namespace.audience_hosts(host)
        now = self.clock.seconds()
        key = (tuple(tokens), rules, hosts, entity.name, needed)
        granted = self._grants.get(key)
        if granted is not None and granted.expiry > now:
            return granted
        decision = validate_any(
            tokens, rules=rules, namespace_hosts=hosts, entity_path=entity.name, needed=needed, now=now
        )
        if isinstance(decision, Grant):
            if sum(map(len, tokens)) <= GRANT_CACHE_TOKEN_CHARS:
                if len(self._grants) >= GRANT_CACHE_SIZE:
                    self._grants.clear()
                self._grants[key] = decision
            return decision
        raise RelayError(decision.kind, decision.reason)

    def admit(
        self, host: str, path: str, tokens: Sequence[str], needed: Rights, *, listener: bool = False
    ) -> Admission:
        """
        Resolve and authorize in one step; a refusal is counted for the listener or sender role.

        @param listener: admit a listener: its path is the exact name, auto-created where the namespace
            allows once its tokens are checked (L{resolve}).
        """
        match: EntityMatch | None = None
        try:
            namespace, match = self.resolve(host, path, listener=listener, tokens=tokens)
            grant = self.authorize(namespace, match, host, tokens, needed)
        except RelayError as e:
            entity = match.entity.name if match is not None else None
            if needed == Rights.LISTEN:
                self.instruments.listener_refused(entity, e.status)
            else:
                self.instruments.sender_refused(entity, e.status)
            raise
        return Admission(namespace, match, grant)

    def take_connection(self, admission: Admission, *, listener: bool = False) -> ConnectionLease:
        """
        Count a connection against its namespace's limit (L{relay.connectionquota}); refusals are counted.

        @param listener: count a refusal for the listener role (else the sender role).
        @raise RelayError: 403 when the namespace already holds its maximum of connections.
        """
        try:
            return self.connections.take(admission.namespace.name)
        except ConnectionQuotaExceeded as e:
            error = RelayError(ErrorKind.QUOTA_EXCEEDED, e.message)
            if listener:
                self.instruments.listener_refused(admission.entity.name, error.status)
            else:
                self.instruments.sender_refused(admission.entity.name, error.status)
            raise error from None

    def register_listener(self, admission: Admission, channel: IListenerChannel) -> None:
        """
        Make a control channel eligible for senders.

        @raise RelayError: 403 when the hybrid connection already has its maximum of listeners, or the
            namespace its maximum of connections.
        """
        try:
            lease = self.take_connection(admission, listener=True)
        except RelayError:
            self._drop_unlistened(admission.namespace, admission.entity)  # auto-created for this listener
            raise
        try:
            self.registry.add(
                admission.namespace, admission.entity, channel, admission.settings.max_listeners
            )
        except QuotaExceeded:
            lease.release()
            error = RelayError(
                ErrorKind.QUOTA_EXCEEDED,
                f"Quota exceeded: {admission.entity.name!r} allows {admission.settings.max_listeners} listeners",
            )
            self.instruments.listener_refused(admission.entity.name, error.status)
            raise error from None
        self._listener_leases[channel] = lease
        self.instruments.listener_connected(admission.entity.name)

    def unregister_listener(self, admission: Admission, channel: IListenerChannel) -> None:
        """Remove a control channel; senders no longer go to it. An auto-created HC goes with its last one."""
        namespace, entity = admission.namespace, admission.entity
        lease = self._listener_leases.pop(channel, None)
        if lease is not None:
            lease.release()
        if not self.registry.remove(namespace, entity, channel):
            return
        self.instruments.listener_disconnected(entity.name)
        self._drop_unlistened(namespace, entity)

    def _drop_unlistened(self, namespace: Namespace, entity: Entity) -> None:
        """
        Remove an auto-created hybrid connection that has no listener (its last left, or its first was refused).

        Kept, every name ever used would stay for good, and count against C{max_entities_per_namespace}.
        """
        if (
            entity.dynamic
            and not self.registry.count(namespace, entity)
            and self.store.get(namespace, entity.name) is entity
        ):
            self.store.remove(namespace, entity.name)
            self.log.info(
                "removed hybrid connection {entity} from {namespace}: no listener",
                entity=entity.name,
                namespace=namespace.name,
            )

    def connect_sender(
        self,
        admission: Admission,
        target: RequestTarget,
        entity_path: str,
        headers: Mapping[str, str],
        remote: RemoteEndpoint,
        offered_protocols: Sequence[str],
        connection_id: str | None = None,
    ) -> Ticket:
        """
        Announce a WebSocket sender to one listener and return the ticket the sender waits on.

        @param entity_path: the raw path after C{$hc} (entity name and the sender's suffix).
        @param connection_id: the tracking id to use when the sender chose none (default: a new GUID).
        @raise RelayError: 404 when no listener is online (or none could take the announcement); 431 when
            the C{accept} message would be larger than L{MAX_ANNOUNCEMENT}.
        """
        sender_id = target.param("id")
        connection_id = sender_id or connection_id or new_tracking_id()
        key = new_key() if sender_id else connection_id
        address = rendezvous_address(
            self.websocket_base,
            entity_path,
            target.query,
            ACTION_ACCEPT,
            connection_id,
            key if sender_id else None,
        )
        issued_query = address.partition("?")[2]
        accept = Accept(address=address, id=connection_id, connect_headers=headers, remote_endpoint=remote)
        payload = accept.encode()
        if len(payload) > MAX_ANNOUNCEMENT:
            error = RelayError(
                ErrorKind.HEADERS_TOO_LARGE,
                f"The sender's headers and address make an accept message over {MAX_ANNOUNCEMENT} bytes",
            )
            self.instruments.sender_refused(admission.entity.name, error.status)
            raise error
        for channel in self._open_listeners(admission, tried=[]):
            context = SenderContext(
                tuple(offered_protocols),
                issued_query,
                admission.entity.name,
                channel.listener_id,
                (admission, payload),
            )
            ticket = self.rendezvous.open(connection_id, context, key=key)
            if channel.send_control(payload):
                channel.add_pending(ticket)
                ticket.outcome.addErrback(self._sender_failed, admission.entity.name)
                # Logged once, when the pair ends (Splice), or when the rendezvous fails.
                return ticket
            self.rendezvous.cancel(ticket)
        error = RelayError(ErrorKind.NO_LISTENER, "No listener is connected to this hybrid connection")
        self.instruments.sender_refused(admission.entity.name, error.status)
        raise error

    def _open_listeners(
        self, admission: Admission, tried: list[IListenerChannel]
    ) -> Iterator[IListenerChannel]:
        """
        The listeners to announce a sender to, as the registry chooses them.

        Each is offered once, none in C{tried} (which grows with those offered), none closing.
        """
        while (
            channel := self.registry.choose(admission.namespace, admission.entity, exclude=tried)
        ) is not None:
            tried.append(channel)
            if not channel.closing:
                yield channel

    def announce_again(self, ticket: Ticket, gone: IListenerChannel) -> bool:
        """
        Announce a waiting sender to another listener: the one it was announced to went away first.

        The sender keeps its rendezvous address and deadline. Without this, a listener that restarted
        (a rolling deployment) failed every sender it had not yet accepted, while other listeners were
        online.

        @return: whether another listener took the announcement.
        """
        context = ticket.context
        if ticket.done or not isinstance(context, SenderContext) or context.announcement is None:
            return False
        admission, payload = context.announcement
        for channel in self._open_listeners(admission, tried=[gone]):
            if not channel.send_control(payload):
                continue
            ticket.context = replace(context, listener_id=channel.listener_id)
            channel.add_pending(ticket)
            self.log.info(
                "sender {connection_id} announced to listener {listener_id}: {gone_id} went away first",
                connection_id=ticket.connection_id,
                listener_id=channel.listener_id,
                gone_id=context.listener_id,
            )
            return True
        return False

    def sender_left(self, ticket: Ticket) -> None:
        """
        A waiting WebSocket sender hung up before a listener accepted it: withdraw its ticket, count it.

        It is a C{client_error}, as nginx's 499 ("client closed request"); uncounted, the outcomes would not
        add up to the upgrades.
        """
        if ticket.done:
            return
        self.rendezvous.cancel(ticket)
        context = ticket.context
        entity = context.entity if isinstance(context, SenderContext) and context.entity else None
        self.instruments.sender_refused(entity, CLIENT_CLOSED_REQUEST)

    def _sender_failed(self, failure: Any, entity: str) -> Any:
        """Count a sender whose listener never came or rejected it; the failure goes on to the sender."""
        self.instruments.sender_refused(entity, int(getattr(failure.value, "status", 500)))
        return failure

    def claim(self, key: str, context: type | None = None) -> Ticket:
        """
        Take the ticket a listener's rendezvous upgrade names.

        @param context: the type of context the upgrade's action serves (L{SenderContext} for C{accept});
            an address issued for the other action is unknown to it.
        @raise RelayError: 403 when the address is unknown, used or expired.
        """
        ticket = self.rendezvous.claim(key, context)
        if ticket is None:
            raise RelayError(ErrorKind.RENDEZVOUS_UNKNOWN, "Rendezvous address is unknown, used or expired")
        return ticket
