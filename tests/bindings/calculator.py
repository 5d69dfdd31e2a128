"""A sample contract shared by the contract and WSDL tests (the spec's ICalculator, plus complex types)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional

from zope.interface import Interface

from bindings.contracts import DeclaredFault, contract, operation


@dataclass
class DivideByZero(DeclaredFault):
    """Division by zero."""

    dividend: int


@dataclass
class Point:
    """A labelled point."""

    x: float
    y: float
    label: Optional[str] = None  # noqa: UP045 - Optional is the spelling the spec names


@dataclass
class Shape:
    """Points with metadata, to exercise nested complex types."""

    name: str
    points: list[Point]
    created: datetime.datetime
    price: Decimal
    data: bytes
    day: datetime.date
    visible: bool
    rank: Optional[int] = None  # noqa: UP045


@contract(namespace="urn:example:calc")
class ICalculator(Interface):
    """The calculator of spec section 8."""

    @operation()
    def Add(a: int, b: int) -> int:
        """Sum of two integers."""

    @operation(faults=[DivideByZero])
    def Divide(a: int, b: int) -> int:
        """Integer division."""

    @operation(one_way=True)
    def Notify(text: str) -> None:
        """Fire and forget."""

    @operation()
    def Centroid(shape: Shape, weights: list[float], note: str | None) -> Point:
        """Centre of a shape."""

    @operation()
    def Reset() -> None:
        """Request/reply with an empty response."""


@contract(namespace="urn:example:chat", name="Chat")
class IChat(Interface):
    """A multicast-compatible contract: all one-way."""

    @operation(one_way=True)
    def Say(who: str, text: str) -> None:
        """Say something."""


@dataclass
class Positive:
    """A dataclass that validates itself, as many do."""

    value: int

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError("must be positive")


@contract(namespace="urn:example:checked", name="Checked")
class IChecked(Interface):
    """Values a peer may send that the contract's types refuse to be rebuilt from, or cannot write."""

    @operation()
    def Check(p: Positive) -> int:
        """A validated dataclass argument."""

    @operation()
    def Make(a: int) -> Positive:
        """A validated dataclass result."""

    @operation()
    def Scale(x: float) -> float:
        """A float argument and result."""

    @operation()
    def Echo(a: int) -> int:
        """Plain."""
