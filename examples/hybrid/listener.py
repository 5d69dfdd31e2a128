"""Echo listener: the service behind the firewall. Usage: python listener.py CONNECTION_STRING [NAME]."""

import sys

from twisted.internet import task
from twisted.internet.defer import Deferred

from relay.client import HybridConnectionListener


async def main(reactor, connection_string, name="hyco"):
    listener = HybridConnectionListener(connection_string, name, reactor=reactor)
    await listener.open()
    print("listening", flush=True)
    while (connection := await listener.accept_connection()) is not None:
        async for message in connection:  # text arrives as str, binary as bytes
            await connection.send(message)  # echo


if __name__ == "__main__":
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
