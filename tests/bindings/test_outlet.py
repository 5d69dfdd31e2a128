"""Tests for L{bindings.outlet}: bounded queues, producer pausing and held-back senders."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.outlet import IListenerConnection, ISenderFlow, Outlet, _Item

from .bindings_fakes import FakeConnection, FakeFlow, message


def make(
    max_bytes: int = 100, max_messages: int = 3, send_timeout: float = 30.0
) -> tuple[Outlet, FakeConnection, Clock]:
    clock = Clock()
    connection = FakeConnection("L1")
    outlet = Outlet(
        connection,
        clock=clock,
        entity="e",
        max_bytes=max_bytes,
        max_messages=max_messages,
        send_timeout=send_timeout,
    )
    return outlet, connection, clock


class FakeTests(SynchronousTestCase):
    """The fakes provide the interfaces they stand in for."""

    def test_verified(self) -> None:
        """FakeConnection, FakeFlow and Outlet provide their interfaces."""
        self.assertTrue(verifyObject(IListenerConnection, FakeConnection("x")))
        self.assertTrue(verifyObject(ISenderFlow, FakeFlow()))
        self.assertTrue(verifyObject(IPushProducer, make()[0]))


class OutletTests(SynchronousTestCase):
    """An outlet in front of one connection."""

    def test_write_through(self) -> None:
        """An unpaused outlet writes at once and fires the sender's Deferred."""
        outlet, connection, _ = make()
        d = outlet.offer(message(1))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(connection.sent, [message(1).payload])

    def test_paused_queues_in_order(self) -> None:
        """While paused, messages queue; resuming writes them in order and fires their Deferreds."""
        outlet, connection, _ = make()
        outlet.pauseProducing()
        ds = [outlet.offer(message(i)) for i in range(3)]
        for d in ds:
            self.assertNoResult(d)
        self.assertEqual((outlet.queued_messages, outlet.queued_bytes), (3, 30))
        outlet.resumeProducing()
        self.assertEqual(connection.sent, [message(i).payload for i in range(3)])
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(outlet.queued_bytes, 0)

    def test_full_queue_holds_sender(self) -> None:
        """Past the message bound the sender is paused; when room appears it resumes and its message goes."""
        outlet, connection, _ = make(max_messages=2)
        outlet.pauseProducing()
        flow = FakeFlow()
        outlet.offer(message(1), flow)
        outlet.offer(message(2), flow)
        self.assertTrue(flow.reading)
        held = outlet.offer(message(3), flow)
        self.assertFalse(flow.reading)
        self.assertEqual(outlet.waiting_senders, 1)
        outlet.resumeProducing()
        self.assertTrue(flow.reading)
        self.successResultOf(held)
        self.assertEqual(len(connection.sent), 3)

    def test_byte_bound(self) -> None:
        """The byte bound holds senders back too, but one message always fits in an empty queue."""
        outlet, _, _ = make(max_bytes=25)
        outlet.pauseProducing()
        outlet.offer(message(1, size=50))
        self.assertEqual(outlet.queued_messages, 1)
        outlet.offer(message(2, size=10))
        self.assertEqual(outlet.waiting_senders, 1)

    def test_server_busy_after_send_timeout(self) -> None:
        """A sender held back longer than send_timeout gets ServerBusy and reads again."""
        outlet, connection, clock = make(max_messages=1, send_timeout=30)
        outlet.pauseProducing()
        outlet.offer(message(1))
        flow = FakeFlow()
        held = outlet.offer(message(2), flow)
        clock.advance(29.9)
        self.assertNoResult(held)
        clock.advance(0.1)
        failure = self.failureResultOf(held, RelayFaultError)
        self.assertEqual(failure.value.kind, RelayFault.SERVER_BUSY)
        self.assertTrue(flow.reading)
        outlet.resumeProducing()
        self.assertEqual(connection.sent, [message(1).payload])

    def test_order_with_waiting(self) -> None:
        """A new message never overtakes held-back ones, even when the queue drains between them."""
        outlet, connection, _ = make(max_messages=2)
        outlet.pauseProducing()
        for i in range(4):
            outlet.offer(message(i))
        outlet.resumeProducing()
        outlet.offer(message(4))
        self.assertEqual(connection.sent, [message(i).payload for i in range(5)])

    def test_held_back_messages_are_bounded(self) -> None:
        """As many messages and bytes are held back as the queue holds; the next sender gets ServerBusy at once."""
        outlet, connection, _ = make(max_bytes=25, max_messages=2)
        outlet.pauseProducing()
        queued = [outlet.offer(message(i)) for i in range(2)]
        flow = FakeFlow()
        held = [outlet.offer(message(i), flow) for i in (2, 3)]
        self.assertEqual((outlet.waiting_senders, flow.paused), (2, 2))
        refused = outlet.offer(message(4), flow)
        self.assertEqual(self.failureResultOf(refused, RelayFaultError).value.kind, RelayFault.SERVER_BUSY)
        self.assertEqual((outlet.waiting_senders, flow.paused), (2, 2))
        held[1].cancel()
        self.failureResultOf(held[1], CancelledError)
        too_large = outlet.offer(message(5, size=20))  # 30 bytes would be held back: over the byte bound
        self.assertEqual(self.failureResultOf(too_large, RelayFaultError).value.kind, RelayFault.SERVER_BUSY)
        later = outlet.offer(message(6, size=15))
        outlet.resumeProducing()
        for d in [*queued, held[0], later]:
            self.successResultOf(d)
        self.assertEqual(
            connection.sent, [message(i, size=15 if i == 6 else 10).payload for i in (0, 1, 2, 6)]
        )
        self.assertTrue(flow.reading)

    def test_withdrawal_does_not_scan(self) -> None:
        """Withdrawing a queued or held-back message costs the same however many others there are."""
        held = 2000
        outlet, _, clock = make(max_bytes=10 * held, max_messages=held)
        outlet.pauseProducing()
        flows = [FakeFlow() for _ in range(2 * held)]
        offers = [outlet.offer(message(i), flow) for i, flow in enumerate(flows)]
        self.assertEqual((outlet.queued_messages, outlet.waiting_senders), (held, held))
        comparisons = [0]

        def counting_eq(item: object, other: object) -> bool:
            comparisons[0] += 1
            return item is other

        self.patch(_Item, "__eq__", counting_eq)
        for d in reversed(offers):  # the newest senders hang up first
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertLessEqual(comparisons[0], 2 * held)  # a scan per withdrawal made millions
        self.assertEqual((outlet.queued_messages, outlet.queued_bytes, outlet.waiting_senders), (0, 0, 0))
        self.assertTrue(all(flow.reading for flow in flows))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_pause_during_write(self) -> None:
        """A connection that pauses the outlet while being written to stops the pump at once."""
        outlet, connection, _ = make()
        original = connection.send_envelope

        def send_and_pause(payload: bytes) -> bool:
            written = original(payload)
            outlet.pauseProducing()
            return written

        connection.send_envelope = send_and_pause  # type: ignore[method-assign]
        outlet.pauseProducing()
        ds = [outlet.offer(message(i)) for i in range(3)]
        outlet.resumeProducing()
        self.assertEqual(len(connection.sent), 1)
        self.successResultOf(ds[0])
        self.assertNoResult(ds[1])

    def test_withdrawal_lets_a_held_back_sender_in(self) -> None:
        """The room a withdrawn message leaves goes to the next held-back one (not a ServerBusy later)."""
        outlet, connection, clock = make(max_messages=1)
        outlet.pauseProducing()
        first = outlet.offer(message(1))
        flow = FakeFlow()
        second = outlet.offer(message(2), flow)
        self.assertFalse(flow.reading)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertTrue(flow.reading)
        clock.advance(3600)
        self.assertNoResult(second)  # queued, not refused
        outlet.resumeProducing()
        self.successResultOf(second)
        self.assertEqual(len(connection.sent), 1)

    def test_cancel_withdraws(self) -> None:
        """Cancelling a queued or held-back offer removes it; the sender reads again."""
        outlet, connection, clock = make(max_messages=1)
        outlet.pauseProducing()
        queued = outlet.offer(message(1))
        flow = FakeFlow()
        held = outlet.offer(message(2), flow)
        held.cancel()
        self.failureResultOf(held, CancelledError)
        self.assertTrue(flow.reading)
        self.assertEqual(clock.getDelayedCalls(), [])
        queued.cancel()
        self.failureResultOf(queued, CancelledError)
        outlet.resumeProducing()
        self.assertEqual(connection.sent, [])

    def test_close(self) -> None:
        """Closing fails every unwritten message and every later offer with the given fault."""
        outlet, _, clock = make(max_messages=1)
        outlet.pauseProducing()
        queued = outlet.offer(message(1))
        flow = FakeFlow()
        held = outlet.offer(message(2), flow)
        outlet.stopProducing()
        for d in (queued, held, outlet.offer(message(3))):
            self.assertEqual(self.failureResultOf(d, RelayFaultError).value.kind, RelayFault.LISTENER_GONE)
        self.assertTrue(flow.reading)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_overflow_drops_subscriber(self) -> None:
        """A multicast copy that does not fit disconnects the subscriber with 1008 and is not taken."""
        outlet, connection, _ = make(max_messages=2)
        self.assertTrue(outlet.offer_or_drop(message(0)))
        outlet.pauseProducing()
        self.assertTrue(outlet.offer_or_drop(message(1)))
        self.assertTrue(outlet.offer_or_drop(message(2)))
        self.assertFalse(outlet.offer_or_drop(message(3)))
        self.assertEqual(connection.closed, (1008, "subscriber queue overflow"))
        self.assertFalse(outlet.offer_or_drop(message(4)))
        self.assertEqual(outlet.queued_messages, 0)


class SealTests(SynchronousTestCase):
    """A listener leaving gracefully: what it accepted is written, nothing new is taken, then it is told."""

    def test_nothing_queued_drains_at_once(self) -> None:
        """Sealed with nothing to write: the callback runs at once."""
        outlet, _, _ = make()
        drained: list[str] = []
        outlet.seal(lambda: drained.append("x"))
        self.assertEqual((drained, outlet.sealed), (["x"], True))

    def test_queued_and_held_back_are_written_first(self) -> None:
        """Queued and held-back messages are written, in order, before the callback; then it runs once."""
        outlet, connection, _ = make(max_messages=2)
        outlet.pauseProducing()
        flow = FakeFlow()
        sent = [outlet.offer(message(i), flow) for i in range(3)]  # two queued, one held back
        drained: list[int] = []
        outlet.seal(lambda: drained.append(len(connection.sent)))
        self.assertEqual(drained, [])
        outlet.resumeProducing()
        self.assertEqual(connection.sent, [message(i).payload for i in range(3)])
        self.assertEqual(drained, [3])
        for d in sent:
            self.successResultOf(d)
        self.assertTrue(flow.reading)

    def test_offers_after_the_seal_fail_at_once(self) -> None:
        """A message offered after the seal fails with ListenerGone; a multicast copy is not taken."""
        outlet, connection, _ = make()
        outlet.seal(lambda: None)
        failure = self.failureResultOf(outlet.offer(message(1)), RelayFaultError)
        self.assertEqual(failure.value.kind, RelayFault.LISTENER_GONE)
        self.assertFalse(outlet.offer_or_drop(message(2)))
        self.assertEqual(connection.sent, [])
        self.assertFalse(outlet.closed)

    def test_withdrawn_and_expired_messages_count_as_gone(self) -> None:
        """The last message leaving by withdrawal or by its send timeout ends the drain too."""
        outlet, _, _ = make(max_messages=1, send_timeout=5)
        outlet.pauseProducing()
        queued = outlet.offer(message(1))
        held = outlet.offer(message(2))
        drained: list[str] = []
        outlet.seal(lambda: drained.append("x"))
        queued.cancel()
        self.failureResultOf(queued, CancelledError)
        self.assertEqual(drained, [])  # the held-back one moved into the queue
        held.cancel()
        self.failureResultOf(held, CancelledError)
        self.assertEqual(drained, ["x"])
        outlet2, _, clock2 = make(max_messages=1, send_timeout=5)
        outlet2.pauseProducing()
        outlet2.offer(message(1)).addErrback(lambda _: None)
        late = outlet2.offer(message(2))
        drained2: list[str] = []
        outlet2.seal(lambda: drained2.append("x"))
        clock2.advance(5)
        self.failureResultOf(late, RelayFaultError)
        self.assertEqual(drained2, [])  # the queued one is still unwritten
        outlet2.resumeProducing()
        self.assertEqual(drained2, ["x"])

    def test_closed_before_draining(self) -> None:
        """A listener gone before its queue was written: the callback never runs, the queue fails as before."""
        outlet, _, _ = make()
        outlet.pauseProducing()
        queued = outlet.offer(message(1))
        drained: list[str] = []
        outlet.seal(lambda: drained.append("x"))
        outlet.stopProducing()
        self.assertEqual(self.failureResultOf(queued, RelayFaultError).value.kind, RelayFault.LISTENER_GONE)
        outlet.seal(lambda: drained.append("y"))
        self.assertEqual(drained, [])
