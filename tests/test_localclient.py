"""C{relay expose}'s client for its local server, on in-memory transports (no sockets, no real time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import EventLoggingObserver, MemoryReactor, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from relay.client.httprequest import RequestBody
from relay.http1 import ResponseError
from relay.localclient import LocalClient, LocalConnection, LocalResponse, ResponseTimeout


class Sink:
    """Records a body; C{hold} makes every write wait until the test fires it."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.pieces: list[bytes] = []
        self.waiting: list[Deferred[None]] = []
        self.ended = False
        self.failure: Failure | None = None

    def data(self, data: bytes) -> Deferred[None] | None:
        self.pieces.append(data)
        if not self.hold:
            return None
        waiting: Deferred[None] = Deferred()
        self.waiting.append(waiting)
        return waiting

    def end(self) -> None:
        self.ended = True

    def failed(self, reason: Failure) -> None:
        self.failure = reason


class Endpoint:
    """Hands out connections on string transports, and remembers them."""

    def __init__(self) -> None:
        self.connections: list[tuple[LocalConnection, StringTransport]] = []
        self.slow: list[Callable[[], None]] = []  # when set, connections wait until these are called

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        self.connections.append((protocol, transport))
        connected: Deferred[Any] = Deferred()

        def made() -> None:
            protocol.makeConnection(transport)
            connected.callback(protocol)

        if self.slow:
            self.slow.append(made)
        else:
            made()
        return connected


class LocalClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.endpoint = Endpoint()
        self.client = LocalClient(MemoryReactor(), "http", "127.0.0.1", 8000, endpoint=self.endpoint)  # type: ignore[arg-type]

    def send(
        self,
        method: bytes = b"GET",
        body: RequestBody | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> tuple[Deferred[LocalResponse], LocalConnection, StringTransport]:
        answer = self.client.request(method, b"/app?x=1", headers or [(b"Accept", b"*/*")], body)
        connection, transport = self.endpoint.connections[-1]
        return answer, connection, transport

    def head(self, answer: Deferred[LocalResponse]) -> LocalResponse:
        return self.successResultOf(answer)


class RequestTests(LocalClientTestCase):
    def test_get_and_reuse(self) -> None:
        """One write per request head; a finished response frees the connection for the next request."""
        answer, connection, transport = self.send()
        self.assertEqual(
            transport.value(), b"GET /app?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: */*\r\n\r\n"
        )
        self.assertNoResult(answer)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhel")
        response = self.head(answer)
        self.assertEqual(
            (response.code, response.phrase, response.headers, response.length),
            (200, b"OK", [(b"X-A", b"1")], 5),
        )
        sink = Sink()
        response.deliver(sink)
        self.assertEqual((sink.pieces, sink.ended), ([b"hel"], False))
        connection.dataReceived(b"lo")
        self.assertEqual((sink.pieces, sink.ended), ([b"hel", b"lo"], True))
        transport.clear()
        _second, again, _ = self.send(b"DELETE")
        self.assertIs(again, connection)
        self.assertEqual(len(self.endpoint.connections), 1)
        self.assertTrue(transport.value().startswith(b"DELETE /app?x=1 HTTP/1.1\r\n"))

    def test_whole_body_has_a_length(self) -> None:
        _answer, _connection, transport = self.send(b"POST", RequestBody.whole(b"payload"))
        self.assertTrue(transport.value().endswith(b"Content-Length: 7\r\n\r\npayload"))

    def test_streamed_body_is_chunked_with_back_pressure(self) -> None:
        body = RequestBody()
        _answer, _connection, transport = self.send(b"PUT", body)
        self.assertEqual(transport.value(), b"")  # the head goes with the first piece
        body.feed(b"abc")
        self.assertTrue(transport.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
        transport.clear()
        producer: Any = transport.producer
        producer.pauseProducing()  # the transport's queue is full: the server reads slowly
        body.feed(b"defg")
        body.feed(b"hi")
        self.assertEqual(transport.value(), b"4\r\ndefg\r\n")
        transport.clear()
        producer.resumeProducing()  # drained
        self.assertEqual(transport.value(), b"2\r\nhi\r\n")
        body.end()
        self.assertEqual(transport.value(), b"2\r\nhi\r\n0\r\n\r\n")
        self.assertIsNone(transport.producer)

    def test_a_body_that_completes_while_connecting_stays_chunked(self) -> None:
        """The head's framing is decided once: a body still arriving when asked for is sent chunked."""
        self.endpoint.slow.append(lambda: None)
        body = RequestBody()
        body.feed(b"abc")
        self.client.request(b"POST", b"/", [], body)
        body.end()
        self.endpoint.slow.pop()()
        _, transport = self.endpoint.connections[-1]
        self.assertTrue(
            transport.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        )

    def test_answer_before_the_body_ends_spends_the_connection(self) -> None:
        body = RequestBody()
        answer, connection, transport = self.send(b"POST", body)
        body.feed(b"abc")
        connection.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        sink = Sink()
        self.head(answer).deliver(sink)
        self.assertTrue(sink.ended)
        self.assertTrue(transport.disconnecting)

    def test_a_connection_answered_before_its_body_is_not_kept(self) -> None:
        """
        The request body ends after the early answer dropped (or closed) the connection: it is not kept.

        Its close is reported by the reactor later. Before, ending the body put it back in the pool
        meanwhile, and the next request went out on it and failed (a POST got 502).
        """
        for answer_bytes in (
            b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ):
            with self.subTest(answer=answer_bytes):
                self.setUp()
                body = RequestBody()
                answer, connection, transport = self.send(b"POST", body)
                body.feed(b"abc")
                connection.dataReceived(answer_bytes)
                self.head(answer).deliver(Sink())
                self.assertTrue(transport.disconnecting)
                body.end()
                self.assertEqual(self.client._idle, [])
                _next, fresh, _ = self.send(b"POST", RequestBody.whole(b"x"))
                self.assertIsNot(fresh, connection)

    def test_interim_answers_are_skipped(self) -> None:
        answer, connection, _ = self.send()
        connection.dataReceived(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        )
        self.assertNoResult(answer)
        connection.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.head(answer).code, 204)


class BodyTests(LocalClientTestCase):
    def test_sink_back_pressure(self) -> None:
        """A sink that cannot take more pauses reading; it resumes when the sink is ready again."""
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        sink = Sink(hold=True)
        self.head(answer).deliver(sink)
        connection.dataReceived(b"3\r\nabc\r\n")
        self.assertEqual(transport.producerState, "paused")
        sink.waiting.pop().callback(None)
        self.assertEqual(transport.producerState, "producing")
        sink.hold = False
        connection.dataReceived(b"0\r\n\r\n")
        self.assertEqual((sink.pieces, sink.ended), ([b"abc"], True))
        self.assertEqual(self.client._idle, [connection])

    def test_body_before_the_sink_is_held_then_bounded(self) -> None:
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        response = self.head(answer)
        self.assertEqual(transport.producerState, "producing")
        connection.dataReceived(b"b" * LocalResponse.HELD_BYTES)
        self.assertEqual(transport.producerState, "paused")
        sink = Sink()
        response.deliver(sink)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(b"".join(sink.pieces), b"a" * 1000 + b"b" * LocalResponse.HELD_BYTES)

    def test_a_failed_sink_drops_the_connection(self) -> None:
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        sink = Sink(hold=True)
        self.head(answer).deliver(sink)
        connection.dataReceived(b"abc")
        sink.waiting.pop().errback(ConnectionLost("the sender went away"))
        self.assertTrue(transport.disconnecting)
        failure = sink.failure
        assert failure is not None  # the sink hears why, so whoever waits for the body stops waiting
        self.assertIn("the sender went away", str(failure.value))
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertIs(sink.failure, failure)  # once
        self.assertEqual(self.client._idle, [])

    def test_body_until_close(self) -> None:
        answer, connection, _transport = self.send()
        connection.dataReceived(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        sink = Sink()
        self.head(answer).deliver(sink)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((sink.pieces, sink.ended, sink.failure), ([b"all of it"], True, None))

    def test_cut_body_fails(self) -> None:
        answer, connection, _ = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        sink = Sink()
        self.head(answer).deliver(sink)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(sink.ended)
        assert sink.failure is not None
        self.assertIsInstance(sink.failure.value, ResponseError)


class SpentConnectionTests(LocalClientTestCase):
    """Bytes the local server sends when no answer is due: the connection is not reused."""

    def test_bytes_on_an_idle_connection(self) -> None:
        """A body written after a HEAD answer, in a later read: the connection leaves the pool at once."""
        answer, connection, transport = self.send(b"HEAD")
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        self.head(answer).deliver(Sink())
        self.assertEqual(self.client._idle, [connection])
        connection.dataReceived(b"hello")
        self.assertEqual(self.client._idle, [])
        self.assertTrue(transport.disconnecting or transport.disconnected)
        second, fresh, _ = self.send(b"GET")
        self.assertIsNot(fresh, connection)
        fresh.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.head(second).code, 200)

    def test_bytes_after_a_bodiless_answer(self) -> None:
        """A HEAD answer with the body in the same read: the answer is complete, the connection spent."""
        answer, connection, transport = self.send(b"HEAD")
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        sink = Sink()
        response = self.head(answer)
        response.deliver(sink)
        self.assertEqual((response.code, sink.ended, sink.pieces, sink.failure), (200, True, [], None))
        self.assertEqual(self.client._idle, [])
        self.assertTrue(transport.disconnecting or transport.disconnected)


class ExtraBytesTests(LocalClientTestCase):
    """
    Bytes past the end of an answer: it stands, and the connection is dropped with a warning.

    Before, more than the Content-Length (or bytes after the last chunk) in the read that ended the body
    failed the body, while the same bytes in a later read left the answer whole: which one the sender got
    depended on how the local server's writes were cut into reads.
    """

    def setUp(self) -> None:
        super().setUp()
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def answer(
        self, reads: list[bytes], head: bytes = b"Content-Length: 2\r\n"
    ) -> tuple[Sink, StringTransport]:
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n")
        sink = Sink()
        self.head(answer).deliver(sink)
        for data in reads:
            connection.dataReceived(data)
        return sink, transport

    def assert_answer_stands(self, sink: Sink, transport: StringTransport, extra: int) -> None:
        self.assertEqual((b"".join(sink.pieces), sink.ended, sink.failure), (b"ab", True, None))
        self.assertEqual(self.client._idle, [])
        self.assertTrue(transport.disconnecting or transport.disconnected)
        [warning] = [e for e in self.observer if "after its answer" in e["log_format"]]
        self.assertEqual((warning["log_level"], warning["size"]), (LogLevel.warn, extra))

    def test_more_than_content_length_in_the_same_read(self) -> None:
        sink, transport = self.answer([b"abc"])
        self.assert_answer_stands(sink, transport, 1)

    def test_more_than_content_length_with_the_head(self) -> None:
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcd")
        sink = Sink()
        self.head(answer).deliver(sink)
        self.assert_answer_stands(sink, transport, 2)

    def test_more_than_content_length_in_a_later_read(self) -> None:
        sink, transport = self.answer([b"ab", b"c"])
        self.assert_answer_stands(sink, transport, 1)

    def test_bytes_after_the_last_chunk(self) -> None:
        sink, transport = self.answer([b"2\r\nab\r\n0\r\n\r\nxyz"], head=b"Transfer-Encoding: chunked\r\n")
        self.assert_answer_stands(sink, transport, 3)


class FailureTests(LocalClientTestCase):
    def test_malformed_head(self) -> None:
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 2OO OK\r\n\r\n")
        self.failureResultOf(answer, ResponseError)
        self.assertTrue(transport.disconnecting)

    def test_status_beyond_599(self) -> None:
        """
        A status of 600 or more is a malformed head, as one below 100 is: the relay takes 100-599 only.

        Before, it was relayed, and the relay refused the answer and blamed the listener.
        """
        for status in (600, 999):
            with self.subTest(status=status):
                answer, connection, transport = self.send()
                connection.dataReceived(b"HTTP/1.1 %d Odd\r\nContent-Length: 0\r\n\r\n" % status)
                failure = self.failureResultOf(answer, ResponseError)
                self.assertEqual(str(failure.value), f"status code {status} out of range")
                self.assertTrue(transport.disconnecting)
        answer, connection, _ = self.send()
        connection.dataReceived(b"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.head(answer).code, 599)

    def test_closed_before_answering(self) -> None:
        answer, connection, _ = self.send(b"POST", RequestBody.whole(b"x"))
        connection.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(answer, ConnectionDone)

    def test_a_stale_kept_connection_is_retried_for_idempotent_requests(self) -> None:
        """The server closed a kept connection just as it was reused: a GET goes again on a new one."""
        answer, connection, _ = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.head(answer)
        second, again, _ = self.send()
        self.assertIs(again, connection)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(second)
        self.assertEqual(len(self.endpoint.connections), 2)
        fresh, transport = self.endpoint.connections[-1]
        self.assertTrue(transport.value().startswith(b"GET /app?x=1 "))
        fresh.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.head(second).code, 200)

    def test_no_retry_for_a_post(self) -> None:
        answer, connection, _ = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.head(answer)
        second, _, _ = self.send(b"POST", RequestBody.whole(b"once"))
        connection.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(second, ConnectionDone)
        self.assertEqual(len(self.endpoint.connections), 1)

    def test_idle_connections_that_close_are_forgotten(self) -> None:
        answer, connection, _ = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.head(answer)
        self.assertEqual(self.client._idle, [connection])
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.client._idle, [])

    def timed_client(self) -> MemoryReactorClock:
        """A client whose requests wait 60 s for a response head, on the clock returned."""
        clock = MemoryReactorClock()
        self.client = LocalClient(
            clock, "http", "127.0.0.1", 8000, endpoint=self.endpoint, response_timeout=60
        )  # type: ignore[arg-type]
        return clock

    def test_a_server_that_never_answers_times_out(self) -> None:
        """Without a response head in time the request fails and its connection is dropped (expose: 504)."""
        clock = self.timed_client()
        answer, connection, transport = self.send()
        clock.advance(59)
        self.assertNoResult(answer)
        clock.advance(1)
        failure = self.failureResultOf(answer, ResponseTimeout)
        self.assertIn("within 60s", str(failure.value))
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_the_timer_starts_once_the_request_is_sent(self) -> None:
        """A slow upload is not cut: the local server's time to answer starts after the body's last byte."""
        clock = self.timed_client()
        body = RequestBody()
        answer, _, transport = self.send(b"PUT", body)
        for _ in range(5):
            body.feed(b"x" * 100)
            clock.advance(30)
        self.assertNoResult(answer)
        self.assertEqual(clock.getDelayedCalls(), [])
        body.end()
        clock.advance(59)
        self.assertNoResult(answer)
        clock.advance(1)
        self.failureResultOf(answer, ResponseTimeout)
        self.assertTrue(transport.disconnecting)

    def test_the_timer_stops_at_the_head(self) -> None:
        """The limit is for the head: a body that takes longer is not cut, and no timer is left behind."""
        clock = self.timed_client()
        answer, connection, transport = self.send()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        sink = Sink()
        self.head(answer).deliver(sink)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(120)
        connection.dataReceived(b"cd")
        self.assertEqual((sink.pieces, sink.ended), ([b"ab", b"cd"], True))
        self.assertFalse(transport.disconnecting)

    def test_overlapping_requests_time_out_at_their_own_deadlines(self) -> None:
        """
        Requests sent at different times each get their full time (the deadlines share one timer).

        The second one's answer, given in time, neither moves nor cancels the others'; once none waits, no
        timer is left.
        """
        clock = self.timed_client()
        first, _, first_transport = self.send()
        clock.advance(20)
        second, second_connection, second_transport = self.send()
        clock.advance(20)
        third, _, third_transport = self.send()
        second_connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.head(second)
        clock.advance(19.5)
        self.assertNoResult(first)
        clock.advance(0.5)  # 60 s after the first was sent
        self.failureResultOf(first, ResponseTimeout)
        self.assertTrue(first_transport.disconnecting)
        clock.advance(39.5)
        self.assertNoResult(third)
        clock.advance(0.5)  # 60 s after the third was sent
        self.failureResultOf(third, ResponseTimeout)
        self.assertTrue(third_transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(second_transport.disconnecting)  # answered: kept for the next request
        self.assertEqual(self.client._idle, [second_connection])

    def test_cancel_drops_the_connection(self) -> None:
        answer, _, transport = self.send()
        answer.cancel()
        self.assertTrue(transport.disconnecting)
        self.failureResultOf(answer, CancelledError)
