"""
Reconnect delays for the listener's control channel: capped exponential back-off with jitter.

Jitter matters because a gateway restart drops every listener at the same moment; without it they would
all come back in lock-step. The random source is a parameter so tests get a fixed schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# 2**64 already exceeds any sensible cap; bounding the exponent avoids float overflow on long outages.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """
    A reconnect schedule: capped exponential delays, shortened at random.

    Attempt C{n} waits C{min(maximum, initial * factor**n)}, less a random part of up to C{jitter} of
    itself. Jitter only ever shortens the delay ("equal jitter" with the default 0.5), so the cap is a true
    upper bound and the schedule never waits longer than configured.

    @ivar initial: the base delay of the first reconnect attempt, in seconds (more than 0).
    @ivar factor: growth per failed attempt (1.0 gives a constant delay).
    @ivar maximum: the cap on any delay, in seconds (more than 0).
    @ivar jitter: the fraction (0..1) of each delay that may be removed at random.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum > 0):  # "not >": NaN is refused too
            # A zero delay reconnects in a tight loop for as long as the gateway is down.
            raise ValueError("back-off delays must be more than 0 seconds")
        if self.factor < 1:
            raise ValueError("back-off factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("back-off jitter must be between 0 and 1")

    def base_delay(self, attempt: int) -> float:
        """The delay before attempt number C{attempt} (0-based) without jitter."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        return min(self.maximum, self.initial * self.factor**exponent)

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """
        The jittered delay before attempt number C{attempt}.

        @param random: returns a float in C{[0, 1)}, like L{random.random}.
        """
        return self.base_delay(attempt) * (1.0 - self.jitter * random())
