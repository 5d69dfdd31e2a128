"""A name's message size limit on the $wcf WebSocket, applied while a message is assembled from its frames."""

from __future__ import annotations

import tracemalloc

from bindings.addressing import read_addressing
from bindings.contracts import contract_of
from bindings.settings import ONEWAY
from bindings.wcf import WcfProtocol

from .calculator import ICalculator, IChat
from .test_wcf import add_request, envelope, subcode
from .wcfharness import BindingsTestCase, RecordingClient, envelope_bytes

CHAT = contract_of(IChat)
SAY = CHAT.operation("Say")
ADD = contract_of(ICalculator).operation("Add")

_TEXT, _CONTINUATION, _FIN = 0x1, 0x0, 0x80


def frame(opcode: int, payload: bytes, *, fin: bool, declared: int | None = None) -> bytes:
    """A masked client frame (all-zero key: the payload goes as it is), its length possibly announced larger."""
    length = len(payload) if declared is None else declared
    first = opcode | (_FIN if fin else 0)
    if length <= 125:
        head = bytes((first, 0x80 | length))
    elif length <= 0xFFFF:
        head = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def assembled(server: WcfProtocol) -> int:
    """The bytes of the current message the gateway holds (Autobahn's frame and message buffers)."""
    chunks = [*(server.message_data or ()), *(getattr(server, "frame_data", None) or ())]
    return sum(len(chunk) for chunk in chunks) + len(getattr(server, "_buffer", b""))


class AssemblyLimitTests(BindingsTestCase):
    """A message is refused as soon as its frames pass the name's limit, not once the kind's cap is buffered."""

    def server_of(self, role: str) -> WcfProtocol:
        (server,) = [p for p in self.bindings.websocket_factory.connections if p.role_name == role]
        return server

    def send_raw(self, client: RecordingClient, data: bytes) -> None:
        client.transport.write(data)
        self.net.flush()

    def test_fragments_past_the_limit(self) -> None:
        """
        Fragments passing the name's 4096 bytes draw MessageTooLarge at once, related to the message.

        The gateway keeps nothing more of the message; the rest is read and dropped, the socket stays open
        and the next message is delivered.
        """
        listener = self.listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        whole = envelope_bytes(
            SAY.encode_request("a", "x" * 9000), action=SAY.action, message_id="urn:uuid:big"
        )
        self.send_raw(sender, frame(_TEXT, whole[:3000], fin=False))
        self.assertEqual(sender.messages, [])
        self.send_raw(sender, frame(_CONTINUATION, whole[3000:6000], fin=False))
        (answer,) = sender.messages
        self.assertEqual(
            (subcode(answer[0]), read_addressing(envelope(answer[0])).relates_to),
            ("MessageTooLarge", "urn:uuid:big"),
        )
        self.assertEqual(assembled(self.server_of("sender")), 0)
        self.send_raw(sender, frame(_CONTINUATION, whole[6000:], fin=True))
        self.assertEqual(len(sender.messages), 1)
        self.assertIsNone(sender.closed)
        self.assertEqual(listener.messages[1:], [])  # [0] is r:Registered
        small = envelope_bytes(SAY.encode_request("a", "b"), action=SAY.action, message_id="urn:uuid:ok")
        sender.sendMessage(small, isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages), 2)
        self.assertEqual(read_addressing(envelope(sender.messages[-1][0])).relates_to, "urn:uuid:ok")

    def test_large_frame_refused_before_it_is_all_there(self) -> None:
        """
        One frame announcing 1 MiB on a name allowing 2048 bytes: refused once 2048 bytes have come.

        The kind (request/reply) allows 64 MiB, which the gateway used to take in before looking.
        """
        self.listener("small")
        sender = self.wcf("small", "send")
        request = add_request(message_id="urn:uuid:huge")
        head = request.replace(b"</s:Body>", b"<pad>" + b"x" * 8000 + b"</pad></s:Body>")[:8192]
        size = 1024 * 1024
        self.send_raw(sender, frame(_TEXT, head, fin=True, declared=size))
        (answer,) = sender.messages
        self.assertEqual(
            (subcode(answer[0]), read_addressing(envelope(answer[0])).relates_to),
            ("MessageTooLarge", "urn:uuid:huge"),
        )
        self.assertEqual(assembled(self.server_of("sender")), 0)
        self.send_raw(sender, b"y" * (size - len(head)))
        self.assertEqual(len(sender.messages), 1)
        self.assertIsNone(sender.closed)
        sender.sendMessage(add_request(message_id="urn:uuid:next"), isBinary=False)
        self.net.flush()
        self.assertIsNone(sender.closed)

    def test_listener_reply_past_the_limit(self) -> None:
        """A listener's reply passing the name's limit: MessageTooLarge to the listener and to the caller."""
        listener = self.listener("small")
        sender = self.wcf("small", "send")
        sender.sendMessage(add_request(message_id="urn:uuid:q"), isBinary=False)
        self.net.flush()
        reply = envelope_bytes(
            ADD.encode_response(5), action=ADD.reply_action, message_id=None, to=None
        ).replace(
            b"</s:Header>",
            b'<wsa:RelatesTo xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:uuid:q</wsa:RelatesTo>'
            + b"</s:Header>",
        )
        padded = reply.replace(b"</s:Body>", b"<pad>" + b"x" * 5000 + b"</pad></s:Body>")
        self.send_raw(listener, frame(_TEXT, padded[:1500], fin=False))
        self.send_raw(listener, frame(_CONTINUATION, padded[1500:3000], fin=False))
        self.assertEqual(subcode(listener.messages[-1][0]), "MessageTooLarge")
        self.assertEqual(assembled(self.server_of("listener")), 0)
        self.assertEqual(
            (subcode(sender.messages[-1][0]), read_addressing(envelope(sender.messages[-1][0])).relates_to),
            ("MessageTooLarge", "urn:uuid:q"),
        )
        self.send_raw(listener, frame(_CONTINUATION, padded[3000:], fin=True))
        self.assertIsNone(listener.closed)


class FragmentTests(BindingsTestCase):
    """A message in many small fragments is held as its bytes, not as one object per fragment."""

    def test_held_compactly(self) -> None:
        """
        30,000 one-byte fragments: the gateway holds about 30 KB, not 40 bytes of bookkeeping per byte.

        Kept as a list of the fragments' payloads, a 4 MiB request in one-byte fragments took 170 MB.
        """
        listener = self.listener("calc")
        sender = self.wcf("calc", "send")
        request = add_request(message_id="urn:uuid:frag")
        count = 30_000
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        sender.transport.write(frame(_TEXT, request[:-1], fin=False))
        self.net.flush()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count // 1000):
            sender.transport.write(b"".join(frame(_CONTINUATION, b" ", fin=False) for _ in range(1000)))
            self.net.flush()
        held = tracemalloc.get_traced_memory()[0] - before
        self.assertLess(held, 5 * count)
        sender.transport.write(frame(_CONTINUATION, request[-1:], fin=True))
        self.net.flush()
        self.assertEqual(len(listener.messages), 2)  # r:Registered, then the request
        self.assertEqual(read_addressing(envelope(listener.messages[1][0])).message_id, "urn:uuid:frag")
