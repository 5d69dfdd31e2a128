"""
Deciding about a waiting WebSocket sender: what an accept handler sees and may answer.

An accept handler receives an L{AcceptContext} and answers C{True} (accept, with the sender's first
offered subprotocol, as the .NET and Node listeners do), C{False} (reject with 400, as .NET does), an
L{Accept} (accept with a chosen subprotocol or none), or raises or returns a L{Reject} with the status
and description the sender should see. It may be a plain function or a coroutine function.

A handler that has not answered within L{ACCEPT_DECISION_TIMEOUT} is cancelled and the sender rejected
with 504: it would otherwise hold one of the listener's accept slots (L{relay.client.flow}) for good.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from relay.client.address import split_accept_address
from relay.client.commands import AcceptCommand
from relay.client.headers import Headers, parse_subprotocols
from relay.hybrid.messages import RemoteEndpoint
from relay.logger import Logger

log = Logger(namespace="relay.client.accepting")

_REJECTED_BY_USER_CODE = "Rejected by user code"

ACCEPT_DECISION_TIMEOUT = 30.0
"""
Seconds an accept handler has to decide about a sender.

The relay keeps a sender waiting for the listener that long by default (its C{rendezvous_timeout}, and
Azure's window), so a later answer is usually for a sender that is gone.
"""


@dataclass(frozen=True, slots=True)
class AcceptContext:
    """
    What a waiting sender asked for.

    @ivar connection_id: the connection (tracking) id, shared with the sender.
    @ivar request_headers: the sender's upgrade headers, looked up case-insensitively.
    @ivar suffix: the path the sender used below the hybrid connection (C{"/chat"}), or C{""}.
    @ivar query: the sender's query string without relay parameters (C{"room=1"}), or C{""}.
    @ivar remote_endpoint: the sender's address as the relay saw it, when the relay tells.
    @ivar offered_subprotocols: the subprotocols the sender offered, in its order of preference.
    """

    connection_id: str
    request_headers: Headers
    suffix: str
    query: str
    remote_endpoint: RemoteEndpoint | None
    offered_subprotocols: tuple[str, ...]

    @property
    def default_subprotocol(self) -> str | None:
        """The subprotocol chosen when the handler does not choose: the sender's first offer."""
        return self.offered_subprotocols[0] if self.offered_subprotocols else None

    @classmethod
    def from_command(cls, command: AcceptCommand, path: str) -> AcceptContext:
        """Build the context of an C{accept} command for a listener on hybrid connection C{path}."""
        headers = Headers(command.connect_headers)
        suffix, query = split_accept_address(command.address, path)
        return cls(
            connection_id=command.id,
            request_headers=headers,
            suffix=suffix,
            query=query,
            remote_endpoint=command.remote_endpoint,
            offered_subprotocols=parse_subprotocols(headers.get("Sec-WebSocket-Protocol")),
        )


@dataclass(frozen=True, slots=True)
class Accept:
    """
    Accept the sender, negotiating C{subprotocol} (one of the sender's offers) or none at all.
    """

    subprotocol: str | None = None


class Reject(Exception):
    """
    Turn the sender away with an HTTP status and description; raise it or return it from a handler.

    @ivar status_code: 400-599; the sender's upgrade fails with it.
    @ivar description: the reason phrase the sender sees (line breaks are replaced by spaces, and lone
        surrogates, which no URL can carry, by C{?}).
    """

    def __init__(self, status_code: int = 400, description: str = _REJECTED_BY_USER_CODE) -> None:
        if not 400 <= status_code <= 599:
            raise ValueError(f"reject status {status_code} is not a 4xx or 5xx code")
        description = " ".join(description.split()).encode("utf-8", "replace").decode("utf-8")
        description = description or _REJECTED_BY_USER_CODE
        super().__init__(status_code, description)
        self.status_code = status_code
        self.description = description

    def __repr__(self) -> str:
        return f"Reject({self.status_code}, {self.description!r})"


AcceptResult = bool | Accept | Reject
AcceptHandler = Callable[[AcceptContext], AcceptResult | Awaitable[AcceptResult]]
"""A listener's accept handler: sync or async, answering as described in this module."""


def handler_failed(context: AcceptContext) -> Reject:
    """The rejection for a handler that failed: .NET answers 502, with a description naming the tracking id."""
    return Reject(502, f"The listener's accept handler failed. TrackingId:{context.connection_id}")


async def decide(
    handler: AcceptHandler | None,
    context: AcceptContext,
    *,
    clock: IReactorTime | None = None,
    timeout: float | None = None,
) -> Accept | Reject:
    """
    Ask C{handler} about C{context} and normalize the answer.

    Handler failures and nonsensical answers become a 502 rejection (logged), so a bug in application
    code never leaves a sender hanging until the relay's timeout.

    @param clock: with C{timeout}, the clock that times an asynchronous answer.
    @param timeout: seconds an asynchronous handler may take; then it is cancelled, and the sender
        rejected with 504 (logged). C{None} or 0: no limit.
    """
    if handler is None:
        return Accept(context.default_subprotocol)
    try:
        result: Any = handler(context)
        if isinstance(result, Deferred) or inspect.isawaitable(result):
            if (
                clock is not None
                and timeout
                and (isinstance(result, Deferred) or inspect.iscoroutine(result))
            ):
                answer: Deferred[AcceptResult] = ensureDeferred(result)
                answer.addTimeout(timeout, clock)
                result = await answer
            else:
                result = await cast(Awaitable[AcceptResult], result)
    except Reject as reject:
        return reject
    except CancelledError:
        raise
    except TimeoutError:
        log.warn(
            "accept handler did not decide about {connection_id} within {timeout} s; rejected with 504",
            connection_id=context.connection_id,
            timeout=timeout,
        )
        return Reject(504, f"The listener's accept handler timed out. TrackingId:{context.connection_id}")
    except Exception:
        log.failure("accept handler failed for {connection_id}", connection_id=context.connection_id)
        return handler_failed(context)
    if result is True:
        return Accept(context.default_subprotocol)
    if result is False:
        return Reject()
    if isinstance(result, Reject):
        return result
    if isinstance(result, Accept):
        if result.subprotocol is None or result.subprotocol in context.offered_subprotocols:
            return result
        log.error(
            "accept handler chose subprotocol {subprotocol!r} which {connection_id} did not offer",
            subprotocol=result.subprotocol,
            connection_id=context.connection_id,
        )
        return handler_failed(context)
    log.error(
        "accept handler returned {kind} for {connection_id}; expected bool, Accept or Reject",
        kind=type(result).__name__,
        connection_id=context.connection_id,
    )
    return handler_failed(context)
