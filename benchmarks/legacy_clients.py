"""
Lean load generators for the legacy-shape benchmark: the same raw WebSocket client for SOAP and for WAMP.

Both systems are driven by the same code: Autobahn does the opening handshake, then the client parses the
server's frames itself (unmasked, FIN set: neither router fragments small messages) and writes its own
masked frames, so the clients cost a few microseconds per message and the router under test is what is
measured. Only the message formats differ:

- SOAP (relay C{$wcf}, subprotocol C{soap}): text frames with SOAP 1.2 envelopes built from a template the
  way our C{ChannelFactory} builds them (unique C{wsa:MessageID} each); subscribers and the callee register
  with C{r:Register} first (the callee with its contract's WSDL).
- WAMP (Crossbar.io, subprotocol C{wamp.2.msgpack}): binary frames with msgpack-encoded WAMP messages
  (C{HELLO}, C{SUBSCRIBE}/C{EVENT}, C{PUBLISH} with C{acknowledge}, C{REGISTER}/C{INVOCATION}/C{YIELD},
  C{CALL}/C{RESULT}).

Every role is a process driven over stdin by the orchestrator (L{legacy_shapes}): it prints C{READY} once
connected (and registered or subscribed), then obeys C{go} (senders start their window), C{mark} (start
counting), C{report} (print counts since the mark as JSON) and C{stop}.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver

KEY_NAME = "root"
PAYLOAD = "x" * 256
TOPIC = "bench.mc"
PROCEDURE = "bench.echo"
REALM = "realm1"
TEXT, BINARY = 0x1, 0x2


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked, unfragmented client frame."""
    key = random.getrandbits(32).to_bytes(4, "big")
    length = len(payload)
    if length <= 125:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length <= 0xFFFF:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        length, "little"
    )
    return head + key + masked


class LeanProtocol(WebSocketClientProtocol):
    """Autobahn for the handshake; after it, frames are parsed here and handed to C{self.on_frame}."""

    on_frame: Callable[[LeanProtocol, int, bytes], None]
    on_open: Callable[[LeanProtocol], None]

    def __init__(self) -> None:
        super().__init__()
        self._raw = False
        self._buffer = b""

    def onOpen(self) -> None:
        self._raw = True
        rest = bytes(self.data) if self.data else b""
        self.data = b""
        self.factory.on_open(self)  # type: ignore[attr-defined]
        if rest:
            self.dataReceived(rest)

    def dataReceived(self, data: bytes) -> None:
        if not self._raw:
            self._dataReceived(data)
            return
        buffer = self._buffer + data if self._buffer else data
        offset, size = 0, len(buffer)
        on_frame = self.factory.on_frame  # type: ignore[attr-defined]
        while size - offset >= 2:
            b0, b1 = buffer[offset], buffer[offset + 1]
            length, start = b1 & 0x7F, offset + 2
            if length == 126:
                if size - offset < 4:
                    break
                length, start = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), offset + 4
            elif length == 127:
                if size - offset < 10:
                    break
                length, start = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), offset + 10
            end = start + length
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode in (TEXT, BINARY):
                on_frame(self, opcode, buffer[start:end])
            elif opcode == 0x9:  # ping: answer with a pong carrying the same payload
                self.transport.write(frame(0xA, buffer[start:end]))
            elif opcode == 0x8:
                self.transport.loseConnection()
            offset = end
        self._buffer = buffer[offset:]

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.transport.write(frame(opcode, payload))


def connect(
    port: int,
    path: str,
    subprotocol: str,
    headers: dict[str, str],
    on_open: Callable[[LeanProtocol], None],
    on_frame: Callable[[LeanProtocol, int, bytes], None],
) -> None:
    url = f"ws://127.0.0.1:{port}{path}"
    factory = WebSocketClientFactory(url, protocols=[subprotocol], headers=headers)
    factory.protocol = LeanProtocol
    factory.setProtocolOptions(autoPingInterval=0, perMessageCompressionOffers=[], openHandshakeTimeout=30)
    factory.on_open = on_open  # type: ignore[attr-defined]
    factory.on_frame = on_frame  # type: ignore[attr-defined]
    reactor.connectTCP("127.0.0.1", port, factory)  # type: ignore[attr-defined]


# -- the roles ---------------------------------------------------------------------------------------


class Counter:
    """Counts received messages; C{mark}/C{report} bracket the measured interval."""

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self._mark = (0, 0, 0.0, 0.0)

    def mark(self) -> None:
        self._mark = (self.count, self.errors, time.monotonic(), time.process_time())

    def report(self) -> dict[str, float]:
        count, errors, wall, cpu = self._mark
        return {
            "count": self.count - count,
            "errors": self.errors - errors,
            "elapsed": time.monotonic() - wall,
            "cpu": time.process_time() - cpu,
        }


class Sender:
    """Keeps C{window} messages in flight on each connection; an answer releases the next message."""

    def __init__(self, window: int, build: Callable[[int], bytes], opcode: int, ok: Callable[[bytes], bool]):
        self.window = window
        self.build = build
        self.opcode = opcode
        self.ok = ok
        self.counter = Counter()
        self.protocols: list[LeanProtocol] = []
        self.running = False
        self.sequence = 0

    def go(self) -> None:
        self.running = True
        for protocol in self.protocols:
            for _ in range(self.window):
                self._send(protocol)

    def _send(self, protocol: LeanProtocol) -> None:
        self.sequence += 1
        protocol.send_frame(self.opcode, self.build(self.sequence))

    def answer(self, protocol: LeanProtocol, payload: bytes) -> None:
        if self.ok(payload):
            self.counter.count += 1
        else:
            self.counter.errors += 1
            if self.counter.errors <= 3:
                print(f"unexpected answer: {payload[:300]!r}", file=sys.stderr, flush=True)
        if self.running:
            self._send(protocol)


class Control(LineReceiver):
    """The orchestrator's commands on stdin."""

    delimiter = b"\n"

    def __init__(self, counter: Counter, sender: Sender | None = None) -> None:
        self.counter = counter
        self.sender = sender

    def lineReceived(self, line: bytes) -> None:
        command = line.strip().decode()
        if command == "go" and self.sender is not None:
            self.sender.go()
        elif command == "mark":
            self.counter.mark()
        elif command == "report":
            print(json.dumps(self.counter.report()), flush=True)
        elif command == "stop":
            if self.sender is not None:
                self.sender.running = False
            reactor.callLater(0.2, reactor.stop)  # type: ignore[attr-defined]


def ready_after(count: int) -> Callable[[], None]:
    """A callback to call once per ready connection; prints READY after C{count} calls."""
    left = [count]

    def one() -> None:
        left[0] -= 1
        if left[0] == 0:
            print("READY", flush=True)

    return one


# -- SOAP --------------------------------------------------------------------------------------------


def soap_headers(port: int, name: str) -> dict[str, str]:
    from bindings_throughput import KEY

    from bindings.credentials import SasCredentials

    return {
        "ServiceBusAuthorization": SasCredentials(KEY_NAME, KEY).token(
            f"http://127.0.0.1:{port}/{name}", time.time()
        )
    }


def soap_template(port: int, name: str, action: str, element: str, reply: bool) -> Callable[[int], bytes]:
    """Envelopes as our ChannelFactory writes them, with a unique MessageID each."""
    from lxml import etree

    from bindings.addressing import addressing_headers
    from bindings.soap import Envelope, SoapVersion

    body = etree.Element(f"{{urn:bench}}{element}", nsmap={None: "urn:bench"})
    etree.SubElement(body, "{urn:bench}text").text = PAYLOAD
    headers = addressing_headers(
        to=f"http://127.0.0.1:{port}/{name}", action=action, message_id="@ID@", reply_to_anonymous=reply
    )
    prefix, suffix = Envelope(SoapVersion.SOAP12, headers, (body,)).to_bytes().split(b"@ID@")
    tag = random.getrandbits(48)

    def build(sequence: int) -> bytes:
        return b"%surn:uuid:%012x-%d%s" % (prefix, tag, sequence, suffix)

    return build


def soap_register(kind: str, port: int, name: str) -> bytes:
    from bindings_throughput import contract

    from bindings.addressing import new_message_id
    from bindings.contracts import contract_of
    from bindings.control import Registration, register_envelope
    from bindings.wsdl import generate_wsdl

    wsdl = None
    if kind != "multicast":
        wsdl = generate_wsdl(contract_of(contract(kind)), f"http://127.0.0.1:{port}/{name}")
    return register_envelope(Registration(kind=kind, wsdl=wsdl), new_message_id()).to_bytes()


def soap_listener(port: int, name: str, kind: str, connections: int) -> None:
    """Subscribers (multicast), a one-way listener, or the echo callee (requestreply)."""
    counter = Counter()
    ready = ready_after(connections)
    registered: set[LeanProtocol] = set()
    reply_prefix = reply_suffix = b""
    if kind == "requestreply":
        from lxml import etree

        from bindings.addressing import addressing_headers
        from bindings.soap import Envelope, SoapVersion

        body = etree.Element("{urn:bench}EchoResponse", nsmap={None: "urn:bench"})
        etree.SubElement(body, "{urn:bench}EchoResult").text = PAYLOAD
        headers = addressing_headers(action="urn:bench/IEcho/EchoResponse", relates_to="@ID@")
        reply_prefix, reply_suffix = Envelope(SoapVersion.SOAP12, headers, (body,)).to_bytes().split(b"@ID@")

    def opened(protocol: LeanProtocol) -> None:
        protocol.send_frame(TEXT, soap_register(kind, port, name))

    def received(protocol: LeanProtocol, opcode: int, payload: bytes) -> None:
        if protocol not in registered:
            if b"Registered" not in payload:
                print(f"registration failed: {payload[:400]!r}", file=sys.stderr, flush=True)
                reactor.stop()  # type: ignore[attr-defined]
                return
            registered.add(protocol)
            ready()
            return
        counter.count += 1
        if reply_prefix:
            start = payload.index(b">", payload.index(b"MessageID")) + 1
            message_id = payload[start : payload.index(b"<", start)]
            protocol.send_frame(TEXT, reply_prefix + message_id + reply_suffix)

    path = f"/$wcf/{name}?sb-wcf-action=listen"
    for _ in range(connections):
        connect(port, path, "soap", soap_headers(port, name), opened, received)
    stdio.StandardIO(Control(counter))
    reactor.run()  # type: ignore[attr-defined]


def soap_sender(port: int, name: str, kind: str, window: int) -> None:
    """The publisher, one-way sender or caller: C{window} messages in flight."""
    if kind == "requestreply":
        build = soap_template(port, name, "urn:bench/IEcho/Echo", "Echo", True)
        expected = b"EchoResponse"
    else:
        build = soap_template(port, name, "urn:bench/IPost/Post", "Post", False)
        expected = b"Delivered"
    sender = Sender(window, build, TEXT, lambda payload: expected in payload)

    def opened(protocol: LeanProtocol) -> None:
        sender.protocols.append(protocol)
        print("READY", flush=True)

    connect(
        port,
        f"/$wcf/{name}?sb-wcf-action=send",
        "soap",
        soap_headers(port, name),
        opened,
        lambda protocol, opcode, payload: sender.answer(protocol, payload),
    )
    stdio.StandardIO(Control(sender.counter, sender))
    reactor.run()  # type: ignore[attr-defined]


# -- WAMP (msgpack) ----------------------------------------------------------------------------------

HELLO, WELCOME, ABORT = 1, 2, 3
PUBLISH, PUBLISHED = 16, 17
SUBSCRIBE, SUBSCRIBED, EVENT = 32, 33, 36
CALL, RESULT = 48, 50
REGISTER, REGISTERED, INVOCATION, YIELD = 64, 65, 68, 70
ROLES = {"roles": {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}}


class Wire:
    """A WAMP serializer: msgpack in binary frames (the default) or JSON in text frames."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.subprotocol = f"wamp.2.{name}"
        self.opcode = BINARY if name == "msgpack" else TEXT

    def pack(self, message: list[Any]) -> bytes:
        if self.name == "msgpack":
            return msgpack.packb(message)  # type: ignore[no-any-return]
        return json.dumps(message, separators=(",", ":")).encode()

    def unpack(self, payload: bytes) -> list[Any]:
        if self.name == "msgpack":
            return msgpack.unpackb(payload)  # type: ignore[no-any-return]
        return json.loads(payload)  # type: ignore[no-any-return]

    def is_type(self, payload: bytes, kind: int) -> bool:
        """Whether a message is of WAMP type C{kind}, without decoding it."""
        if self.name == "msgpack":  # a msgpack array whose first element is a positive fixint
            return payload[1] == kind
        return payload.startswith(b"[%d," % kind)


WIRE = Wire("msgpack")


def wamp_join(on_joined: Callable[[LeanProtocol], None], on_message: Callable[[LeanProtocol, bytes], None]):
    """Callbacks for C{connect}: HELLO on open, C{on_joined} after WELCOME, then raw messages."""
    joined: set[LeanProtocol] = set()

    def opened(protocol: LeanProtocol) -> None:
        protocol.send_frame(WIRE.opcode, WIRE.pack([HELLO, REALM, ROLES]))

    def received(protocol: LeanProtocol, opcode: int, payload: bytes) -> None:
        if protocol in joined:
            on_message(protocol, payload)
            return
        message = WIRE.unpack(payload)
        if message[0] != WELCOME:
            print(f"join failed: {message!r}", file=sys.stderr, flush=True)
            reactor.stop()  # type: ignore[attr-defined]
            return
        joined.add(protocol)
        on_joined(protocol)

    return opened, received


def wamp_listener(port: int, kind: str, connections: int, serializer: str = "msgpack") -> None:
    """Subscribers (multicast) or the echo callee (requestreply)."""
    global WIRE
    WIRE = Wire(serializer)
    counter = Counter()
    ready = ready_after(connections)
    subscribed: set[LeanProtocol] = set()
    result = [PAYLOAD]

    def joined(protocol: LeanProtocol) -> None:
        if kind == "multicast":
            protocol.send_frame(WIRE.opcode, WIRE.pack([SUBSCRIBE, 1, {}, TOPIC]))
        else:
            protocol.send_frame(WIRE.opcode, WIRE.pack([REGISTER, 1, {}, PROCEDURE]))

    def message(protocol: LeanProtocol, payload: bytes) -> None:
        if protocol not in subscribed:
            answer = WIRE.unpack(payload)
            if answer[0] not in (SUBSCRIBED, REGISTERED):
                print(f"subscribe/register failed: {answer!r}", file=sys.stderr, flush=True)
                reactor.stop()  # type: ignore[attr-defined]
                return
            subscribed.add(protocol)
            ready()
            return
        counter.count += 1
        if kind == "requestreply":
            invocation = WIRE.unpack(payload)
            protocol.send_frame(WIRE.opcode, WIRE.pack([YIELD, invocation[1], {}, result]))

    opened, received = wamp_join(joined, message)
    for _ in range(connections):
        connect(port, "/ws", WIRE.subprotocol, {}, opened, received)
    stdio.StandardIO(Control(counter))
    reactor.run()  # type: ignore[attr-defined]


def wamp_sender(port: int, kind: str, window: int, serializer: str = "msgpack") -> None:
    """The publisher (PUBLISH with acknowledge) or the caller (CALL)."""
    global WIRE
    WIRE = Wire(serializer)
    args = [PAYLOAD]
    if kind == "requestreply":
        expected = RESULT

        def build(sequence: int) -> bytes:
            return WIRE.pack([CALL, sequence, {}, PROCEDURE, args])
    else:
        expected = PUBLISHED
        options = {"acknowledge": True}

        def build(sequence: int) -> bytes:
            return WIRE.pack([PUBLISH, sequence, options, TOPIC, args])

    sender = Sender(window, build, WIRE.opcode, lambda payload: WIRE.is_type(payload, expected))

    def joined(protocol: LeanProtocol) -> None:
        sender.protocols.append(protocol)
        print("READY", flush=True)

    opened, received = wamp_join(joined, lambda protocol, payload: sender.answer(protocol, payload))
    connect(port, "/ws", WIRE.subprotocol, {}, opened, received)
    stdio.StandardIO(Control(sender.counter, sender))
    reactor.run()  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    """C{legacy_clients.py ROLE JSON}: run one load process."""
    role, options = argv[0], json.loads(argv[1])
    roles: dict[str, Callable[..., Any]] = {
        "soap-listener": soap_listener,
        "soap-sender": soap_sender,
        "wamp-listener": wamp_listener,
        "wamp-sender": wamp_sender,
    }
    roles[role](**options)


if __name__ == "__main__":
    main(sys.argv[1:])
