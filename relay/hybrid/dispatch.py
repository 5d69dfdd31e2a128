"""
Routing of relayed HTTP requests: which listener, which channel, and the one-time addresses involved.

A request whose length is known and whose C{request} message plus body fit the control channel's limits
(64 kB in all, 32 kB of metadata) is sent there in full, followed by its body. Anything else is announced
with the rendezvous-only C{request} (C{address} and C{id}), and the listener fetches it over a rendezvous
WebSocket. Either way every request carries an address: a small request's listener may open it to send a
large response, so that address stays claimable for the request's timeout plus the rendezvous timeout,
even when the request ends without a response first (then for nothing but a late answer: L{ABANDONED}).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from relay.errors import ErrorKind, RelayError
from relay.hybrid.addressing import request_address
from relay.hybrid.messages import RendezvousRequest
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import Admission, HybridConnectionRouter, IListenerChannel
from relay.logger import Logger

CONTROL_MESSAGE_LIMIT = 64 * 1024
"""A request on the control channel: its JSON plus its body, at most (bytes)."""

CONTROL_METADATA_LIMIT = 32 * 1024
"""A request on the control channel: its JSON (method, target, headers), at most (bytes)."""


def fits_control_channel(message_size: int, body_size: int | None) -> bool:
    """
    Whether a request may travel on the control channel.

    @param message_size: bytes of the encoded C{request} message.
    @param body_size: bytes of the body, or C{None} when it is streamed (length unknown or too large to
        hold).
    """
    return (
        body_size is not None
        and message_size <= CONTROL_METADATA_LIMIT
        and message_size + body_size <= CONTROL_MESSAGE_LIMIT
    )


@dataclass(frozen=True, slots=True)
class RequestWait:
    """
    The context of a ticket issued for an HTTP request's address.

    @ivar exchange: the request's transport-side state; C{None} once it ended (L{ABANDONED}).
    @ivar for_request: C{True} when the listener comes to fetch the request (the socket may then carry
        later requests of the same sender); C{False} when it may only come to deliver a response.
    @ivar reusable: whether the listener reads later requests on a socket it fetched one over
        (L{IListenerChannel.keeps_rendezvous}); when not, the socket is closed after its one answer.
    """

    exchange: Any
    for_request: bool
    reusable: bool = True


ABANDONED = RequestWait(exchange=None, for_request=False)
"""The context of a small request's address kept after its exchange ended (L{relay.hybrid.http.HttpRelay.release_address})."""


class HttpDispatcher:
    """
    Hand HTTP requests to listeners.

    @ivar router: the hybrid connection router (registry, tickets, public address base).
    @ivar rendezvous_timeout: seconds a listener has to fetch a rendezvous-only request.
    """

    log = Logger()

    def __init__(self, router: HybridConnectionRouter, rendezvous_timeout: float = 30.0) -> None:
        self.router = router
        self.rendezvous_timeout = rendezvous_timeout

    def address(self, admission: Admission, request_id: str, key: str) -> str:
        """
        The one-time address of a request: C{.../$hc/NAME?sb-hc-action=request&sb-hc-id=ID&sb-hc-key=KEY}.

        The id is the tracking id, which the sender sees in the relay's errors; only the C{key}, which only
        the listener is told, claims the address (else a sender could take its late answer's address).
        """
        return request_address(self.router.websocket_base, "/" + admission.entity.name, request_id, key)

    def send_small(self, admission: Admission, payload: bytes, body: bytes) -> IListenerChannel:
        """
        Send a request (its encoded L{HttpRequest}) and its body on a listener's control channel.

        No ticket is opened for the request's address: its exchange holds the address while it waits for
        the answer (L{relay.hybrid.http.HttpRelay.hold_address}), and a ticket is made only if a listener
        comes to it, or for a late answer once the exchange ended without one.

        @param body: the body; sent as one binary message right after the request unless empty.
        @return: the channel it went to.
        @raise RelayError: 502 when no listener could take it.
        """
        for channel in self._candidates(admission):
            if channel.send_request(payload, body):
                return channel
        raise AssertionError("unreachable: the candidates end with a RelayError")

    def announce(
        self, admission: Admission, request_id: str, address: str, exchange: Any, *, key: str
    ) -> tuple[IListenerChannel, Ticket]:
        """
        Ask a listener to fetch a request over a rendezvous.

        @param key: the secret of C{address} (L{address}).
        @return: the channel that was asked, and the ticket the listener's upgrade will claim; its
            outcome fires with the rendezvous, or fails with 504 when the listener does not come in time.
        @raise RelayError: 502 when no listener could take it.
        """
        payload = RendezvousRequest(address=address, id=request_id).encode()
        for channel in self._candidates(admission):
            ticket = self.router.rendezvous.open(
                request_id,
                RequestWait(exchange, True, channel.keeps_rendezvous),
                key=key,
                timeout=self.rendezvous_timeout,
            )
            if channel.send_control(payload):
                self.log.debug(
                    "request {request_id} announced to listener {listener_id} for a rendezvous",
                    request_id=request_id,
                    listener_id=channel.listener_id,
                )
                return channel, ticket
            self.router.rendezvous.cancel(ticket)
        raise AssertionError("unreachable: the candidates end with a RelayError")

    def _candidates(self, admission: Admission) -> Iterator[IListenerChannel]:
        """
        The listeners to try in turn, each once; closing ones are skipped.

        @raise RelayError: 502 when none is left.
        """
        registry = self.router.registry
        tried: list[IListenerChannel] = []
        while True:
            channel = registry.choose(admission.namespace, admission.entity, exclude=tried)
            if channel is None:
                raise RelayError(ErrorKind.BAD_GATEWAY, "No listener is connected to this hybrid connection")
            tried.append(channel)
            if not channel.closing:
                yield channel
