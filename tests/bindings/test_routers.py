"""Tests for the one-way, multicast and request/reply routers."""

from __future__ import annotations

import weakref

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.multicast import MulticastRouter
from bindings.oneway import Delivered, ListenerSet, OneWayRouter
from bindings.outlet import RoutedMessage
from bindings.requestreply import Reply, RequestReplyRouter
from bindings.settings import MULTICAST, ONEWAY, REQUEST_REPLY, settings_for
from relay.listeners import RoundRobinChooser
from relay.logbudget import LogBudget
from relay.metrics import Cell

from .bindings_fakes import FakeConnection, FakeFlow, message


class _Traced(RoutedMessage):
    """A routed message that can be weakly referenced, to see when the router lets go of it."""


def fault_of(test: SynchronousTestCase, d: object) -> RelayFault:
    return test.failureResultOf(d, RelayFaultError).value.kind  # type: ignore[arg-type]


class OneWayRouterTests(SynchronousTestCase):
    """Spec 5.1."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.listeners = ListenerSet("calc", settings_for(ONEWAY, max_queue_messages=2), self.clock)
        self.router = OneWayRouter(self.listeners, RoundRobinChooser())
        self.a, self.b = FakeConnection("A"), FakeConnection("B")

    def test_no_listener(self) -> None:
        """Without listeners a send fails with NoListener."""
        self.assertEqual(fault_of(self, self.router.send(message(1))), RelayFault.NO_LISTENER)

    def test_one_listener_per_message(self) -> None:
        """Each message reaches exactly one listener, chosen by the injected chooser; order per listener kept."""
        self.listeners.add(self.a)
        self.listeners.add(self.b)
        results = [self.successResultOf(self.router.send(message(i))) for i in range(6)]
        self.assertEqual(results[0], Delivered(1, ("A",)))
        self.assertEqual(self.a.sent, [message(i).payload for i in (0, 2, 4)])
        self.assertEqual(self.b.sent, [message(i).payload for i in (1, 3, 5)])

    def test_left_listener_gets_nothing(self) -> None:
        """A removed listener is never chosen; its queued messages fail with ListenerGone."""
        outlet = self.router.add_listener(self.a)
        outlet.pauseProducing()
        queued = self.router.send(message(1))
        self.router.remove_listener(self.a)
        self.assertEqual(fault_of(self, queued), RelayFault.LISTENER_GONE)
        self.assertEqual(fault_of(self, self.router.send(message(2))), RelayFault.NO_LISTENER)

    def test_closing_listener_not_chosen(self) -> None:
        """
        A listener whose socket is closing is passed over while another is open (a rolling restart).

        The chooser picked among all registered listeners, and a message that landed on the closing one
        failed with ListenerGone although another listener was there to take it.
        """
        self.listeners.add(self.a)
        self.listeners.add(self.b)
        self.a.closed = (1000, "bye")  # closing: registered until the close handshake ends
        results = [self.successResultOf(self.router.send(message(i))) for i in range(4)]
        self.assertEqual(results, [Delivered(1, ("B",))] * 4)
        self.assertEqual(self.b.sent, [message(i).payload for i in range(4)])

    def test_only_closing_listeners(self) -> None:
        """When every listener is closing, the message fails with ListenerGone, as before."""
        self.listeners.add(self.a)
        self.listeners.add(self.b)
        self.a.closed = self.b.closed = (1000, "bye")
        self.assertEqual(fault_of(self, self.router.send(message(1))), RelayFault.LISTENER_GONE)

    def test_busy_listener(self) -> None:
        """A full listener queue holds the sender back, then ServerBusy after send_timeout."""
        self.listeners.add(self.a).pauseProducing()
        flow = FakeFlow()
        self.router.send(message(1), flow)
        self.router.send(message(2), flow)
        held = self.router.send(message(3), flow)
        self.assertFalse(flow.reading)
        self.clock.advance(30)
        self.assertEqual(fault_of(self, held), RelayFault.SERVER_BUSY)
        self.assertTrue(flow.reading)

    def test_unexpected_reply_logged(self) -> None:
        """A reply from a one-way listener is logged and dropped."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.router.unexpected_reply(self.a, "urn:m:1")
        self.assertEqual([e["relates_to"] for e in events], ["urn:m:1"])

    def test_unexpected_replies_within_a_budget(self) -> None:
        """With the connection's budget, lines past it are counted; the next one let through says how many."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        lines = LogBudget(self.clock, per_second=1, burst=2)
        for i in range(5):
            self.router.unexpected_reply(self.a, f"urn:m:{i}", lines)
        self.clock.advance(1)
        self.router.unexpected_reply(self.a, "urn:m:5", lines)
        self.assertEqual(
            [(e["relates_to"], e["unlogged"]) for e in events],
            [("urn:m:0", 0), ("urn:m:1", 0), ("urn:m:5", 3)],
        )
        self.assertIn("were not logged", str(events[-1]["log_format"]))


class MulticastRouterTests(SynchronousTestCase):
    """Spec 5.2."""

    def setUp(self) -> None:
        self.router = MulticastRouter("chat", settings_for(MULTICAST, max_queue_messages=2), Clock())

    def test_zero_subscribers(self) -> None:
        """Publishing with no subscribers succeeds with a count of 0."""
        self.assertEqual(self.successResultOf(self.router.publish(message(1))), 0)

    def test_fan_out_in_order(self) -> None:
        """Every subscriber gets every message in publish order; the count is the number of subscribers."""
        subscribers = [FakeConnection(str(i)) for i in range(3)]
        for s in subscribers:
            self.router.subscribe(s)
        counts = [self.successResultOf(self.router.publish(message(i))) for i in range(100)]
        self.assertEqual(set(counts), {3})
        for s in subscribers:
            self.assertEqual(s.sent, [message(i).payload for i in range(100)])

    def test_one_failing_subscriber(self) -> None:
        """A subscriber whose write raises gets no copy and is not counted; the others still get theirs."""

        class Broken(FakeConnection):
            def send_envelope(self, payload: bytes) -> bool:
                raise RuntimeError("socket exploded")

        first, broken, last = FakeConnection("a"), Broken("bad"), FakeConnection("c")
        for subscriber in (first, broken, last):
            self.router.subscribe(subscriber)
        self.assertEqual(self.successResultOf(self.router.publish(message(1))), 2)
        self.assertEqual((first.sent, last.sent), ([message(1).payload], [message(1).payload]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_closing_subscriber_not_counted_nor_slow(self) -> None:
        """A subscriber whose socket is closing gets no copy, is not counted, and is no slow disconnect."""
        closing, live = FakeConnection("closing"), FakeConnection("live")
        for subscriber in (closing, live):
            self.router.subscribe(subscriber)
        closing.closed = (1000, "bye")  # the fake writes nothing once closed, as a closing socket
        self.assertEqual(self.successResultOf(self.router.publish(message(1))), 1)
        self.assertEqual(self.router.slow_disconnects.value, 0)

    def test_membership_changes(self) -> None:
        """A late subscriber sees only later messages; one that left sees nothing more."""
        early, late = FakeConnection("early"), FakeConnection("late")
        self.router.subscribe(early)
        self.router.publish(message(1))
        self.router.subscribe(late)
        self.router.publish(message(2))
        self.router.unsubscribe(early)
        self.assertEqual(self.successResultOf(self.router.publish(message(3))), 1)
        self.assertEqual(early.sent, [message(1).payload, message(2).payload])
        self.assertEqual(late.sent, [message(2).payload, message(3).payload])

    def test_publisher_is_own_subscriber(self) -> None:
        """A connection that publishes and subscribes receives its own messages."""
        both = FakeConnection("both")
        self.router.subscribe(both)
        self.router.publish(message(1))
        self.assertEqual(both.sent, [message(1).payload])

    def test_discarded_copies_counted_and_logged(self) -> None:
        """
        Copies queued for a subscriber that is dropped or leaves are discarded unsent: counted and logged.

        The publisher was told they were taken; they must not vanish without a trace.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        dropped = Cell()
        router = MulticastRouter(
            "chat", settings_for(MULTICAST, max_queue_messages=2), Clock(), dropped_copies=dropped
        )
        slow, gone = FakeConnection("slow"), FakeConnection("gone")
        router.subscribe(slow).pauseProducing()
        router.subscribe(gone).pauseProducing()
        self.assertEqual([self.successResultOf(router.publish(message(i))) for i in range(2)], [2, 2])
        router.unsubscribe(gone)
        self.assertEqual(self.successResultOf(router.publish(message(2))), 0)  # slow overflows
        self.assertEqual(dropped.value, 4)
        lines = [e for e in events if "discarded" in str(e.get("log_format", ""))]
        self.assertEqual([(e["listener_id"], e["copies"]) for e in lines], [("gone", 2), ("slow", 2)])

    def test_slow_subscriber_dropped(self) -> None:
        """An overflowing subscriber is disconnected and not counted; the others are unaffected."""
        slow, fast = FakeConnection("slow"), FakeConnection("fast")
        self.router.subscribe(slow).pauseProducing()
        self.router.subscribe(fast)
        counts = [self.successResultOf(self.router.publish(message(i))) for i in range(4)]
        self.assertEqual(counts, [2, 2, 1, 1])
        self.assertEqual(slow.closed, (1008, "subscriber queue overflow"))
        self.assertEqual(self.router.subscribers, [fast])
        self.assertEqual(len(fast.sent), 4)


class RefusalLinesTests(SynchronousTestCase):
    """
    The routers' refusals are logged within a budget per name, with the MessageID shortened.

    A WebSocket sender causes them as fast as it sends (its faults were budgeted, these lines were not).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.settings = settings_for(REQUEST_REPLY, request_timeout=60.0)

    def refusals(self) -> list[dict[str, object]]:
        return [e for e in self.events if "refused" in str(e.get("log_format", ""))]

    def test_duplicates(self) -> None:
        router = RequestReplyRouter(ListenerSet("calc", self.settings, self.clock), RoundRobinChooser())
        router.add_listener(FakeConnection("A"))
        long_id = "urn:uuid:" + "d" * 5000
        first = router.request(RoutedMessage(b"x", long_id, "T"))
        for _ in range(100):
            d = router.request(RoutedMessage(b"x", long_id, "T"))
            self.assertEqual(fault_of(self, d), RelayFault.DUPLICATE_MESSAGE_ID)
        self.assertEqual(len(self.refusals()), 20)
        self.assertLess(len(str(self.refusals()[0]["message_id"])), 300)
        self.clock.advance(1)
        self.assertEqual(
            fault_of(self, router.request(RoutedMessage(b"x", long_id, "T"))), RelayFault.DUPLICATE_MESSAGE_ID
        )
        self.assertEqual(self.refusals()[-1]["unlogged"], 80)
        first.cancel()
        self.failureResultOf(first, CancelledError)

    def test_abandoned(self) -> None:
        """A sender that leaves abandons every request it has in flight: those lines are budgeted too."""
        router = RequestReplyRouter(ListenerSet("calc", self.settings, self.clock), RoundRobinChooser())
        router.add_listener(FakeConnection("A"))
        calls = [router.request(message(i)) for i in range(100)]
        for call in calls:
            call.cancel()
            self.failureResultOf(call, CancelledError)
        lines = [e for e in self.events if "abandoned" in str(e.get("log_format", ""))]
        self.assertEqual(len(lines), 20)

    def test_no_listener(self) -> None:
        router = OneWayRouter(ListenerSet("events", settings_for(ONEWAY), self.clock), RoundRobinChooser())
        for i in range(100):
            self.assertEqual(fault_of(self, router.send(message(i))), RelayFault.NO_LISTENER)
        self.assertEqual(len(self.refusals()), 20)


class RequestReplyRouterTests(SynchronousTestCase):
    """Spec 5.3."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.settings = settings_for(REQUEST_REPLY, request_timeout=60.0, max_in_flight=2)
        self.listeners = ListenerSet("calc", self.settings, self.clock)
        self.router = RequestReplyRouter(self.listeners, RoundRobinChooser())
        self.a, self.b = FakeConnection("A"), FakeConnection("B")

    def test_no_listener(self) -> None:
        """A request without listeners fails with NoListener."""
        self.assertEqual(fault_of(self, self.router.request(message(1))), RelayFault.NO_LISTENER)

    def test_closing_listener_not_chosen(self) -> None:
        """A request goes to an open listener rather than to one whose socket is closing."""
        self.router.add_listener(self.a)
        self.router.add_listener(self.b)
        self.a.closed = (1000, "bye")
        pending = [self.router.request(message(i)) for i in range(2)]
        self.assertEqual(self.b.sent, [message(0).payload, message(1).payload])
        for d in pending:
            self.assertNoResult(d)
        self.assertEqual(self.router.in_flight(self.a), 0)

    def test_reply(self) -> None:
        """The reply whose RelatesTo matches reaches the caller; the entry is forgotten."""
        self.router.add_listener(self.a)
        d = self.router.request(message(1))
        self.assertEqual(self.a.sent, [message(1).payload])
        self.assertNoResult(d)
        self.assertTrue(self.router.reply(self.a, "urn:m:1", b"<reply/>"))
        self.assertEqual(self.successResultOf(d), Reply(b"<reply/>", "A"))
        self.assertEqual((self.router.in_flight(), self.clock.getDelayedCalls()), (0, []))
        self.assertFalse(self.router.reply(self.a, "urn:m:1", b"<again/>"))

    def test_out_of_order(self) -> None:
        """Several requests may be in flight on one listener and be answered in any order."""
        self.router.add_listener(self.a)
        d1, d2 = self.router.request(message(1)), self.router.request(message(2))
        self.router.reply(self.a, "urn:m:2", b"two")
        self.router.reply(self.a, "urn:m:1", b"one")
        self.assertEqual(
            (self.successResultOf(d1).payload, self.successResultOf(d2).payload), (b"one", b"two")
        )

    def test_reply_from_other_listener(self) -> None:
        """A reply only matches requests pending on the listener that sends it."""
        self.router.add_listener(self.a)
        self.router.add_listener(self.b)
        d = self.router.request(message(1))
        self.assertFalse(self.router.reply(self.b, "urn:m:1", b"x"))
        self.assertNoResult(d)

    def test_timeout_and_late_reply(self) -> None:
        """No reply within request_timeout gives Timeout; the late reply is logged and dropped."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.router.add_listener(self.a)
        d = self.router.request(message(1))
        self.clock.advance(59.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(fault_of(self, d), RelayFault.TIMEOUT)
        later = self.router.request(message(2))
        self.assertFalse(self.router.reply(self.a, "urn:m:1", b"late"))
        self.assertNoResult(later)
        self.assertTrue(
            any(e.get("relates_to") == "urn:m:1" and e["log_level"] == LogLevel.info for e in events)
        )

    def test_listener_gone(self) -> None:
        """Pending requests of a leaving listener fail with ListenerGone and are not retried elsewhere."""
        self.router.add_listener(self.a)
        self.router.add_listener(self.b)
        d1 = self.router.request(message(1))
        d2 = self.router.request(message(2))
        self.router.remove_listener(self.a)
        self.assertEqual(fault_of(self, d1), RelayFault.LISTENER_GONE)
        self.assertNoResult(d2)
        self.assertEqual(self.b.sent, [message(2).payload])
        self.assertEqual(self.router.in_flight(self.a), 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_gone_before_written(self) -> None:
        """A request still queued when its listener leaves fails with ListenerGone."""
        self.router.add_listener(self.a).pauseProducing()
        d = self.router.request(message(1))
        self.router.remove_listener(self.a)
        self.assertEqual(fault_of(self, d), RelayFault.LISTENER_GONE)
        self.assertEqual((self.a.sent, self.clock.getDelayedCalls()), ([], []))

    def test_payload_freed_once_written(self) -> None:
        """
        A pending request keeps its ids, not its envelope: the message is freed once the outlet wrote it.

        The outlet holds it while queued; the entry lives on until the reply, which still reaches the caller.
        """
        outlet = self.router.add_listener(self.a)
        outlet.pauseProducing()
        sent = _Traced(b"<request/>", "urn:m:1", "T1")
        held = weakref.ref(sent)
        d = self.router.request(sent)
        del sent
        self.assertIsNotNone(held())
        outlet.resumeProducing()
        self.assertEqual(self.a.sent, [b"<request/>"])
        self.assertIsNone(held())
        self.assertEqual(self.router.in_flight(), 1)
        self.assertTrue(self.router.reply(self.a, "urn:m:1", b"<reply/>"))
        self.assertEqual(self.successResultOf(d), Reply(b"<reply/>", "A"))

    def test_ids_logged_after_write(self) -> None:
        """A request that fails after it was written is still logged with its MessageID and tracking id."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.router.add_listener(self.a)
        d = self.router.request(message(1, tracking_id="T1"))
        self.clock.advance(60)
        self.assertEqual(fault_of(self, d), RelayFault.TIMEOUT)
        failed = [e for e in events if e.get("subcode") is not None]
        self.assertEqual(
            [(e["message_id"], e["tracking_id"], e["listener_id"]) for e in failed], [("urn:m:1", "T1", "A")]
        )

    def test_duplicate_message_id(self) -> None:
        """A second request with a MessageID in flight on the same listener gets DuplicateMessageId."""
        self.router.add_listener(self.a)
        first = self.router.request(message(1))
        self.assertEqual(fault_of(self, self.router.request(message(1))), RelayFault.DUPLICATE_MESSAGE_ID)
        self.assertNoResult(first)
        self.assertEqual(len(self.a.sent), 1)

    def test_in_flight_cap(self) -> None:
        """A listener at its in-flight cap is skipped; when all are, the request gets ServerBusy."""
        self.router.add_listener(self.a)
        self.router.add_listener(self.b)
        for i in range(4):
            self.router.request(message(i))
        self.assertEqual((self.router.in_flight(self.a), self.router.in_flight(self.b)), (2, 2))
        self.assertEqual(fault_of(self, self.router.request(message(9))), RelayFault.SERVER_BUSY)
        self.router.reply(self.b, "urn:m:1", b"r")
        self.router.request(message(10))
        self.assertEqual(self.b.sent[-1], message(10).payload)

    def test_cancel(self) -> None:
        """A caller that goes away cancels its request: the timer stops and a later reply is dropped."""
        self.router.add_listener(self.a)
        d = self.router.request(message(1))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((self.router.in_flight(), self.clock.getDelayedCalls()), (0, []))
        self.assertFalse(self.router.reply(self.a, "urn:m:1", b"r"))

    def test_cancel_before_written(self) -> None:
        """Cancelling a request still queued for its listener withdraws it: it is never written."""
        outlet = self.router.add_listener(self.a)
        outlet.pauseProducing()
        d = self.router.request(message(1))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        outlet.resumeProducing()
        self.assertEqual(self.a.sent, [])

    def test_timeout_while_queued(self) -> None:
        """A request that times out before it was written is withdrawn from the queue."""
        outlet = self.router.add_listener(self.a)
        outlet.pauseProducing()
        d = self.router.request(message(1))
        self.clock.advance(60)
        self.assertEqual(fault_of(self, d), RelayFault.TIMEOUT)
        outlet.resumeProducing()
        self.assertEqual(self.a.sent, [])

    def test_busy_queue(self) -> None:
        """A request held back past send_timeout gets ServerBusy and leaves no entry."""
        listeners = ListenerSet(
            "calc", settings_for(REQUEST_REPLY, max_queue_messages=1, send_timeout=5.0), self.clock
        )
        router = RequestReplyRouter(listeners, RoundRobinChooser())
        router.add_listener(self.a).pauseProducing()
        router.request(message(1))
        held = router.request(message(2))
        self.clock.advance(5)
        self.assertEqual(fault_of(self, held), RelayFault.SERVER_BUSY)
        self.assertEqual(router.in_flight(), 1)

    def test_one_way_operation(self) -> None:
        """One-way operations of a request/reply contract are delivered as datagrams, with no entry."""
        self.router.add_listener(self.a)
        self.assertEqual(self.successResultOf(self.router.send_one_way(message(1))), Delivered(1, ("A",)))
        self.assertEqual(self.router.in_flight(), 0)


class TraceTests(SynchronousTestCase):
    """Per-message debug events only when the gateway's trace_messages asks for them."""

    def test_off_by_default(self) -> None:
        """Routing logs nothing per message; a refusal is still logged."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        router = MulticastRouter("chat", settings_for(MULTICAST), Clock())
        router.subscribe(FakeConnection("a"))
        router.publish(message(1))
        oneway = OneWayRouter(ListenerSet("ow", settings_for(ONEWAY), Clock()), RoundRobinChooser())
        oneway.add_listener(FakeConnection("b"))
        self.successResultOf(oneway.send(message(2)))
        self.assertEqual(list(events), [])
        self.failureResultOf(
            OneWayRouter(ListenerSet("x", settings_for(ONEWAY), Clock()), RoundRobinChooser()).send(
                message(3)
            )
        )
        self.assertEqual(len(events), 1)

    def test_on(self) -> None:
        """With trace on, publishes and deliveries are debug events naming the message."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        router = MulticastRouter("chat", settings_for(MULTICAST), Clock(), trace=True)
        router.subscribe(FakeConnection("a"))
        router.publish(message(1))
        oneway = OneWayRouter(
            ListenerSet("ow", settings_for(ONEWAY), Clock(), trace=True), RoundRobinChooser()
        )
        oneway.add_listener(FakeConnection("b"))
        self.successResultOf(oneway.send(message(2)))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.debug, LogLevel.debug])
        self.assertEqual([e["message_id"] for e in events], [message(1).message_id, message(2).message_id])
