"""
The hybrid connection metrics, named after Azure Relay's own (C{ListenerConnections-Success}, ...).

The router counts admission decisions where it makes them, the C{$hc} factory counts pairs as they start
and end, the splice adds each read's size to its entity's byte counter, and the gateway counts relayed
HTTP requests by status class when they finish. See docs/operations.md for the list.
"""

from __future__ import annotations

from relay.metrics import UNKNOWN, Cell, Registry, outcome

SUCCESS = "success"


class HybridInstruments:
    """
    The hybrid connection families on the gateway's registry.

    @ivar registry: the gateway's one registry (shared with the bindings).
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.listener_connections = r.counter(
            "relay_listener_connections_total",
            "Listener control channel upgrades by outcome (Azure: ListenerConnections-Success, "
            "-ClientError, -ServerError; their sum is ListenerConnections-TotalRequests).",
            ("entity", "outcome"),
        )
        self.sender_connections = r.counter(
            "relay_sender_connections_total",
            "WebSocket sender upgrades by outcome (Azure: SenderConnections-Success, -ClientError, "
            "-ServerError; their sum is SenderConnections-TotalRequests).",
            ("entity", "outcome"),
        )
        self.listener_disconnects = r.counter(
            "relay_listener_disconnects_total",
            "Listener control channels that went offline (Azure: ListenerDisconnects).",
            ("entity",),
        )
        self.sender_disconnects = r.counter(
            "relay_sender_disconnects_total",
            "Relayed WebSocket connections that ended (Azure: SenderDisconnects).",
            ("entity",),
        )
        self.bytes_transferred = r.counter(
            "relay_bytes_transferred_total",
            "Bytes relayed between senders and listeners, both directions: WebSocket bytes as read "
            "(framing included) and HTTP request and response bodies (Azure: BytesTransferred).",
            ("entity",),
        )
        self.http_requests = r.counter(
            "relay_http_requests_total",
            "HTTP requests relayed to hybrid connections, by the status class answered "
            "(aborted: the sender's connection ended before the answer was complete).",
            ("entity", "status_class"),
        )

    def listener_connected(self, entity: str) -> None:
        """A listener's control channel was admitted."""
        self.listener_connections.inc(entity, SUCCESS)

    def listener_refused(self, entity: str | None, status: int) -> None:
        """A listener's upgrade was refused with C{status} (entity C{None}: not resolved)."""
        self.listener_connections.inc(entity or UNKNOWN, outcome(status))

    def listener_disconnected(self, entity: str) -> None:
        """A registered listener went offline."""
        self.listener_disconnects.inc(entity)

    def sender_connected(self, entity: str) -> None:
        """A WebSocket sender was paired with its listener (its 101 was sent)."""
        self.sender_connections.inc(entity, SUCCESS)

    def sender_refused(self, entity: str | None, status: int) -> None:
        """A WebSocket sender's upgrade was refused with C{status}."""
        self.sender_connections.inc(entity or UNKNOWN, outcome(status))

    def sender_disconnected(self, entity: str) -> None:
        """A relayed WebSocket pair ended."""
        self.sender_disconnects.inc(entity)

    def bytes_cell(self, entity: str) -> Cell:
        """The byte counter of an entity, kept by a splice for the life of its pair."""
        return self.bytes_transferred.labels(entity)
