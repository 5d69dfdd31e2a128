"""The calculator contract shared by the service and its clients."""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Interface

from bindings.contracts import DeclaredFault, contract, operation


@dataclass
class DivideByZero(DeclaredFault):
    """Division by zero."""

    dividend: int


@contract(namespace="urn:example:calc")
class ICalculator(Interface):
    """A calculator on a request/reply relay name."""

    @operation()
    def Add(a: int, b: int) -> int:
        """Sum of two integers."""

    @operation(faults=[DivideByZero])
    def Divide(a: int, b: int) -> int:
        """Integer division."""

    @operation(one_way=True)
    def Notify(text: str) -> None:
        """Fire and forget."""


CONNECTION_STRING = (
    "Endpoint=sb://127.0.0.1:9080/;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=example-only-key-do-not-use-in-production;UseDevelopmentEmulator=true"
)
"""Matches relay.toml; pass another with --connection-string."""
