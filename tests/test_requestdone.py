"""Tests for L{RelayRequest.when_done}: C{notifyFinish} without a Deferred, for the relay's own watchers."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from relay.web import RelaySite


class Held(Resource):
    """Keeps each request open, for the test to finish or drop."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        return NOT_DONE_YET


class WhenDoneTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.resource = Held()
        site = RelaySite(self.resource, reactor=Clock())
        self.channel = site.build_channel(IPv4Address("TCP", "10.0.0.5", 4000))
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: relay.test\r\n\r\n")
        [self.request] = self.resource.requests
        self.results: list[Any] = []

    def test_finished(self) -> None:
        """Each callback hears C{None} once the response is finished, in the order they were given."""
        self.request.when_done(lambda result: self.results.append(("first", result)))
        self.request.when_done(lambda result: self.results.append(("second", result)))
        self.assertEqual(self.results, [])
        self.request.finish()
        self.assertEqual(self.results, [("first", None), ("second", None)])

    def test_connection_lost(self) -> None:
        """Each callback hears why, when the connection is lost before the response finished."""
        self.request.when_done(self.results.append)
        reason = Failure(ConnectionDone())
        self.channel.connectionLost(reason)
        [failure] = self.results
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(ConnectionDone))

    def test_failing_callback(self) -> None:
        """A callback that raises is logged; the others still run and the request still finishes."""

        def broken(result: Any) -> None:
            raise RuntimeError("boom")

        self.request.when_done(broken)
        self.request.when_done(self.results.append)
        self.request.finish()
        self.assertEqual(self.results, [None])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(b"HTTP/1.1 200 OK", self.transport.value())
