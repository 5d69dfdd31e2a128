"""Tests for L{relay.deadlines.Deadlines}: many deadlines of one length on one timer, each on time."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from relay.deadlines import Deadlines


class DeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[tuple[Any, float]] = []
        self.deadlines = Deadlines(
            self.clock, 30.0, lambda key: self.expired.append((key, self.clock.seconds()))
        )

    def test_a_key_comes_due_one_period_after_it_was_set(self) -> None:
        self.deadlines.set("a")
        self.clock.advance(29.999)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.001)
        self.assertEqual(self.expired, [("a", 30.0)])
        self.assertNotIn("a", self.deadlines)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer_for_many_keys_each_on_time(self) -> None:
        for i in range(10):
            self.deadlines.set(i)
            self.clock.advance(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.pump([1] * 100)
        self.assertEqual(self.expired, [(i, 30.0 + i) for i in range(10)])

    def test_cleared_keys_never_come_due(self) -> None:
        self.deadlines.set("a")
        self.clock.advance(5)
        self.deadlines.set("b")
        self.deadlines.clear("a")
        self.clock.advance(30)
        self.assertEqual(self.expired, [("b", 35.0)])

    def test_the_timer_stops_with_the_last_key_cleared(self) -> None:
        self.deadlines.set("a")
        self.deadlines.set("b")
        self.deadlines.clear("a")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.deadlines.clear("b")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.deadlines.clear("never set")
        self.assertEqual(len(self.deadlines), 0)

    def test_a_key_set_again_starts_again(self) -> None:
        self.deadlines.set("a")
        self.clock.advance(10)
        self.deadlines.set("b")
        self.deadlines.set("a")
        self.clock.advance(30)
        self.assertEqual(self.expired, [("b", 40.0), ("a", 40.0)])

    def test_keys_set_while_expiring_do_not_delay_earlier_ones(self) -> None:
        def expire(key: Any) -> None:
            self.expired.append((key, self.clock.seconds()))
            if key == "a":
                self.deadlines.set("late")

        deadlines = Deadlines(self.clock, 30.0, expire)
        deadlines.set("a")
        self.clock.advance(1)
        deadlines.set("b")
        self.clock.advance(29)  # "a" expires and sets "late"; "b" is due at 31
        self.clock.advance(1)
        self.assertEqual(self.expired[:2], [("a", 30.0), ("b", 31.0)])
        self.clock.advance(29)
        self.assertEqual(self.expired[2:], [("late", 60.0)])

    def test_an_expiry_that_raises_leaves_the_others_due(self) -> None:
        def expire(key: Any) -> None:
            self.expired.append((key, self.clock.seconds()))
            if key == "bad":
                raise RuntimeError("expiry failed")

        deadlines = Deadlines(self.clock, 30.0, expire)
        deadlines.set("bad")
        self.clock.advance(1)
        deadlines.set("good")
        with self.assertRaises(RuntimeError):
            self.clock.advance(29)
        self.clock.advance(1)
        self.assertEqual(self.expired, [("bad", 30.0), ("good", 31.0)])

    def test_expiring_clears_other_keys(self) -> None:
        def expire(key: Any) -> None:
            self.expired.append((key, self.clock.seconds()))
            deadlines.clear("b")

        deadlines = Deadlines(self.clock, 30.0, expire)
        deadlines.set("a")
        deadlines.set("b")
        self.clock.advance(30)
        self.assertEqual(self.expired, [("a", 30.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])


@given(
    st.lists(
        st.tuples(st.sampled_from(["set", "clear", "wait"]), st.integers(0, 5), st.floats(0, 20)), max_size=60
    )
)
def test_same_expiries_as_a_timer_per_key(steps: list[tuple[str, int, float]]) -> None:
    """Against the plain way (one C{callLater} per key, cancelled when cleared): the same keys at the same times."""
    clock = Clock()
    got: list[tuple[int, float]] = []
    deadlines = Deadlines(clock, 7.0, lambda key: got.append((key, clock.seconds())))
    reference_clock = Clock()
    expected: list[tuple[int, float]] = []
    timers: dict[int, Any] = {}

    def reference_expire(key: int) -> None:
        del timers[key]
        expected.append((key, reference_clock.seconds()))

    for action, key, wait in steps:
        if action == "set":
            deadlines.set(key)
            if key in timers:
                timers.pop(key).cancel()
            timers[key] = reference_clock.callLater(7.0, reference_expire, key)
        elif action == "clear":
            deadlines.clear(key)
            if key in timers:
                timers.pop(key).cancel()
        else:
            clock.advance(wait)
            reference_clock.advance(wait)
        assert sorted(got) == sorted(expected)
    clock.advance(100)
    reference_clock.advance(100)
    assert sorted(got) == sorted(expected)
    assert clock.getDelayedCalls() == []
