"""
The SOAP bindings' metrics, per binding name, on the gateway's one registry (L{relay.metrics}).

Messages are counted where every prepared message meets its router (L{bindings.gateway.BindingsGateway}),
faults where the two transports send them, slow multicast subscribers where the router drops them, and
queue depths are read from the routers' outlets at each scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from relay.metrics import UNKNOWN, Cell, Labels, Registry


class BindingInstruments:
    """
    The bindings' families.

    @ivar registry: the gateway's registry (shared with hybrid connections).
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.messages = r.counter(
            "relay_binding_messages_total",
            "SOAP messages accepted for routing, by binding name and shape (oneway, requestreply, multicast).",
            ("entity", "shape"),
        )
        self.message_bytes = r.counter(
            "relay_binding_message_bytes_total",
            "Bytes of the SOAP messages accepted for routing, by binding name.",
            ("entity",),
        )
        self.faults = r.counter(
            "relay_binding_faults_total",
            "Faults the gateway itself sent (to senders or listeners), by binding name and subcode.",
            ("entity", "subcode"),
        )
        self.slow_disconnects = r.counter(
            "relay_binding_slow_subscriber_disconnects_total",
            "Multicast subscribers disconnected because their queue overflowed.",
            ("entity",),
        )

        self.dropped_copies = r.counter(
            "relay_binding_dropped_copies_total",
            "Multicast copies queued for a subscriber and discarded unsent because it was dropped or left.",
            ("entity",),
        )

    def accepted(self, entity: str, shape: str, size: int) -> None:
        """A message was handed to its router."""
        self.messages.inc(entity, shape)
        self.message_bytes.inc(entity, amount=size)

    def fault(self, entity: str | None, subcode: str) -> None:
        """The gateway sent a fault (entity C{None}: the name was not resolved)."""
        self.faults.inc(entity or UNKNOWN, subcode)

    def slow_cell(self, entity: str) -> Cell:
        """The slow-subscriber counter of a multicast name, kept by its router."""
        return self.slow_disconnects.labels(entity)

    def dropped_cell(self, entity: str) -> Cell:
        """The discarded-copies counter of a multicast name, kept by its router's outlets."""
        return self.dropped_copies.labels(entity)

    def watch_queues(self, outlets: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        """
        Report queue depths at each scrape.

        @param outlets: yields C{(entity, queued messages, queued bytes)} per listener outlet.
        """

        def messages() -> list[tuple[Labels, float]]:
            return [((entity,), count) for entity, count, _ in outlets()]

        def size() -> list[tuple[Labels, float]]:
            return [((entity,), queued) for entity, _, queued in outlets()]

        self.registry.sampled(
            "relay_binding_queued_messages",
            "Messages accepted but not yet written to listeners, by binding name.",
            ("entity",),
            messages,
        )
        self.registry.sampled(
            "relay_binding_queued_bytes",
            "Bytes accepted but not yet written to listeners, by binding name.",
            ("entity",),
            size,
        )
