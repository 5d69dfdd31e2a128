"""
Concurrent relay connections per namespace: both specs' limit of 5,000 by default, set by the operator.

Every connection a namespace holds open through the gateway takes one lease for as long as it lasts: a
hybrid connection's listener control channel, a WebSocket sender (waiting for its listener or paired), an
HTTP request being relayed, and a SOAP binding's listener, WebSocket sender or HTTP call. A listener's
rendezvous sockets serve a sender that already holds a lease, and take none. Past the limit a lease is
refused, and each pillar answers with its own quota error (403, C{QuotaExceeded}).

One gateway counts its own connections: the store is in memory, and so is this count.
"""

from __future__ import annotations

MAX_CONNECTIONS_PER_NAMESPACE = 5_000
"""Both specs' default for concurrent relay connections per namespace."""


class ConnectionQuotaExceeded(Exception):
    """A namespace already holds its limit of concurrent connections."""

    def __init__(self, namespace: str, limit: int) -> None:
        super().__init__(f"Quota exceeded: namespace {namespace!r} allows {limit} concurrent connections")
        self.namespace = namespace
        self.limit = limit

    @property
    def message(self) -> str:
        """The refusal's text, for a status line, a close reason or a fault."""
        return str(self.args[0])


class ConnectionLease:
    """One open connection of a namespace; L{release} gives it back, once, however often it is called."""

    __slots__ = ("_open", "namespace")

    def __init__(self, open_counts: dict[str, int], namespace: str) -> None:
        self._open: dict[str, int] | None = open_counts
        self.namespace = namespace

    @property
    def held(self) -> bool:
        """Whether the lease still counts."""
        return self._open is not None

    def release(self) -> None:
        """The connection ended: it no longer counts."""
        counts, self._open = self._open, None
        if counts is None:
            return
        left = counts[self.namespace] - 1
        if left:
            counts[self.namespace] = left
        else:
            del counts[self.namespace]


class NamespaceConnections:
    """
    Open connections per namespace, refused past C{limit}; shared by both pillars of one gateway.

    Namespaces with no open connection take no memory, so the table is bounded by the configured ones.
    """

    def __init__(self, limit: int = MAX_CONNECTIONS_PER_NAMESPACE) -> None:
        if limit < 1:
            raise ValueError(f"a namespace must allow at least one connection, not {limit}")
        self.limit = limit
        self._open: dict[str, int] = {}

    def take(self, namespace: str) -> ConnectionLease:
        """
        Count one more connection of C{namespace}.

        @raise ConnectionQuotaExceeded: the namespace already holds C{limit} connections.
        """
        count = self._open.get(namespace, 0)
        if count >= self.limit:
            raise ConnectionQuotaExceeded(namespace, self.limit)
        self._open[namespace] = count + 1
        return ConnectionLease(self._open, namespace)

    def count(self, namespace: str) -> int:
        """Connections C{namespace} holds now."""
        return self._open.get(namespace, 0)

    def counts(self) -> dict[str, int]:
        """Open connections by namespace, for those that hold any."""
        return dict(self._open)
