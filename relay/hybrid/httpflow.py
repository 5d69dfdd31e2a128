"""
The two adapters that carry an HTTP exchange's bodies, with back-pressure (L{relay.hybrid.httpexchange}).

L{DownloadProducer} lets a sender that reads a response slowly pause reading from the listener's
rendezvous; L{UploadToRendezvous} streams a sender's request body into a rendezvous as one message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from relay.httpbody import IBodyConsumer, RequestBody

if TYPE_CHECKING:
    from relay.hybrid.httpexchange import Exchange
    from relay.hybrid.httprendezvous import RendezvousRole


@implementer(IPushProducer)
class DownloadProducer:
    """Registered on the sender's request: its full write buffer pauses reading the listener's rendezvous."""

    def __init__(self, exchange: Exchange, transport: Any) -> None:
        self._exchange = exchange
        self._transport = transport
        self._paused = False

    def pauseProducing(self) -> None:
        """The sender reads slowly."""
        self._paused = True
        self._transport.pauseProducing()
        self._exchange.download_paused()

    def resumeProducing(self) -> None:
        """The sender caught up."""
        self._paused = False
        self._transport.resumeProducing()
        self._exchange.download_resumed()

    def release(self) -> None:
        """
        The exchange is over: read the rendezvous again if this sender's full buffer had paused it.

        The end of the body can arrive in the read that filled the sender's buffer; the sender's later
        resume then reaches no producer, and a rendezvous kept for the sender's next request (or closing)
        would never be read again.
        """
        if self._paused:
            self._paused = False
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The sender is gone; the exchange hears about it from the request."""


@implementer(IPushProducer)
class UploadProducer:
    """Registered on the listener's rendezvous: its full write buffer pauses reading the sender's body."""

    def __init__(self, exchange: Exchange, body: RequestBody) -> None:
        self._exchange = exchange
        self._body = body

    def pauseProducing(self) -> None:
        """The listener takes no more for now: stop reading the sender, and time the listener's stall."""
        self._body.pause()
        self._exchange.upload_paused()

    def resumeProducing(self) -> None:
        """The listener drained."""
        self._body.resume()
        self._exchange.upload_resumed()

    def stopProducing(self) -> None:
        """The rendezvous is gone; the exchange hears about it from its role."""


@implementer(IBodyConsumer)
class UploadToRendezvous:
    """Streams a sender's request body into a rendezvous as the fragments of one binary message."""

    def __init__(self, exchange: Exchange, role: RendezvousRole) -> None:
        self._exchange = exchange
        self._protocol = role.protocol

    def body_data(self, data: bytes) -> None:
        """Forward one piece as one frame."""
        self._protocol.sendMessageFrame(data)
        self._exchange.uploaded_bytes += len(data)

    def body_end(self) -> None:
        """Close the message."""
        self._protocol.endMessage()
        self._exchange.request_delivered()

    def body_failed(self, reason: Failure) -> None:
        """The sender went away; the exchange learns it from its request."""
