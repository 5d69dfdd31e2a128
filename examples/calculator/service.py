"""
Host the calculator on the relay name C{calc}: python examples/calculator/service.py

The host registers the contract's WSDL, serves calls until interrupted, and reconnects on its own when the
gateway restarts.
"""

from __future__ import annotations

import argparse
import sys

from contract import CONNECTION_STRING, DivideByZero, ICalculator
from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, textFileLogObserver
from zope.interface import implementer

from bindings.credentials import from_connection_string
from bindings.host import ServiceHost
from bindings.settings import Discovery, RequestReplyBinding


@implementer(ICalculator)
class Calculator:
    """The implementation: plain methods (they could return Deferreds or be async def)."""

    def Add(self, a: int, b: int) -> int:
        """Sum of two integers."""
        return a + b

    def Divide(self, a: int, b: int) -> int:
        """Integer division; a declared fault for zero."""
        if b == 0:
            raise DivideByZero(a)
        return a // b

    def Notify(self, text: str) -> None:
        """One-way: nothing goes back to the caller."""
        print(f"notified: {text}", flush=True)


async def main(reactor: object, connection_string: str) -> None:
    """Register and serve until interrupted."""
    address, credentials = from_connection_string(connection_string, "calc")
    binding = RequestReplyBinding(discovery=Discovery.PUBLIC, display_name="Calculator")
    host = ServiceHost(
        Calculator(), ICalculator, address, binding, credentials, include_exception_detail=True
    )
    registered = await host.open()
    print(f"listening on {registered.address} (WSDL at {registered.address}?wsdl)", flush=True)
    await defer.Deferred()  # serve until interrupted


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connection-string", default=CONNECTION_STRING)
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, args.connection_string)))
