"""
Call the calculator through the relay with our channel factory (WebSocket): python examples/calculator/client.py
"""

from __future__ import annotations

import argparse

from contract import CONNECTION_STRING, ICalculator
from twisted.internet import defer, task

from bindings.channels import ChannelFactory
from bindings.credentials import from_connection_string
from bindings.faults import SoapFault
from bindings.settings import RequestReplyBinding


async def main(reactor: object, connection_string: str) -> None:
    """Call each operation once."""
    address, credentials = from_connection_string(connection_string, "calc")
    factory = ChannelFactory(ICalculator, address, RequestReplyBinding(), credentials)
    calc = factory.create_channel()
    print("2 + 3 =", await calc.Add(2, 3))
    try:
        await calc.Divide(1, 0)
    except SoapFault as fault:
        print("Divide(1, 0) failed:", fault.reason, "| declared fault:", repr(fault.declared))
    print("Notify reached", await calc.Notify("hello from the channel factory"), "listener(s)")
    await factory.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connection-string", default=CONNECTION_STRING)
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, args.connection_string)))
