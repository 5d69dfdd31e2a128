"""Tests for L{relay.turnlines}: the log lines of a reactor turn written together, none lost or reordered."""

from __future__ import annotations

import io
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from relay.logtext import twistd_observer
from relay.turnlines import HOLD_LIMIT, TurnLines


class RecordingFile(io.StringIO):
    """A text file that records each C{write} call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


class RunningReactor(MemoryReactorClock):
    """A memory reactor that says it runs, and runs C{callFromThread} calls at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = True

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def line(event: dict[str, Any]) -> str | None:
    """A formatter: the event's text field on a line; no line without one."""
    text = event.get("text")
    return None if text is None else f"{text}\n"


def event(text: str | None, **fields: Any) -> dict[str, Any]:
    return {"text": text, "log_level": LogLevel.info, **fields}


class TurnLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.previous_io_thread = threadable.ioThread
        threadable.registerAsIOThread()
        self.addCleanup(setattr, threadable, "ioThread", self.previous_io_thread)
        self.reactor = RunningReactor()
        self.out = RecordingFile()
        self.lines = TurnLines(self.out, line, self.reactor)

    def test_is_a_log_observer(self) -> None:
        self.assertTrue(ILogObserver.providedBy(self.lines))

    def test_a_turns_lines_are_written_in_one_call_when_it_ends(self) -> None:
        for i in range(10):
            self.lines(event(f"request {i}"))
        self.assertEqual(self.out.writes, [])
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)  # one call for the turn, not one per line
        self.reactor.advance(0)
        self.assertEqual(self.out.writes, ["".join(f"request {i}\n" for i in range(10))])
        self.assertEqual(self.out.flushes, 1)
        self.lines(event("next turn"))
        self.reactor.advance(0)
        self.assertEqual(self.out.writes[1:], ["next turn\n"])

    def test_events_without_text_write_nothing(self) -> None:
        self.lines(event(None))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(0)
        self.assertEqual(self.out.writes, [])

    def test_errors_are_written_at_once_after_the_lines_before_them(self) -> None:
        self.lines(event("first"))
        self.lines(event("broken", log_level=LogLevel.error))
        self.assertEqual(self.out.getvalue(), "first\nbroken\n")
        self.lines(event("then"))
        self.lines(event("fatal", log_level=LogLevel.critical))
        self.assertEqual(self.out.getvalue(), "first\nbroken\nthen\nfatal\n")
        self.reactor.advance(0)  # the turn's call finds nothing left
        self.assertEqual(self.out.getvalue(), "first\nbroken\nthen\nfatal\n")

    def test_failures_are_written_at_once(self) -> None:
        self.lines(event("held"))
        self.lines(event("a failure", log_level=LogLevel.warn, log_failure=Failure(ValueError("x"))))
        self.assertEqual(self.out.getvalue(), "held\na failure\n")

    def test_warnings_wait_for_the_turn(self) -> None:
        self.lines(event("careful", log_level=LogLevel.warn))
        self.assertEqual(self.out.getvalue(), "")
        self.reactor.advance(0)
        self.assertEqual(self.out.getvalue(), "careful\n")

    def test_written_at_once_when_the_reactor_is_not_running(self) -> None:
        self.reactor.running = False
        self.lines(event("before run"))
        self.assertEqual(self.out.writes, ["before run\n"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_written_at_once_from_another_thread(self) -> None:
        self.lines(event("held in the reactor thread"))
        thread = threading.Thread(target=self.lines, args=(event("from a worker"),))
        thread.start()
        thread.join()
        self.assertEqual(self.out.getvalue(), "from a worker\n")  # the reactor's held line is its own
        self.reactor.advance(0)
        self.assertEqual(self.out.getvalue(), "from a worker\nheld in the reactor thread\n")

    def test_no_line_is_lost_while_threads_log(self) -> None:
        def worker(n: int) -> None:
            for i in range(500):
                self.lines(event(f"worker {n} line {i}"))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for i in range(1500):
            self.lines(event(f"reactor line {i}"))
            if i % 100 == 99:
                self.reactor.advance(0)
        for thread in threads:
            thread.join()
        self.reactor.advance(0)
        written = self.out.getvalue().splitlines()
        self.assertEqual(len(written), 3000)
        self.assertEqual(len(set(written)), 3000)
        reactor_lines = [line for line in written if line.startswith("reactor")]
        self.assertEqual(reactor_lines, [f"reactor line {i}" for i in range(1500)])  # in order

    def test_written_once_the_held_lines_reach_the_limit(self) -> None:
        chunk = "x" * 1023
        count = HOLD_LIMIT // 1024
        for _ in range(count - 1):
            self.lines(event(chunk))
        self.assertEqual(self.out.writes, [])
        self.lines(event(chunk))
        self.assertEqual(self.out.writes, [(chunk + "\n") * count])
        self.lines(event("after"))
        self.reactor.advance(0)
        self.assertEqual(self.out.writes[1:], ["after\n"])

    def test_shutdown_writes_what_is_held(self) -> None:
        self.lines(event("last words"))
        triggers = self.reactor.triggers["after"]["shutdown"]
        self.assertEqual(len(triggers), 1)
        function, args, kwargs = triggers[0]
        function(*args, **kwargs)
        self.assertEqual(self.out.getvalue(), "last words\n")

    def test_a_failing_write_is_reported_once_and_the_reactor_goes_on(self) -> None:
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)

        def refuse(text: str) -> int:
            raise OSError(28, "No space left on device")

        self.patch(self.out, "write", refuse)
        for turn in range(2):
            self.lines(event(f"turn {turn}"))
            self.reactor.advance(0)  # raises nothing into the reactor
        self.assertEqual(
            stderr.getvalue(), "relay: cannot write the log: [Errno 28] No space left on device\n"
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class RotationTests(SynchronousTestCase):
    """SIGUSR1 writes the held lines to the file they were logged to, then rotates it."""

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.previous_io_thread = threadable.ioThread
        threadable.registerAsIOThread()
        self.addCleanup(setattr, threadable, "ioThread", self.previous_io_thread)

    def test_held_lines_go_to_the_file_before_rotation(self) -> None:
        reactor = RunningReactor()
        path = Path(self.mktemp())
        observer = twistd_observer({"nodaemon": True, "logfile": str(path)}, reactor)
        assert observer is not None
        observer(
            {"log_format": "{access}", "access": "before rotation", "log_time": 0.0, "log_namespace": "t"}
        )
        self.assertEqual(path.read_text(), "")
        handler = signal.getsignal(signal.SIGUSR1)
        assert callable(handler)
        handler(signal.SIGUSR1, None)
        self.assertIn("before rotation\n", Path(f"{path}.1").read_text())
        observer(
            {"log_format": "{access}", "access": "after rotation", "log_time": 0.0, "log_namespace": "t"}
        )
        reactor.advance(0)
        self.assertIn("after rotation\n", path.read_text())
        self.assertNotIn("before rotation", path.read_text())


class LeanDispatchTurnTests(SynchronousTestCase):
    """On the gateway's own dispatch, a poll's lines are written right after its events, with no timer."""

    def test_lines_of_a_poll_written_together_after_its_events(self) -> None:
        import socket

        from twisted.internet.epollreactor import EPollReactor

        from relay.eventloop import lean_dispatch

        previous_io_thread = threadable.ioThread
        threadable.registerAsIOThread()
        self.addCleanup(setattr, threadable, "ioThread", previous_io_thread)
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertIsNotNone(lean_dispatch(reactor))
        reactor.running = True
        out = RecordingFile()
        lines = TurnLines(out, line, reactor)
        seen_during_poll: list[str] = []

        class Readable:
            def __init__(self, name: str) -> None:
                self.sock, self.peer = socket.socketpair()
                self.name = name

            def fileno(self) -> int:
                return self.sock.fileno()

            def logPrefix(self) -> str:
                return self.name

            def doRead(self) -> None:
                self.sock.recv(10)
                lines(event(f"answered {self.name}"))
                seen_during_poll.append(out.getvalue())

            def connectionLost(self, reason: Any) -> None:
                pass

        readables = [Readable("one"), Readable("two")]
        for readable in readables:
            self.addCleanup(readable.sock.close)
            self.addCleanup(readable.peer.close)
            reactor.addReader(readable)  # type: ignore[arg-type]
            readable.peer.send(b"x")
        reactor.doIteration(0)
        self.assertEqual(seen_during_poll, ["", ""])
        self.assertEqual(sorted(out.writes[0].splitlines()), ["answered one", "answered two"])
        self.assertEqual(len(out.writes), 1)
        self.assertEqual(reactor.getDelayedCalls(), [])
