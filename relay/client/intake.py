"""
L{SenderIntake}: what a listener does with each C{accept} command, from the decision to the connection.

Kept apart from L{relay.client.listener} (its life cycle: dialling, reconnecting, tokens) as
L{relay.client.renewal} is. It reads the listener's C{accept_handler}, C{accept_timeout},
C{on_connection} and C{on_accept_failed} when a sender arrives, so an application may set them at any
time, and logs under the listener's namespace.

Each sender is decided about and, if accepted, dialled at its rendezvous address; at most
C{max_accept_dials} at once. A rejected sender is turned away by dialling its address with the status,
at most C{max_rejection_dials} at once. At either limit the listener's control channel is not read until
a dial is done (L{relay.client.flow}), so a relay flooding C{accept} commands is slowed down instead of
making the listener dial without bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError

from relay.client.accepting import AcceptContext, Reject, decide, handler_failed
from relay.client.commands import AcceptCommand
from relay.client.connection import HybridWebSocket
from relay.client.flow import ACCEPT_DIALS, REJECTION_DIALS, DialSlots, ReadingHolds
from relay.client.rendezvous import AcceptQueue, accept_sender, reject_sender

if TYPE_CHECKING:
    from relay.client.listener import HybridConnectionListener


class SenderIntake:
    """
    The senders a listener is deciding about, dialling or holding for L{accept_connection}.

    @ivar queue: accepted connections waiting for C{accept_connection()} (without C{on_connection}).
    @ivar holds: the reasons the listener's control channels are not read.
    """

    def __init__(
        self,
        listener: HybridConnectionListener,
        reactor: Any,
        *,
        max_pending_connections: int,
        max_accept_dials: int,
        max_rejection_dials: int,
    ) -> None:
        self._listener = listener
        self._reactor = reactor
        self.queue = AcceptQueue(max_pending_connections)
        self.holds = ReadingHolds()  # on every channel connected, not closed yet (one, but for a moment)
        self._accepts = DialSlots(max_accept_dials, self.holds.while_full(ACCEPT_DIALS))
        self._rejections = DialSlots(max_rejection_dials, self.holds.while_full(REJECTION_DIALS))

    async def handle(self, command: AcceptCommand) -> None:
        """Decide about the sender C{command} announces, then connect it or turn it away."""
        listener = self._listener
        context = AcceptContext.from_command(command, listener.address.path)
        listener.log.info(
            "sender {connection_id} waiting on {path}{suffix}",
            connection_id=context.connection_id,
            path=listener.address.path,
            suffix=context.suffix,
        )
        if listener.on_connection is None and not self.queue.has_room():
            busy = Reject(503, f"Listener busy. TrackingId:{context.connection_id}")
            await self._reject(command, context, busy)
            return
        self.queue.in_flight += 1
        accepted: list[bool] = []  # the handler said yes: its sender is the application's to hear about
        try:
            connection = await self._accepts.run(self._decide_and_dial, command, context, accepted)
        except CancelledError:
            if accepted:  # the listener closed during the rendezvous: the sender never became a connection
                self._accept_failed(context)
            if accepted or listener.closed:
                raise
            # Not the listener closing: the accept handler's own awaited work was cancelled. That is a
            # handler failure like any other (502 at once), not a sender left to the relay's timeout.
            listener.log.warn(
                "accept handler for {connection_id} was cancelled; rejected with 502",
                connection_id=context.connection_id,
            )
            connection = handler_failed(context)
        finally:
            self.queue.in_flight -= 1
        if isinstance(connection, Reject):
            await self._reject(command, context, connection)
            return
        if connection is None:
            self._accept_failed(context)
            return
        if listener.closed:
            connection.close(1001, "listener closed")
            self._accept_failed(context)
        elif listener.on_connection is not None:
            listener.call_app(listener.on_connection, connection, on_failure=lambda: _orphaned(connection))
        else:
            self.queue.put(connection)

    async def _decide_and_dial(
        self, command: AcceptCommand, context: AcceptContext, accepted: list[bool]
    ) -> HybridWebSocket | Reject | None:
        """Ask the accept handler, and dial the sender's rendezvous if it accepts (in an accept slot)."""
        listener = self._listener
        decision = await decide(
            listener.accept_handler, context, clock=self._reactor, timeout=listener.accept_timeout
        )
        if isinstance(decision, Reject):
            return decision  # dialled in a rejection slot, not this one
        accepted.append(True)
        return await accept_sender(self._reactor, command, context, decision.subprotocol, listener.options)

    async def _reject(self, command: AcceptCommand, context: AcceptContext, reject: Reject) -> None:
        options = self._listener.options
        await self._rejections.run(reject_sender, self._reactor, command, context, reject, options)

    def _accept_failed(self, context: AcceptContext) -> None:
        if self._listener.on_accept_failed is not None:
            self._listener.call_app(self._listener.on_accept_failed, context)


def _orphaned(connection: HybridWebSocket) -> None:
    """C{on_connection} failed: nobody serves the connection, so its sender is not left waiting on it."""
    if not connection.closed:
        connection.close(1011, "listener application failed")
