"""The strict request-head reader the gateway uses for the upgrades it answers without twisted.web."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from relay.httphead import RequestHead, read_head

TARGET = b"/$hc/hyco?sb-hc-action=connect&sb-hc-id=abc"
FIELDS = (
    b"Host: relay.example:443\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
HEAD = b"GET " + TARGET + b" HTTP/1.1\r\n" + FIELDS + b"\r\n"
LIMITS = {"max_request_line": 16384, "max_header_bytes": 65536, "max_headers": 500}


def read(data: bytes, **limits: int) -> RequestHead | None:
    return read_head(data, target_prefix=b"/$hc/", **{**LIMITS, **limits})


def head_with(fields: bytes, target: bytes = TARGET, request_line: bytes | None = None) -> bytes:
    """A head with these header fields (each with its CRLF) and this target or request line."""
    line = request_line if request_line is not None else b"GET " + target + b" HTTP/1.1"
    return line + b"\r\n" + fields + b"\r\n"


class ReadHeadTests(SynchronousTestCase):
    """Plain heads are read as twisted.web reads them; everything else is left to twisted.web (None)."""

    def test_plain_head(self) -> None:
        self.assertEqual(
            read(HEAD),
            RequestHead(
                b"GET",
                TARGET,
                b"HTTP/1.1",
                [
                    (b"host", [b"relay.example:443"]),
                    (b"upgrade", [b"websocket"]),
                    (b"connection", [b"Upgrade"]),
                    (b"sec-websocket-key", [b"dGhlIHNhbXBsZSBub25jZQ=="]),
                    (b"sec-websocket-version", [b"13"]),
                ],
            ),
        )

    def test_values_lose_spaces_and_tabs_around_them(self) -> None:
        head = read(head_with(b"Host:relay.example\r\nX-Pad: \t a b \t \r\nX-Empty:\r\n"))
        assert head is not None
        self.assertEqual(
            head.headers, [(b"host", [b"relay.example"]), (b"x-pad", [b"a b"]), (b"x-empty", [b""])]
        )

    def test_other_bytes_in_values_are_kept(self) -> None:
        """twisted.web refuses only NUL, CR and LF in values; other bytes (obs-text too) are kept."""
        head = read(head_with(b"Host: h\r\nX-Text: caf\xe9 \x7f \x0b\r\n"))
        assert head is not None
        self.assertEqual(head.headers, [(b"host", [b"h"]), (b"x-text", [b"caf\xe9 \x7f \x0b"])])

    def test_host_only(self) -> None:
        self.assertEqual(
            read(head_with(b"host: \r\n")), RequestHead(b"GET", TARGET, b"HTTP/1.1", [(b"host", [b""])])
        )

    def test_limits_are_inclusive(self) -> None:
        """A head exactly at each of the site's limits is read (one byte or field more is not)."""
        line_length = len(b"GET " + TARGET + b" HTTP/1.1")
        self.assertIsNotNone(read(HEAD, max_request_line=line_length))
        self.assertIsNone(read(HEAD, max_request_line=line_length - 1))
        self.assertIsNotNone(read(HEAD, max_header_bytes=len(FIELDS)))
        self.assertIsNone(read(HEAD, max_header_bytes=len(FIELDS) - 1))
        self.assertIsNotNone(read(HEAD, max_headers=5))
        self.assertIsNone(read(HEAD, max_headers=4))

    def test_not_plain(self) -> None:
        """Each of these is left to twisted.web, which answers (or refuses) it as before."""
        cases = {
            "empty": b"",
            "incomplete": HEAD[:-2],
            "only the request line": b"GET " + TARGET + b" HTTP/1.1\r\n",
            "bytes after the head": HEAD + b"\x81\x00",
            "two heads": HEAD + HEAD,
            "leading empty line": b"\r\n" + HEAD,
            "LF line ends": HEAD.replace(b"\r\n", b"\n"),
            "POST": head_with(FIELDS, request_line=b"POST " + TARGET + b" HTTP/1.1"),
            "lower-case method": head_with(FIELDS, request_line=b"get " + TARGET + b" HTTP/1.1"),
            "HTTP/1.0": head_with(FIELDS, request_line=b"GET " + TARGET + b" HTTP/1.0"),
            "HTTP/2.0": head_with(FIELDS, request_line=b"GET " + TARGET + b" HTTP/2.0"),
            "lower-case version": head_with(FIELDS, request_line=b"GET " + TARGET + b" http/1.1"),
            "two spaces": head_with(FIELDS, request_line=b"GET  " + TARGET + b" HTTP/1.1"),
            "trailing space": head_with(FIELDS, request_line=b"GET " + TARGET + b" HTTP/1.1 "),
            "no version": head_with(FIELDS, request_line=b"GET " + TARGET),
            "tab as separator": head_with(FIELDS, request_line=b"GET\t" + TARGET + b" HTTP/1.1"),
            "other prefix": head_with(FIELDS, target=b"/hyco?sb-hc-action=connect"),
            "prefix in other case": head_with(FIELDS, target=b"/$HC/hyco?sb-hc-action=connect"),
            "escaped prefix": head_with(FIELDS, target=b"/%24hc/hyco?sb-hc-action=connect"),
            "absolute target": head_with(FIELDS, target=b"http://relay.example/$hc/hyco"),
            "DEL in target": head_with(FIELDS, target=TARGET + b"\x7f"),
            "non-ASCII target": head_with(FIELDS, target=TARGET + b"\xe9"),
            "NUL in target": head_with(FIELDS, target=TARGET + b"\x00"),
            "CR in target": head_with(FIELDS, target=TARGET + b"\r"),
            "folded field": head_with(FIELDS + b"X-Long: a\r\n b\r\n"),
            "folded with a tab": head_with(FIELDS + b"X-Long: a\r\n\tb\r\n"),
            "no colon": head_with(FIELDS + b"X-Broken\r\n"),
            "empty name": head_with(FIELDS + b": value\r\n"),
            "space before the colon": head_with(FIELDS + b"X-Name : value\r\n"),
            "space in the name": head_with(FIELDS + b"X Name: value\r\n"),
            "separator in the name": head_with(FIELDS + b"X(Name): value\r\n"),
            "non-ASCII name": head_with(FIELDS + b"X-Caf\xe9: value\r\n"),
            "NUL in a value": head_with(FIELDS + b"X-Value: a\x00b\r\n"),
            "bare CR in a value": head_with(FIELDS + b"X-Value: a\rb\r\n"),
            "bare LF in a value": head_with(FIELDS + b"X-Value: a\nb\r\n"),
            "repeated field": head_with(FIELDS + b"X-Twice: 1\r\nX-Twice: 2\r\n"),
            "repeated in another case": head_with(FIELDS + b"upgrade: websocket\r\n"),
            "Content-Length": head_with(FIELDS + b"Content-Length: 0\r\n"),
            "Transfer-Encoding": head_with(FIELDS + b"Transfer-Encoding: chunked\r\n"),
            "Expect": head_with(FIELDS + b"Expect: 100-continue\r\n"),
            "expect in lower case": head_with(FIELDS + b"expect: 100-continue\r\n"),
            # twisted.web's channel answers 400 to an HTTP/1.1 request without Host, or with two
            "no fields": head_with(b""),
            "no Host": head_with(FIELDS.replace(b"Host: relay.example:443\r\n", b"")),
            "two Host fields": head_with(FIELDS + b"host: other.example\r\n"),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertIsNone(read(data), name)

    def test_default_prefix_is_any_origin_form_target(self) -> None:
        head = read_head(head_with(b"Host: h\r\n", target=b"/anything"), **LIMITS)
        assert head is not None
        self.assertEqual(head.target, b"/anything")
