"""Shutdown draining: waiters fire when the last connection goes; stragglers are aborted at the deadline."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from relay.draining import ConnectionDrain


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class _Connection:
    def __init__(self) -> None:
        self.transport = _Transport()


class ConnectionDrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connections: set[Any] = set()
        self.drain = ConnectionDrain(self.connections, self.clock)

    def test_nothing_open(self) -> None:
        """With no connection open the wait is over at once and no timer is left behind."""
        self.assertIsNone(self.successResultOf(self.drain.wait(5.0)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fires_when_the_last_connection_goes(self) -> None:
        first, second = _Connection(), _Connection()
        self.connections.update((first, second))
        waiting = self.drain.wait(5.0)
        self.drain.forget(first)
        self.assertNoResult(waiting)
        self.drain.forget(second)
        self.successResultOf(waiting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(first.transport.aborted or second.transport.aborted)

    def test_stragglers_aborted_at_the_deadline(self) -> None:
        """A peer that never finishes its close is aborted; its loss then ends the wait."""
        quiet = _Connection()
        self.connections.add(quiet)
        waiting = self.drain.wait(5.0)
        self.clock.advance(4.9)
        self.assertFalse(quiet.transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(quiet.transport.aborted)
        self.assertNoResult(waiting)
        self.drain.forget(quiet)  # what connectionLost does after the abort
        self.successResultOf(waiting)

    def test_every_waiter_woken(self) -> None:
        connection = _Connection()
        self.connections.add(connection)
        waits = [self.drain.wait(5.0), self.drain.wait(7.0)]
        self.drain.forget(connection)
        for waiting in waits:
            self.successResultOf(waiting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_forgetting_an_unknown_connection(self) -> None:
        """A connection forgotten twice (or never added) changes nothing."""
        connection = _Connection()
        self.connections.add(connection)
        waiting = self.drain.wait(5.0)
        self.drain.forget(_Connection())
        self.assertNoResult(waiting)
        self.drain.forget(connection)
        self.drain.forget(connection)
        self.successResultOf(waiting)
