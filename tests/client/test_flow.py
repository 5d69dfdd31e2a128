"""Tests for L{relay.client.flow}: when a control channel stops reading, and when it reads again."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from relay.client.control import ControlChannel
from relay.client.flow import (
    ACCEPT_DIALS,
    FETCH_DIALS,
    REJECTION_DIALS,
    WRITE_BACKLOG,
    ControlGate,
    ControlReading,
    DialSlots,
    ReadingHolds,
)


class CountingTransport(StringTransport):
    """A transport that counts how often its reading was paused and resumed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        super().resumeProducing()


class FakeProtocol:
    """What a control channel uses of its Autobahn protocol, over a L{StringTransport}."""

    write_through = False

    def __init__(self, transport: StringTransport) -> None:
        self.transport = transport
        self.closes: list[int] = []

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def send_wholes(self, messages: Any) -> None:
        for payload, _ in messages:
            self.transport.write(payload)

    def sendClose(self, code: int, reason: object) -> None:
        self.closes.append(code)


def log_lines(observer: EventLoggingObserver) -> list[str]:
    return [
        e["log_format"].format(**e)
        for e in observer
        if e.get("log_namespace", "").startswith("relay.client.flow")
    ]


class ControlReadingTests(SynchronousTestCase):
    def test_reasons_count_apart(self) -> None:
        """Reading resumes only when the last reason ends, whichever order they end in."""
        for first, second in ((WRITE_BACKLOG, REJECTION_DIALS), (REJECTION_DIALS, WRITE_BACKLOG)):
            transport = CountingTransport()
            reading = ControlReading(transport, listener_id="L")
            reading.hold(first)
            reading.hold(second)
            reading.hold(first)
            self.assertEqual((transport.calls, transport.producerState), (["pause"], "paused"))
            reading.release(first)
            self.assertEqual(transport.calls, ["pause"])
            self.assertEqual(reading.reasons, {second})
            reading.release(first)
            self.assertTrue(reading.paused)
            reading.release(second)
            self.assertEqual((transport.calls, transport.producerState), (["pause", "resume"], "producing"))
            self.assertFalse(reading.paused)
            reading.release(second)
            self.assertEqual(transport.calls, ["pause", "resume"])

    def test_one_line_when_reading_stops_and_one_when_it_resumes(self) -> None:
        """A pause is logged with its reason, the resume with the time it lasted; a second reason is not."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        reading = ControlReading(CountingTransport(), listener_id="L-1", clock=clock)
        reading.hold(REJECTION_DIALS)
        reading.hold(WRITE_BACKLOG)
        clock.advance(2.5)
        reading.release(REJECTION_DIALS)
        reading.release(WRITE_BACKLOG)
        self.assertEqual(
            log_lines(observer),
            [
                f"listener L-1 stops reading its control channel: {REJECTION_DIALS}",
                "listener L-1 reads its control channel again after 2.5 s",
            ],
        )

    def test_frequent_pauses_are_logged_within_a_budget(self) -> None:
        """A channel that pauses often logs a burst of pauses, then one a minute that counts the others."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        reading = ControlReading(CountingTransport(), listener_id="L", clock=clock)
        for _ in range(20):
            reading.hold(WRITE_BACKLOG)
            reading.release(WRITE_BACKLOG)
        self.assertEqual(len(log_lines(observer)), 10)  # five pauses and their resumes
        clock.advance(60)
        reading.hold(WRITE_BACKLOG)
        self.assertEqual(
            log_lines(observer)[-1],
            f"listener L stops reading its control channel: {WRITE_BACKLOG} (15 earlier pauses not logged)",
        )

    def test_pauses_not_logged_are_counted_when_the_channel_ends(self) -> None:
        """A channel that ends with pauses held back by its budget says how many, once."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reading = ControlReading(CountingTransport(), listener_id="L", clock=Clock())
        for _ in range(20):
            reading.hold(WRITE_BACKLOG)
            reading.release(WRITE_BACKLOG)
        reading.end(resume=True)
        reading.end(resume=False)  # closing, then closed
        self.assertEqual(
            log_lines(observer)[10:],
            ["listener L: 15 more pauses of its control channel were not logged (at most one every 60 s)"],
        )

    def test_end(self) -> None:
        """A closing channel is read again; once ended, nothing holds it and nothing resumes it."""
        transport = CountingTransport()
        reading = ControlReading(transport, listener_id="L")
        reading.hold(WRITE_BACKLOG)
        reading.end(resume=True)
        self.assertEqual(transport.calls, ["pause", "resume"])
        reading.hold(REJECTION_DIALS)
        reading.release(WRITE_BACKLOG)
        self.assertEqual(transport.calls, ["pause", "resume"])
        gone = CountingTransport()
        reading = ControlReading(gone, listener_id="L")
        reading.hold(WRITE_BACKLOG)
        reading.end(resume=False)
        self.assertFalse(reading.paused)
        self.assertEqual(gone.calls, ["pause"])


class ControlChannelFlowTests(SynchronousTestCase):
    """A control channel's producer and the listener's hold work on one transport, apart."""

    def channel(self, transport: StringTransport) -> tuple[ControlChannel, FakeProtocol]:
        protocol = FakeProtocol(transport)
        ignore: Any = lambda *args: None  # noqa: E731
        channel = ControlChannel(
            protocol,  # type: ignore[arg-type]
            listener_id="L",
            on_accept=ignore,
            on_request=ignore,
            on_closed=ignore,
            clock=Clock(),
        )
        return channel, protocol

    def test_a_full_write_buffer_stops_reading_until_it_drained(self) -> None:
        """
        A full write buffer stops reading until it has drained.

        The channel registers a streaming producer; its pause (the buffer passed the high-water mark)
        stops reading the transport, its resume (the buffer drained) reads again.
        """
        transport = CountingTransport()
        channel, _ = self.channel(transport)
        gate = transport.producer
        self.assertIsInstance(gate, ControlGate)
        self.assertTrue(transport.streaming)
        verifyObject(IPushProducer, gate)
        self.assertTrue(channel.send_message(b"answer"))
        gate.pauseProducing()
        self.assertTrue(channel.reading_paused)
        self.assertEqual(transport.producerState, "paused")
        self.assertNoResult(gate.when_writable())
        gate.resumeProducing()
        self.assertFalse(channel.reading_paused)
        self.assertEqual(transport.calls, ["pause", "resume"])

    def test_write_backlog_and_rejections_together(self) -> None:
        """Neither the drained buffer nor the end of the rejection limit resumes what the other holds."""
        transport = CountingTransport()
        channel, _ = self.channel(transport)
        gate = transport.producer
        gate.pauseProducing()
        channel.hold_reading(REJECTION_DIALS)
        gate.resumeProducing()
        self.assertEqual((transport.calls, transport.producerState), (["pause"], "paused"))
        channel.release_reading(REJECTION_DIALS)
        self.assertEqual(transport.calls, ["pause", "resume"])
        channel.hold_reading(REJECTION_DIALS)
        gate.pauseProducing()
        channel.release_reading(REJECTION_DIALS)
        self.assertTrue(channel.reading_paused)
        gate.resumeProducing()
        self.assertEqual(transport.calls, ["pause", "resume", "pause", "resume"])
        self.assertEqual(transport.producerState, "producing")

    def test_closing_reads_again(self) -> None:
        """C{close()} reads again, since the relay's close frame is behind what was not read."""
        transport = CountingTransport()
        channel, protocol = self.channel(transport)
        transport.producer.pauseProducing()
        channel.hold_reading(REJECTION_DIALS)
        closing = channel.close()
        self.assertEqual((transport.calls, protocol.closes), (["pause", "resume"], [1000]))
        self.assertFalse(channel.reading_paused)
        channel.connection_closed(True, 1000, None)
        self.successResultOf(closing)

    def test_a_closed_channel_is_not_held(self) -> None:
        """The listener's hold on a channel that is gone changes nothing."""
        transport = CountingTransport()
        channel, _ = self.channel(transport)
        channel.connection_closed(False, 1006, None)
        channel.hold_reading(REJECTION_DIALS)
        channel.release_reading(REJECTION_DIALS)
        self.assertEqual(transport.calls, [])


class DialSlotsTests(SynchronousTestCase):
    def test_limit_and_turns(self) -> None:
        """Dials beyond the limit wait in order; C{on_full} hears the changes, not every dial."""
        changes: list[bool] = []
        slots = DialSlots(2, changes.append)
        dials: list[Deferred[str]] = []

        def dial(name: str) -> Deferred[str]:
            dials.append(Deferred())
            started.append(name)
            return dials[-1]

        started: list[str] = []
        results = [Deferred.fromCoroutine(slots.run(dial, name)) for name in "abcd"]
        self.assertEqual((started, slots.in_progress, slots.waiting, changes), (["a", "b"], 2, 2, [True]))
        dials[0].callback("A")
        self.assertEqual(self.successResultOf(results[0]), "A")
        self.assertEqual((started, changes), (["a", "b", "c"], [True]))
        dials[1].errback(ValueError("refused"))
        self.failureResultOf(results[1], ValueError)
        self.assertEqual((started, slots.waiting, changes), (["a", "b", "c", "d"], 0, [True]))
        dials[2].callback("C")
        self.assertEqual((slots.in_progress, slots.full, changes), (1, False, [True, False]))
        dials[3].callback("D")
        self.assertEqual((slots.in_progress, changes), (0, [True, False]))

    def test_cancelled_while_waiting(self) -> None:
        """A dial cancelled while it waits gives up its turn without taking a slot."""
        slots = DialSlots(1, lambda full: None)
        first: Deferred[None] = Deferred()
        calls: list[str] = []

        def dial(name: str) -> Deferred[None]:
            calls.append(name)
            return first

        running = Deferred.fromCoroutine(slots.run(dial, "a"))
        waiting = Deferred.fromCoroutine(slots.run(dial, "b"))
        waiting.cancel()
        self.failureResultOf(waiting)
        first.callback(None)
        self.successResultOf(running)
        self.assertEqual((calls, slots.in_progress, slots.full), (["a"], 0, False))

    def test_limit_must_be_positive(self) -> None:
        self.assertRaises(ValueError, DialSlots, 0, lambda full: None)


class RecordingChannel:
    """A control channel's hold and release calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def hold_reading(self, reason: str) -> None:
        self.calls.append(("hold", reason))

    def release_reading(self, reason: str) -> None:
        self.calls.append(("release", reason))


class ReadingHoldsTests(SynchronousTestCase):
    def test_every_channel_now_and_later(self) -> None:
        """A hold reaches the channels there are and those that come while it lasts; a gone one hears no more."""
        holds = ReadingHolds()
        old, new = RecordingChannel(), RecordingChannel()
        holds.attach(old)
        on_full = holds.while_full(ACCEPT_DIALS)
        on_full(True)
        holds.hold(FETCH_DIALS)
        holds.detach(old)
        holds.attach(new)
        on_full(False)
        self.assertEqual(holds.reasons, {FETCH_DIALS})
        holds.release(FETCH_DIALS)
        self.assertEqual(old.calls, [("hold", ACCEPT_DIALS), ("hold", FETCH_DIALS)])
        self.assertEqual(
            new.calls,
            [
                ("hold", ACCEPT_DIALS),
                ("hold", FETCH_DIALS),
                ("release", ACCEPT_DIALS),
                ("release", FETCH_DIALS),
            ],
        )
        self.assertEqual(holds.reasons, frozenset())

    def test_reasons_are_apart_on_a_channel(self) -> None:
        """Each limit is its own reason: the end of one does not resume what another holds."""
        transport = CountingTransport()
        reading = ControlReading(transport, listener_id="L")
        holds = ReadingHolds()

        class Channel:
            hold_reading = staticmethod(reading.hold)
            release_reading = staticmethod(reading.release)

        holds.attach(Channel())
        for reason in (REJECTION_DIALS, ACCEPT_DIALS, FETCH_DIALS):
            holds.hold(reason)
        holds.release(ACCEPT_DIALS)
        holds.release(REJECTION_DIALS)
        self.assertEqual((transport.calls, reading.reasons), (["pause"], {FETCH_DIALS}))
        holds.release(FETCH_DIALS)
        self.assertEqual(transport.calls, ["pause", "resume"])
