"""The HTTP/1.1 client codec of C{relay expose}: request heads, response heads, chunked bodies."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from relay.http1 import (
    LAST_CHUNK,
    MAX_CHUNK_LINE,
    MAX_HEAD_BYTES,
    ChunkedReader,
    Framing,
    ResponseError,
    ResponseHead,
    chunk,
    read_response_head,
    request_head,
    valid_request,
)


class RequestHeadTests(SynchronousTestCase):
    def test_host_first_then_fields_then_framing(self) -> None:
        head = request_head(b"POST", b"/a?b=1", b"local:8000", [(b"X-A", b"1"), (b"X-A", b"2")], 5)
        self.assertEqual(
            head,
            b"POST /a?b=1 HTTP/1.1\r\nHost: local:8000\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 5\r\n\r\n",
        )

    def test_no_body(self) -> None:
        """A GET without a body has no framing field; a POST without one says Content-Length: 0."""
        self.assertEqual(request_head(b"GET", b"/", b"h", [], 0), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 0\r\n", request_head(b"POST", b"/", b"h", [], 0))

    def test_what_cannot_be_written(self) -> None:
        """Line breaks, bad names and bad targets are refused before they reach the local server."""
        self.assertIsNone(valid_request(b"/caf\xc3\xa9?q=%20", [(b"X-A", b"any value: \xff")]))
        self.assertIn("target", valid_request(b"/a b", []) or "")
        for byte in (*range(0x21), 0x7F):
            self.assertIn("target", valid_request(b"/a" + bytes([byte]), []) or "", byte)
        self.assertIsNone(valid_request(bytes(range(0x2F, 0x7F)) + bytes(range(0x80, 0x100)), []))
        self.assertIn("target", valid_request(b"http://elsewhere/", []) or "")
        self.assertIn("name", valid_request(b"/", [(b"X A", b"1")]) or "")
        self.assertIn("name", valid_request(b"/", [(b"", b"1")]) or "")
        for value in (b"a\r\nInjected: yes", b"a\nb", b"a\x00"):
            self.assertIn("value", valid_request(b"/", [(b"X-A", value)]) or "", value)
        self.assertIsNone(valid_request(b"/", [], b"M-SEARCH"))
        for method in (b"", b"GET / HTTP/1.1\r\nX: y\r\n\r\nGET", b"G T", b"G\xc4\x80T"):
            self.assertIn("method", valid_request(b"/", [], method) or "", method)

    def test_streamed_body_is_chunked(self) -> None:
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n\r\n", request_head(b"PUT", b"/", b"h", [], None))
        self.assertEqual(chunk(b"hello world!"), b"c\r\nhello world!\r\n")
        self.assertEqual(LAST_CHUNK, b"0\r\n\r\n")


def head_of(data: bytes, method: bytes = b"GET") -> tuple[ResponseHead, int]:
    """The head in C{data}, which must be complete."""
    found = read_response_head(data, method)
    if found is None:
        raise AssertionError(f"no complete head in {data!r}")
    return found


class ResponseHeadTests(SynchronousTestCase):
    def test_incomplete_head_waits(self) -> None:
        self.assertIsNone(read_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", b"GET"))

    def test_length_framed(self) -> None:
        data = b"HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        head, end = head_of(data)
        self.assertEqual((head.code, head.phrase), (200, b"Fine Thanks"))
        self.assertEqual(head.headers, [(b"Content-Type", b"text/plain")])
        self.assertEqual((head.framing, head.length, head.reusable), (Framing.LENGTH, 5, True))
        self.assertEqual(data[end:], b"hello")

    def test_framing_fields_are_not_passed_on(self) -> None:
        head, _ = head_of(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: X-Sum\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
            b"GET",
        )
        self.assertEqual(head.headers, [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")])
        self.assertEqual((head.framing, head.length), (Framing.CHUNKED, None))

    def test_chunked_wins_over_a_length(self) -> None:
        head, _ = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", b"GET"
        )
        self.assertEqual(head.framing, Framing.CHUNKED)

    def test_bodies_read_until_close(self) -> None:
        """No length and no chunking, or a coding other than chunked last: the body ends with the connection."""
        for fields in (b"", b"Transfer-Encoding: gzip\r\n"):
            head, _ = head_of(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n", b"GET")
            self.assertEqual((head.framing, head.reusable), (Framing.CLOSE, False))

    def test_no_body(self) -> None:
        """
        HEAD answers, 204, 304 and a zero length have no body, whatever the fields say.

        Only the zero length is a length of the answer's own: a HEAD's or a 304's describes another
        answer, so it is not given as this one's (C{relay expose} passes the length on as it is).
        """
        cases = [
            (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", None),
            (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", None),
            (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", None),
            (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
        ]
        for method, data, length in cases:
            head, _ = head_of(data, method)
            self.assertEqual((head.framing, head.reusable, head.length), (Framing.NONE, True, length), data)

    def test_reuse(self) -> None:
        """HTTP/1.1 is kept unless it says close; HTTP/1.0 only when it says keep-alive."""
        cases = [
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
            (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n", False),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        ]
        for data, reusable in cases:
            head, _ = head_of(data, b"GET")
            self.assertEqual(head.reusable, reusable, data)

    def test_interim_heads(self) -> None:
        head, end = head_of(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", b"POST")
        self.assertTrue(head.interim)
        self.assertEqual(end, 25)

    def test_folded_lines_become_one_space(self) -> None:
        head, _ = head_of(b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\n\ttwo b\r\n\r\n", b"GET")
        self.assertEqual(head.headers, [(b"X-Long", b"one two two b")])

    def test_fields_in_order_with_values_trimmed(self) -> None:
        """A plain head keeps every field but the framing ones, names as sent, values without edge blanks."""
        head, end = head_of(
            b"HTTP/1.1 404 Not Found\r\nServer:  nginx \r\nContent-Length: 3\r\nX-A:\t1\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\r\nabc",
            b"GET",
        )
        self.assertEqual(
            head.headers,
            [(b"Server", b"nginx"), (b"X-A", b"1"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
             (b"X-Empty", b"")],
        )  # fmt: skip
        self.assertEqual((head.code, head.phrase, head.length, end), (404, b"Not Found", 3, 114))

    def test_same_length_twice_is_one_length(self) -> None:
        head, _ = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n", b"GET")
        self.assertEqual(head.length, 4)

    def test_malformed_heads(self) -> None:
        for data in (
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: fine\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: fine\r\n: no name\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: fine\r\nX\xff: high byte\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        ):
            self.assertRaises(ResponseError, read_response_head, data, b"GET")

    def test_line_breaks_and_nul_in_values(self) -> None:
        """
        A lone CR or LF, or a NUL, in a field is a malformed head (502), not a value to pass on.

        Before, the value reached the relayed response's headers, which refuse it with L{ValueError}: the
        request failed with 500 and a traceback, as if C{relay expose} itself had failed.
        """
        for field in (b"X-A: a\x00b", b"X-A: a\rb", b"X-A: a\nb: c", b"X-A: a\r\n b\x00", b"X\x00: a"):
            with self.subTest(field=field):
                data = b"HTTP/1.1 200 OK\r\n" + field + b"\r\nContent-Length: 0\r\n\r\n"
                self.assertRaises(ResponseError, read_response_head, data, b"GET")

    def test_control_characters_in_the_status_line(self) -> None:
        """A reason phrase with a NUL, a lone CR or LF, or another control byte is a malformed head (502)."""
        for phrase in (b"O\nK", b"O\rK", b"O\x00K", b"\x1b[2J"):
            with self.subTest(phrase=phrase):
                data = b"HTTP/1.1 200 " + phrase + b"\r\nContent-Length: 0\r\n\r\n"
                self.assertRaises(ResponseError, read_response_head, data, b"GET")
        head, _ = read_response_head(b"HTTP/1.1 200 Fine\tand \xe9\r\n\r\n", b"GET")
        self.assertEqual(head.phrase, b"Fine\tand \xe9")

    def test_overlong_length(self) -> None:
        """A Content-Length of thousands of digits is invalid, not a L{ValueError} from C{int()}."""
        data = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n"
        self.assertRaises(ResponseError, read_response_head, data, b"GET")
        head, _ = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 00000000000000000012\r\n\r\n")
        self.assertEqual(head.length, 12)

    def test_oversized_head(self) -> None:
        data = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * MAX_HEAD_BYTES
        self.assertRaises(ResponseError, read_response_head, data, b"GET")
        self.assertIsNone(read_response_head(data[: MAX_HEAD_BYTES - 10], b"GET"))


BODY = b"7;ext=1\r\nhello, \r\n6\r\nworld!\r\n0\r\nX-Sum: 13\r\n\r\n"


class ChunkedReaderTests(SynchronousTestCase):
    def test_split_at_every_boundary(self) -> None:
        """Extensions and trailers are read past; the data is the same however the bytes are split."""
        for cut in range(len(BODY) + 1):
            for second in range(cut, len(BODY) + 1):
                reader = ChunkedReader()
                out = b"".join(
                    b"".join(reader.feed(part)) for part in (BODY[:cut], BODY[cut:second], BODY[second:])
                )
                self.assertEqual(out, b"hello, world!", (cut, second))
                self.assertTrue(reader.done)
                self.assertEqual(reader.rest, b"")

    def test_not_done_before_the_empty_line(self) -> None:
        reader = ChunkedReader()
        self.assertEqual(reader.feed(BODY[:-2]), [b"hello, ", b"world!"])
        self.assertFalse(reader.done)
        reader.feed(b"\r\nextra")
        self.assertTrue(reader.done)
        self.assertEqual(reader.rest, b"extra")

    def test_malformed(self) -> None:
        for data in (b"zz\r\n", b"\r\n", b"5\r\nhello!!\r\n", b"-1\r\n", b"1" * 17 + b"\r\n"):
            self.assertRaises(ResponseError, ChunkedReader().feed, data)

    def test_longest_line_split_between_cr_and_lf(self) -> None:
        """A chunk-size line or trailer field of the longest length is read whether or not its LF comes later."""
        size_line = b"5;" + b"x" * (MAX_CHUNK_LINE - 2) + b"\r"
        trailer = b"5\r\nhello\r\n0\r\nt: " + b"y" * (MAX_CHUNK_LINE - 3) + b"\r"
        for first, second in ((size_line, b"\nhello\r\n0\r\n\r\n"), (trailer, b"\n\r\n")):
            reader = ChunkedReader()
            self.assertEqual(reader.feed(first) + reader.feed(second), [b"hello"])
            self.assertTrue(reader.done)

    def test_line_one_byte_too_long(self) -> None:
        """One byte more than the longest line is refused, held CR or not, in one read or two."""
        body = b"5;" + b"x" * (MAX_CHUNK_LINE - 1) + b"\r\nhello\r\n0\r\n\r\n"
        self.assertRaises(ResponseError, ChunkedReader().feed, body)
        reader = ChunkedReader()
        self.assertRaises(ResponseError, reader.feed, body[: MAX_CHUNK_LINE + 2])

    def test_endless_size_line(self) -> None:
        reader = ChunkedReader()
        reader.feed(b"5;" + b"x" * 100)
        self.assertRaises(ResponseError, reader.feed, b"x" * 5000)
