"""L{relay.logbudget}: a burst of log lines, then a steady rate, and a count of what was held back."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from relay.logbudget import LogBudget


class LogBudgetTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        """C{burst} lines at once, then one per 1/C{per_second} s; the first after a gap says what was held."""
        clock = Clock()
        budget = LogBudget(clock, per_second=2.0, burst=3)
        self.assertEqual([budget.allow() for _ in range(5)], [0, 0, 0, None, None])
        self.assertEqual(budget.held, 2)
        clock.advance(0.4)  # less than one line's worth
        self.assertIsNone(budget.allow())
        clock.advance(0.2)  # 1.2 lines' worth by now
        self.assertEqual(budget.allow(), 3)
        self.assertEqual(budget.held, 0)
        self.assertIsNone(budget.allow())  # 0.2 left

    def test_refills_up_to_the_burst_only(self) -> None:
        """A long quiet spell gives back the burst, no more."""
        clock = Clock()
        budget = LogBudget(clock, per_second=10.0, burst=2)
        budget.allow()
        clock.advance(3600)
        self.assertEqual([budget.allow() for _ in range(3)], [0, 0, None])

    def test_emit_and_report_held(self) -> None:
        """Lines pass within the budget, the next one after held ones says how many, and so does the report."""
        clock = Clock()
        publisher = LogPublisher()
        events = EventLoggingObserver()
        publisher.addObserver(events)
        log = Logger(observer=publisher)
        budget = LogBudget(clock, per_second=1.0, burst=1)
        for i in range(3):
            budget.emit(log, LogLevel.warn, "bad message {n} from {peer}", n=i, peer="p")
        clock.advance(1)
        budget.emit(log, LogLevel.info, "bad message {n} from {peer}", n=3, peer="p")
        budget.emit(log, LogLevel.info, "bad message {n} from {peer}", n=4, peer="p")
        budget.report_held(log, "peer {peer}", peer="p")
        budget.report_held(log, "peer {peer}", peer="p")  # nothing held any more
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "bad message 0 from p",
                "bad message 3 from p (2 lines before this one were not logged)",
                "1 more lines about peer p were not logged (at most 1 a second)",
            ],
        )
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
