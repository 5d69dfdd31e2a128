"""An HTTP SOAP message over its name's size limit is refused as it comes, not once the gateway has it all."""

from __future__ import annotations

from lxml import etree

from bindings.contracts import contract_of
from bindings.settings import ONEWAY
from bindings.soap import SOAP12_NS, SoapVersion

from ..httpharness import RawHttpClient
from .calculator import IChat
from .test_wcf import envelope, subcode
from .wcfharness import HOST, BindingsTestCase, envelope_bytes

SAY = contract_of(IChat).operation("Say")
LIMIT = 4096  # the "events" name's max_message_bytes


class HttpBodyLimitTests(BindingsTestCase):
    """POSTs to a one-way name allowing 4096 bytes (its kind allows 64 MiB of HTTP body to be buffered)."""

    def setUp(self) -> None:
        super().setUp()
        self.listener_client = self.listener("events", ONEWAY, IChat)
        self.client: RawHttpClient = self.net.attach(RawHttpClient())

    def head(self, length: int | None) -> bytes:
        self.client.methods.append("POST")
        framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        return (
            f"POST /events HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/soap+xml; charset=utf-8\r\n"
            f"ServiceBusAuthorization: {self.token('events')}\r\n{framing}\r\n\r\n"
        ).encode("latin-1")

    def assertTooLarge(self) -> None:
        reply = self.client.reply
        self.assertEqual(reply.status, 413)
        self.assertTrue((reply.header("content-type") or "").startswith("application/soap+xml"))
        self.assertEqual(subcode(reply.body), "MessageTooLarge")
        self.assertEqual(envelope(reply.body).version, SoapVersion.SOAP12)
        self.assertEqual(len(self.listener_client.messages), 1)  # r:Registered only

    def test_announced_too_large(self) -> None:
        """A Content-Length over the limit is answered at once, before the body (10 MiB) comes."""
        self.client.send(self.head(10 * 1024 * 1024) + b"<s:Envelope" + b" " * 1000)
        self.net.flush()
        self.assertTooLarge()

    def test_chunked_past_the_limit(self) -> None:
        """A chunked body is refused once it passes the limit; the gateway does not wait for its end."""
        self.client.send(self.head(None))
        for _ in range(3):
            self.client.chunk(b" " * 2000)
        self.net.flush()
        self.assertTooLarge()

    def test_chunked_within_the_limit(self) -> None:
        """A chunked message within the limit is delivered as before."""
        data = envelope_bytes(SAY.encode_request("a", "b"), action=SAY.action, message_id="urn:uuid:c")
        self.assertIn(SOAP12_NS.encode(), data)
        self.client.send(self.head(None))
        self.client.chunk(data[:100])
        self.client.chunk(data[100:])
        self.client.chunk(b"")
        self.net.flush()
        self.assertEqual(self.client.reply.status, 202)
        self.assertEqual(len(self.listener_client.messages), 2)
        body = etree.fromstring(self.listener_client.messages[1][0]).find(f"{{{SOAP12_NS}}}Body")
        self.assertEqual(etree.QName(body[0]).localname, "Say")  # type: ignore[index]
