"""Tests for L{relay.client.adapters}' reading of the address the sender used."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from relay.client.adapters import _server_address
from relay.client.headers import Headers
from relay.client.httprequest import RelayedRequest, RequestBody


def request_with(headers: dict[str, str]) -> RelayedRequest:
    return RelayedRequest(
        id="r1",
        method="GET",
        target="/hyco/",
        path="/",
        query="",
        headers=Headers(headers),
        remote_endpoint=None,
        body=RequestBody.whole(None),
    )


class ServerAddressTests(SynchronousTestCase):
    """The host, port and scheme a WSGI or twisted.web application is told it was reached at."""

    def test_host_and_port(self) -> None:
        """C{Host} names both; C{X-Forwarded-Proto} says whether TLS was used."""
        self.assertEqual(
            _server_address(request_with({"Host": "relay.example:8443", "X-Forwarded-Proto": "https"})),
            ("relay.example", 8443, True),
        )

    def test_default_ports(self) -> None:
        """Without a port, the scheme's default."""
        self.assertEqual(
            _server_address(request_with({"Host": "relay.example"})), ("relay.example", 80, False)
        )
        self.assertEqual(
            _server_address(request_with({"Host": "relay.example", "X-Forwarded-Proto": "https"})),
            ("relay.example", 443, True),
        )

    def test_a_port_that_is_not_ascii_digits(self) -> None:
        """
        A port of other digits (C{"²"} passes C{str.isdigit}, C{int} refuses it) is no port: the default.

        It used to raise C{ValueError} while the request was being adapted.
        """
        for port in ("\u00b2", "\u0663", "https"):
            with self.subTest(port=port):
                self.assertEqual(
                    _server_address(request_with({"Host": f"relay.example:{port}"})),
                    ("relay.example", 80, False),
                )
