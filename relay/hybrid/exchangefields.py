"""
What an HTTP exchange holds, declared once for the three modules its behaviour is split into.

L{relay.hybrid.httpexchange.Exchange} is one state machine: sending a request and relaying its answer
(L{relay.hybrid.httpexchange}), the rendezvous either may go over (L{relay.hybrid.exchangerendezvous}),
and the timers and back-pressure that bound how long each side may keep the other waiting
(L{relay.hybrid.exchangeflow}). Their methods call one another; L{ExchangeFields} declares the
attributes and methods they share, so that each module type-checks on its own. The exchange's slots
are all in L{Exchange}: the bases hold no state.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from relay.deadlines import Deadlines
    from relay.entities import HybridConnectionSettings
    from relay.errors import RelayError
    from relay.hybrid.http import HttpRelay
    from relay.hybrid.httpflow import DownloadProducer
    from relay.hybrid.httprendezvous import RendezvousRole
    from relay.hybrid.messages import HttpRequest
    from relay.hybrid.rendezvous import Ticket
    from relay.logger import Logger
    from relay.webrequest import RelayRequest


class State(Enum):
    """Where an exchange is."""

    WAITING = "waiting for the response"
    RESPONDING = "relaying the response"
    DONE = "done"


class ExchangeFields:
    """The attributes and methods an exchange's parts use across modules (see the module's docstring)."""

    # All of the exchange's slots, here where every part sees them (the parts add none, so they combine):
    # one exchange per relayed request, and its attributes are read many times each (cost.instructions
    # counted 1 % fewer instructions per request in the gateway with them).
    __slots__ = (
        "_address_deadline",
        "_body",
        "_channel",
        "_download_paused",
        "_download_stall",
        "_expected",
        "_forward_body",
        "_idle_timer",
        "_key",
        "_on_kept_rendezvous",
        "_producer",
        "_request_sent",
        "_response_deadline",
        "_sender_done",
        "_settings",
        "_status",
        "_ticket",
        "_upload_stall",
        "_uploading",
        "admission",
        "connection_lease",
        "id",
        "message",
        "relay",
        "rendezvous",
        "request",
        "sender_channel",
        "sent_bytes",
        "state",
        "uploaded_bytes",
    )

    log: Logger
    relay: HttpRelay
    request: RelayRequest
    message: HttpRequest
    id: str
    state: State
    rendezvous: RendezvousRole | None
    uploaded_bytes: int
    _settings: HybridConnectionSettings
    _body: bytes | None
    _key: str
    _ticket: Ticket | None
    _address_deadline: float | None
    _uploading: bool
    _request_sent: bool
    _on_kept_rendezvous: bool
    _producer: DownloadProducer | None
    _response_deadline: Deadlines | None
    _idle_timer: IDelayedCall | None
    _upload_stall: IDelayedCall | None
    _download_stall: IDelayedCall | None
    _download_paused: bool

    @property
    def clock(self) -> IReactorTime:
        """The relay's clock."""
        return self.relay.clock

    if TYPE_CHECKING:  # defined by the parts (Exchange, ExchangeFlow, ExchangeRendezvous)

        def fail(self, error: RelayError) -> None:
            """End the exchange with C{error}."""

        def _abort(self, reason: str) -> None: ...
        def _dispatch(self) -> None: ...
        def _untrack(self) -> None: ...

        def request_delivered(self) -> None:
            """The whole request reached the listener."""

        def _cancel_response_timer(self) -> None: ...
        def _stop_upload(self) -> None: ...

        def upload_resumed(self) -> None:
            """The listener took more of the body."""
