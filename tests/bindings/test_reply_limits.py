"""A listener's reply on the $wcf WebSocket is held to its name's message limit, whatever the gateway makes of it."""

from __future__ import annotations

from bindings.addressing import read_addressing
from bindings.channels import read_capped
from bindings.contracts import contract_of
from bindings.soap import SOAP12_NS

from .calculator import ICalculator
from .test_httpsoap import HttpTestCase
from .test_wcf import add_request, envelope, subcode
from .wcfharness import RecordingClient

ADD = contract_of(ICalculator).operation("Add")
WSA = "http://www.w3.org/2005/08/addressing"


def inheriting_reply(relates_to: str, blocks: int = 50, namespace: int = 800) -> bytes:
    """
    A reply of under 2 KB declaring one long namespace on its Envelope and holding many empty header blocks.

    Each block is forwarded with the declarations it inherits written on it: about 45 KB once written.
    """
    headers = f"<a:RelatesTo>{relates_to}</a:RelatesTo><a:Action>{ADD.reply_action}</a:Action>" + (
        "<big:h/>" * blocks
    )
    return (
        f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:a="{WSA}" xmlns:big="urn:{"x" * namespace}">'
        f"<s:Header>{headers}</s:Header><s:Body><AddResponse xmlns='{ADD.namespace}'>"
        f"<AddResult>5</AddResult></AddResponse></s:Body></s:Envelope>"
    ).encode()


class InheritedDeclarationsInRepliesTests(HttpTestCase):
    """
    The name "small" allows 2048 bytes: a reply whose blocks inherit more than that gets MessageTooLarge.

    Its size was checked as it came, but it was parsed with the kind's hard cap (64 MiB), within which the
    inherited declarations were allowed: written on each block, they made a SOAP 1.1 caller's converted
    reply, or a WebSocket caller's, up to 64 MiB on a name whose limit is far smaller.
    """

    def answer(self, listener: RecordingClient, payload: bytes) -> None:
        listener.sendMessage(payload, isBinary=False)
        self.net.flush()

    def test_websocket_caller(self) -> None:
        """The listener and the caller both get MessageTooLarge, related to the request."""
        listener = self.listener("small")
        sender = self.wcf("small", "send")
        sender.sendMessage(add_request(message_id="urn:uuid:q"), isBinary=False)
        self.net.flush()
        reply = inheriting_reply("urn:uuid:q")
        self.assertLess(len(reply), 2048)
        self.answer(listener, reply)
        self.assertEqual(
            (
                subcode(listener.messages[-1][0]),
                read_addressing(envelope(listener.messages[-1][0])).relates_to,
            ),
            ("MessageTooLarge", "urn:uuid:q"),
        )
        (answer,) = sender.messages
        self.assertEqual(
            (subcode(answer[0]), read_addressing(envelope(answer[0])).relates_to),
            ("MessageTooLarge", "urn:uuid:q"),
        )
        self.assertIsNone(listener.closed)

    def test_soap11_caller(self) -> None:
        """A SOAP 1.1 caller gets a MessageTooLarge fault, not a 45 KB conversion of a 2 KB reply."""
        listener = self.listener("small")
        pending = self.start_add("small")
        request = envelope(listener.messages[-1][0])
        self.answer(listener, inheriting_reply(read_addressing(request).message_id or ""))
        response = self.settle(pending)
        data = self.settle(read_capped(response, 1 << 24))
        self.assertLess(len(data), 2048)
        self.assertEqual((response.code, self.fault_of(data)[0]), (500, "MessageTooLarge"))
