"""Sender: a client anywhere. Usage: python sender.py CONNECTION_STRING [NAME] [TEXT]."""

import sys

from twisted.internet import task
from twisted.internet.defer import Deferred

from relay.client import HybridConnectionClient


async def main(reactor, connection_string, name="hyco", text="hello through the relay"):
    connection = await HybridConnectionClient(connection_string, name, reactor=reactor).connect()
    await connection.send(text)
    print(await connection.receive(), flush=True)
    await connection.close()


if __name__ == "__main__":
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
