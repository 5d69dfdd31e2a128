"""
The reactor's lean event dispatch (L{relay.eventloop}): same events handled, same log lines, less work.

Each test drives its own L{EPollReactor} instance (not the global reactor) one poll at a time, with socket
pairs as the ready descriptors.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from relay.eventloop import at_turn_end, lean_dispatch


class Readable:
    """A descriptor the reactor reads from; C{on_read} says what reading does."""

    def __init__(self, test: SynchronousTestCase, name: str, on_read: Any = None) -> None:
        self.sock, self.peer = socket.socketpair()
        test.addCleanup(self.sock.close)
        test.addCleanup(self.peer.close)
        self.name = name
        self.on_read = on_read
        self.reads = 0
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return self.name

    def doRead(self) -> None:
        self.reads += 1
        self.sock.recv(100)
        if self.on_read is not None:
            self.on_read()

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


class LeanDispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.undo = lean_dispatch(self.reactor)
        self.assertIsNotNone(self.undo)
        self.events: list[dict[str, Any]] = []
        log.addObserver(self.events.append)
        self.addCleanup(log.removeObserver, self.events.append)

    def ready(self, name: str, on_read: Any = None) -> Readable:
        readable = Readable(self, name, on_read)
        self.reactor.addReader(readable)  # type: ignore[arg-type]
        readable.peer.send(b"x")
        return readable

    def test_events_reach_their_descriptors(self) -> None:
        """Every ready descriptor is read once per poll; nothing else is touched."""
        first, second = self.ready("first"), self.ready("second")
        idle = Readable(self, "idle")
        self.reactor.addReader(idle)  # type: ignore[arg-type]
        self.reactor.doIteration(0)
        self.assertEqual((first.reads, second.reads, idle.reads), (1, 1, 0))
        self.reactor.doIteration(0)
        self.assertEqual((first.reads, second.reads), (1, 1))

    def test_legacy_log_lines_name_the_connection(self) -> None:
        """A C{log.msg} made while an event is handled carries that descriptor's prefix, as before."""
        self.ready("RelayHTTPChannel,1,127.0.0.1", lambda: log.msg("one"))
        self.ready("RelayHTTPChannel,2,127.0.0.1", lambda: log.msg("two"))
        self.reactor.doIteration(0)
        systems = {e["message"][0]: e["system"] for e in self.events if e.get("message")}
        self.assertEqual(
            systems, {"one": "RelayHTTPChannel,1,127.0.0.1", "two": "RelayHTTPChannel,2,127.0.0.1"}
        )
        log.msg("outside")
        self.assertEqual(self.events[-1]["system"], "-")

    def test_a_failing_read_disconnects_that_descriptor_only(self) -> None:
        """The error is logged under the descriptor's prefix; it is disconnected, the others are read."""

        def fail() -> None:
            raise ValueError("boom")

        bad, good = self.ready("bad", fail), self.ready("good")
        self.reactor.doIteration(0)
        self.assertEqual(good.reads, 1)
        self.assertEqual(len(bad.lost), 1)
        self.assertEqual(good.lost, [])
        (error,) = [e for e in self.events if e.get("isError")]
        self.assertEqual(error["system"], "bad")
        self.assertIsInstance(error["failure"].value, ValueError)
        self.flushLoggedErrors(ValueError)

    def test_an_error_escaping_an_event_is_logged_and_the_poll_goes_on(self) -> None:
        """An exception out of the disconnection itself is logged with the prefix; later events still run."""

        def fail() -> None:
            raise ValueError("read")

        bad = self.ready("bad", fail)

        def lost(reason: Failure) -> None:
            raise RuntimeError("lost")

        bad.connectionLost = lost  # type: ignore[method-assign]
        good = self.ready("good")
        self.reactor.doIteration(0)
        self.assertEqual(good.reads, 1)
        errors = {type(e["failure"].value): e["system"] for e in self.events if e.get("isError")}
        self.assertEqual(errors, {ValueError: "bad", RuntimeError: "bad"})
        self.flushLoggedErrors(ValueError, RuntimeError)

    def test_context_stack_is_left_as_found(self) -> None:
        """Polls push one frame and pop it, failing events and nested contexts included."""
        contexts = context.theContextTracker.currentContext().contexts
        depth = len(contexts)
        seen: list[object] = []

        def nested() -> None:
            log.callWithContext({"system": "inner"}, lambda: log.msg("nested"))
            seen.append(context.get(log.ILogContext)["system"])
            raise ValueError("after")

        self.ready("outer", nested)
        self.reactor.doIteration(0)
        self.assertEqual(len(contexts), depth)
        self.assertEqual(seen, ["outer"])
        self.assertEqual([e["system"] for e in self.events if e.get("message") == ("nested",)], ["inner"])
        self.assertEqual(context.get(log.ILogContext)["system"], "-")
        self.flushLoggedErrors(ValueError)

    def test_turn_end_calls_run_after_every_event_of_the_poll(self) -> None:
        """Calls asked for while a poll's events are handled run once, after the last event, in order."""
        order: list[str] = []

        def handle(name: str) -> None:
            order.append(name)
            at_turn_end(self.reactor, lambda: order.append(f"end {name}"))

        self.ready("first", lambda: handle("first"))
        self.ready("second", lambda: handle("second"))
        self.reactor.doIteration(0)
        self.assertEqual(order, ["first", "second", "end first", "end second"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])  # no timer was needed
        self.reactor.doIteration(0)
        self.assertEqual(len(order), 4)

    def test_a_failing_turn_end_call_is_logged_and_the_others_run(self) -> None:
        ran: list[int] = []

        def fail() -> None:
            raise ValueError("end")

        def handle() -> None:
            at_turn_end(self.reactor, fail)
            at_turn_end(self.reactor, lambda: ran.append(1))

        self.ready("one", handle)
        self.reactor.doIteration(0)
        self.assertEqual(ran, [1])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_turn_end_outside_a_poll_is_a_timer_of_no_delay(self) -> None:
        """From a timer or before the reactor polls, the call waits for the reactor's next round."""
        ran: list[int] = []
        at_turn_end(self.reactor, lambda: ran.append(1))
        (call,) = self.reactor.getDelayedCalls()
        self.assertLessEqual(call.getTime(), self.reactor.seconds())
        self.assertEqual(self.reactor.timeout(), 0)  # the next poll does not wait
        self.reactor.runUntilCurrent()
        self.assertEqual(ran, [1])

    def test_undo(self) -> None:
        """The reactor's own dispatch comes back; a second install on the same reactor changes nothing."""
        assert self.undo is not None
        self.assertIsNone(lean_dispatch(self.reactor))
        self.undo()
        self.assertEqual(self.reactor.doIteration.__func__, EPollReactor.doPoll)  # type: ignore[attr-defined]
        readable = self.ready("again", lambda: log.msg("plain"))
        self.reactor.doIteration(0)
        self.assertEqual(readable.reads, 1)
        self.assertEqual(self.events[-1]["system"], "again")


class OtherReactorsTests(SynchronousTestCase):
    def test_left_alone(self) -> None:
        """Reactors other than a plain epoll one (a subclass, a test clock) keep their own dispatch."""

        class Custom(EPollReactor):
            pass

        custom = Custom()
        self.addCleanup(custom._poller.close)
        self.assertIsNone(lean_dispatch(custom))
        self.assertNotIn("doIteration", vars(custom))
        self.assertIsNone(lean_dispatch(Clock()))


class TurnEndWithoutLeanDispatchTests(SynchronousTestCase):
    def test_other_reactors_get_a_timer_of_no_delay(self) -> None:
        clock = Clock()
        ran: list[int] = []
        at_turn_end(clock, lambda: ran.append(1))
        self.assertEqual(ran, [])
        clock.advance(0)
        self.assertEqual(ran, [1])
