"""Tests for L{relay.client.backoff}."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.client.backoff import Backoff


class BackoffTests(SynchronousTestCase):
    def test_exponential_and_capped(self) -> None:
        """Without jitter the delays double from C{initial} until they hit C{maximum}."""
        schedule = Backoff(initial=1.0, factor=2.0, maximum=30.0, jitter=0.0)
        delays = [schedule.delay(n, lambda: 0.99) for n in range(8)]
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])

    def test_jitter_shortens_by_the_random_fraction(self) -> None:
        """The random draw removes up to C{jitter} of the delay, deterministically for a fixed source."""
        schedule = Backoff(initial=2.0, factor=2.0, maximum=30.0, jitter=0.5)
        self.assertEqual(schedule.delay(0, lambda: 0.0), 2.0)
        self.assertEqual(schedule.delay(0, lambda: 0.5), 1.5)
        self.assertEqual(schedule.delay(3, lambda: 0.5), 12.0)
        self.assertEqual(schedule.delay(10, lambda: 0.5), 22.5)

    def test_long_outages_do_not_overflow(self) -> None:
        """Attempt counts far beyond the cap still give the cap."""
        self.assertEqual(Backoff(jitter=0).delay(10_000, lambda: 0.3), 30.0)

    def test_invalid_settings_are_refused(self) -> None:
        """Delays of 0 or less (a tight reconnect loop), shrinking factors and jitter outside 0..1 are errors."""
        for kwargs in (
            {"initial": -1},
            {"maximum": -1},
            {"initial": 0},
            {"maximum": 0},
            {"initial": float("nan")},
            {"factor": 0.5},
            {"jitter": 1.5},
            {"jitter": -0.1},
        ):
            self.assertRaises(ValueError, Backoff, **kwargs)

    @given(
        attempt=st.integers(min_value=0, max_value=200),
        draw=st.floats(min_value=0, max_value=1, exclude_max=True),
        jitter=st.floats(min_value=0, max_value=1),
    )
    def test_delay_bounds(self, attempt: int, draw: float, jitter: float) -> None:
        """Every delay lies between the un-jittered delay shortened by C{jitter} and the cap."""
        schedule = Backoff(initial=0.5, factor=3.0, maximum=60.0, jitter=jitter)
        base = schedule.base_delay(attempt)
        delay = schedule.delay(attempt, lambda: draw)
        self.assertLessEqual(delay, min(base, 60.0) + 1e-9)
        self.assertGreaterEqual(delay, base * (1 - jitter) - 1e-9)
        self.assertLessEqual(schedule.base_delay(attempt), schedule.base_delay(attempt + 1))
