"""Service implementations used by the host, channel and end-to-end tests."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from .calculator import DivideByZero, ICalculator, IChat, IChecked, Point, Positive, Shape


@implementer(ICalculator)
class Calculator:
    """The calculator of spec section 8; C{hold} makes C{Add} wait for the test to answer it."""

    def __init__(self) -> None:
        self.notified: list[str] = []
        self.hold = False
        self.held: list[tuple[Deferred[int], int, int]] = []
        self.calls = 0

    def Add(self, a: int, b: int) -> int | Deferred[int]:
        self.calls += 1
        if a == 666:
            raise RuntimeError("the number of the beast")
        if self.hold:
            waiting: Deferred[int] = Deferred()
            self.held.append((waiting, a, b))
            return waiting
        return a + b

    def Divide(self, a: int, b: int) -> int:
        if b == 0:
            raise DivideByZero(a)
        return a // b

    def Notify(self, text: str) -> None:
        self.notified.append(text)
        if text == "boom":
            raise ValueError("one-way failure")

    async def Centroid(self, shape: Shape, weights: list[float], note: str | None) -> Point:
        xs = [p.x for p in shape.points]
        ys = [p.y for p in shape.points]
        return Point(sum(xs) / len(xs), sum(ys) / len(ys), note)

    def Reset(self) -> None:
        return None


@implementer(IChat)
class ChatRoom:
    """A multicast subscriber that records what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def Say(self, who: str, text: str) -> None:
        self.heard.append((who, text))


@implementer(IChecked)
class Checked:
    """
    Answers what its peer cannot rebuild or it cannot write.

    C{Make} skips Positive's check; C{Scale(0)} returns an int beyond the double range; C{hold} makes
    C{Echo} wait.
    """

    def __init__(self) -> None:
        self.hold = False
        self.held: list[Deferred[int]] = []

    def Check(self, p: Positive) -> int:
        return p.value

    def Make(self, a: int) -> Positive:
        made = Positive(1)
        made.value = a  # not checked again: the reply carries a
        return made

    def Scale(self, x: float) -> float | int:
        return 10**400 if x == 0 else x * 2  # an int too large for a double

    def Echo(self, a: int) -> int | Deferred[int]:
        if self.hold:
            waiting: Deferred[int] = Deferred()
            self.held.append(waiting)
            return waiting
        return a
