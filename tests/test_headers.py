"""Tests for the HTTP relaying codecs: header forwarding rules and the request/response messages."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.headers import (
    MAX_SENDER_HEAD,
    HeaderError,
    body_forbidden,
    forward_request_headers,
    oversized_head,
    reason_phrase,
    response_head,
)
from relay.hybrid.messages import (
    ControlMessageError,
    HttpRequest,
    RemoteEndpoint,
    RendezvousRequest,
    parse_response,
)

TOKENS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20
)
VALUES = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)


def forward(pairs: list[tuple[str, str]], strip: bool = False) -> dict[str, str]:
    return forward_request_headers(
        pairs, strip_authorization=strip, via="1.1 relay.test", client_address="203.0.113.7", scheme="https"
    )


class RequestHeaderTests(SynchronousTestCase):
    """What a listener sees of a sender's headers."""

    def test_table(self) -> None:
        """Token carriers, hop-by-hop and framing headers go; proxy headers are added or extended."""
        headers = forward(
            [
                ("Host", "relay.test"),
                ("ServiceBusAuthorization", "SharedAccessSignature sr=..."),
                ("Authorization", "Bearer app"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Content-Length", "10"),
                ("Transfer-Encoding", "chunked"),
                ("Expect", "100-continue"),
                ("TE", "trailers"),
                ("Upgrade", "h2c"),
                ("Proxy-Authorization", "Basic x"),
                ("X-Forwarded-For", "198.51.100.1"),
                ("X-Forwarded-Proto", "http"),
                ("Via", "1.0 edge"),
                ("Accept", "text/html"),
                ("Accept", "application/json"),
            ]
        )
        self.assertEqual(
            headers,
            {
                "Host": "relay.test",
                "Authorization": "Bearer app",
                "X-Forwarded-For": "198.51.100.1, 203.0.113.7",
                "X-Forwarded-Proto": "https",
                "Via": "1.0 edge, 1.1 relay.test",
                "Accept": "text/html, application/json",
            },
        )

    def test_consumed_authorization_is_removed(self) -> None:
        """C{Authorization} that carried the relay token is not forwarded."""
        self.assertNotIn("Authorization", forward([("Authorization", "SharedAccessSignature x")], strip=True))

    def test_cookies_join_with_semicolons(self) -> None:
        """Several C{Cookie} headers become one, joined as RFC 6265 requires."""
        self.assertEqual(forward([("Cookie", "a=1"), ("cookie", "b=2")])["Cookie"], "a=1; b=2")

    @given(st.lists(st.tuples(TOKENS, VALUES), max_size=12))
    @example(
        [("0", ""), ("CONNECTION", "0")]
    )  # found by hypothesis in CI: a header the Connection header names
    def test_every_other_header_survives(self, pairs: list[tuple[str, str]]) -> None:
        """
        Every header that is not a connection or relay header reaches the listener with all its values.

        Names the sender's C{Connection} header lists are connection headers too (RFC 9110, 7.6.1).
        """
        listed = {o.strip().lower() for n, v in pairs if n.lower() == "connection" for o in v.split(",")}
        special = listed | {
            "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
            "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "expect",
            "servicebusauthorization", "x-forwarded-proto", "via", "x-forwarded-for", "cookie",
        }  # fmt: skip
        headers = {name.lower(): value for name, value in forward(pairs).items()}
        for name, _ in pairs:
            if name.lower() not in special:
                expected = ", ".join(v for n, v in pairs if n.lower() == name.lower())
                self.assertEqual(headers[name.lower()], expected)


class ResponseHeaderTests(SynchronousTestCase):
    """What a sender sees of a listener's headers."""

    def test_values_and_framing(self) -> None:
        """Arrays become lines, numbers text; framing headers go, Content-Length is kept aside, Via extended."""
        head = response_head(
            {
                "Content-Type": "text/plain",
                "Set-Cookie": ["a=1", "b=2"],
                "Content-Length": 12,
                "Transfer-Encoding": "chunked",
                "Connection": "close, X-Only-Here",
                "X-Only-Here": "1",
                "Via": "1.1 app",
            },
            via="1.1 relay.test",
        )
        self.assertEqual(
            head.headers,
            (
                ("Content-Type", "text/plain"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Via", "1.1 app, 1.1 relay.test"),
            ),
        )
        self.assertEqual(head.content_length, 12)

    def test_refusals(self) -> None:
        """Anything that could break the sender's response is refused."""
        for fields in (
            {"Bad Name": "x"},
            {"X-Split\n": "x"},  # a name ending in a line break would end the head early
            {"X-Split\r\nInjected": "x"},
            {"X\nInjected": "x"},
            {"A\nB": "1", "C": "2"},
            {"Good": "1", "Bad Name": "2"},
            {"Good": "1", "X": "two\r\nInjected: 1"},
            {"X": "lone \ud800 surrogate"},
            {"X": ["fine", "lone \udfff"]},
            {"X": "a\r\nInjected: 1"},
            {"X": "nul\x00"},
            {"X": "bell\x07"},  # Node's HTTP client refuses the whole head for it
            {"X": "escape \x1b[31m"},
            {"X": ["fine", "del\x7f"]},
            {"X": {"nested": 1}},
            {"X": True},
            {"Content-Length": "ten"},
            {"Content-Length": "\u00b2"},  # "²": str.isdigit says yes, int says no
            {"Content-Length": "\u0663"},  # Arabic-Indic 3: int reads it, HTTP does not
            {"Content-Length": ["1", "2"]},
            ["not", "an", "object"],
        ):
            with self.subTest(fields=fields):
                self.assertRaises(HeaderError, response_head, fields, via="1.1 r")

    def test_tab_and_text_beyond_ascii_are_forwarded(self) -> None:
        """The tab is the one control character a value may hold (RFC 9110 section 5.5); obs-text is kept."""
        head = response_head({"X": "a\tb", "Y": "caf\u00e9"}, via="1.1 r")
        self.assertEqual(head.headers, (("X", "a\tb"), ("Y", "caf\u00e9"), ("Via", "1.1 r")))

    def test_missing_headers(self) -> None:
        """No C{responseHeaders} at all is an empty set (plus Via)."""
        self.assertEqual(response_head(None, via="1.1 r").headers, (("Via", "1.1 r"),))

    def test_reason_phrase(self) -> None:
        """The listener's phrase when printable, else the standard one."""
        self.assertEqual(reason_phrase(201, "Made It"), "Made It")
        self.assertEqual(reason_phrase(201, None), "Created")
        self.assertEqual(reason_phrase(201, "bad\r\nphrase"), "bad phrase")
        self.assertEqual(reason_phrase(404, "gr\u00fcn"), "Not Found")
        self.assertEqual(reason_phrase(599, ""), "Unknown")

    def test_body_forbidden(self) -> None:
        """HEAD, 1xx, 204 and 304 never carry a body."""
        self.assertTrue(body_forbidden("HEAD", 200))
        self.assertTrue(body_forbidden("GET", 204))
        self.assertTrue(body_forbidden("GET", 304))
        self.assertTrue(body_forbidden("GET", 101))
        self.assertFalse(body_forbidden("GET", 200))

    def test_oversized_head(self) -> None:
        """A head's bytes are counted (status line, lines, end), values in UTF-8; only beyond the bound."""
        fixed = len("HTTP/1.1 200 OK\r\n") + len("X: \r\n") + len("\r\n")
        fits = MAX_SENDER_HEAD - fixed
        self.assertIsNone(oversized_head("OK", [("X", "a" * fits)]))
        self.assertEqual(oversized_head("OK", [("X", "a" * (fits + 1))]), MAX_SENDER_HEAD + 1)
        self.assertIsNone(oversized_head("OK", [("X", "\u00e9" * (fits // 2))]))
        wide = fits // 2 + 1
        self.assertEqual(oversized_head("OK", [("X", "\u00e9" * wide)]), fixed + 2 * wide)
        many = [("Set-Cookie", "c" * 100)] * 600  # each line 114 bytes
        self.assertEqual(oversized_head("OK", many), len("HTTP/1.1 200 OK\r\n\r\n") + 600 * 114)


class MessageTests(SynchronousTestCase):
    """The C{request} and C{response} control messages."""

    def test_full_request(self) -> None:
        """The full form has every field, with an explicit boolean body."""
        message = HttpRequest(
            address="wss://r/$hc/h?sb-hc-action=request&sb-hc-id=1",
            id="1",
            request_target="/h/x?a=1",
            method="POST",
            remote_endpoint=RemoteEndpoint("203.0.113.7", 51240),
            request_headers={"Content-Type": "application/json"},
            body=False,
        )
        self.assertEqual(
            json.loads(message.encode()),
            {
                "request": {
                    "address": "wss://r/$hc/h?sb-hc-action=request&sb-hc-id=1",
                    "id": "1",
                    "requestTarget": "/h/x?a=1",
                    "method": "POST",
                    "remoteEndpoint": {"address": "203.0.113.7", "port": 51240},
                    "requestHeaders": {"Content-Type": "application/json"},
                    "body": False,
                }
            },
        )

    def test_rendezvous_request_has_two_keys(self) -> None:
        """The rendezvous-only form is exactly C{address} and C{id}."""
        self.assertEqual(
            json.loads(RendezvousRequest("wss://a", "7").encode()),
            {"request": {"address": "wss://a", "id": "7"}},
        )

    def test_response_forms(self) -> None:
        """Numbers or numeric strings; description and body optional."""
        response = parse_response({"requestId": "1", "statusCode": "201"})
        self.assertEqual(
            (response.status_code, response.status_description, response.body), (201, None, False)
        )
        response = parse_response(
            {
                "requestId": "1",
                "statusCode": 200,
                "statusDescription": "OK",
                "responseHeaders": {},
                "body": True,
            }
        )
        self.assertEqual((response.status_code, response.body), (200, True))

    def test_bad_responses(self) -> None:
        """Missing ids, impossible statuses and non-boolean bodies are refused."""
        for body in (
            {"statusCode": 200},
            {"requestId": "", "statusCode": 200},
            {"requestId": "1", "statusCode": 42},
            {"requestId": "1", "statusCode": "2xx"},
            {"requestId": "1", "statusCode": True},
            {"requestId": "1", "statusCode": 200, "body": "yes"},
            "not an object",
        ):
            with self.subTest(body=body):
                self.assertRaises(ControlMessageError, parse_response, body)

    @given(st.integers(100, 599), st.booleans(), st.text(max_size=20))
    def test_round_trip(self, status: int, as_text: bool, request_id: str) -> None:
        """Any valid status, as number or text, is read back."""
        if request_id:
            response = parse_response(
                {"requestId": request_id, "statusCode": str(status) if as_text else status}
            )
            self.assertEqual((response.request_id, response.status_code), (request_id, status))
