"""
The least Python that relays a small HTTP request over the Hybrid Connections protocol: a floor for the relay.

Both peers speak the real wire protocol (a listener's control channel, C{request} JSON to the listener,
C{response} JSON and one binary body message back), so each can stand in for its counterpart: the lean
gateway serves C{relay expose}, and the lean listener serves the real gateway. What they leave out is
everything a product needs around the happy path: token checks (the hybrid connection is anonymous),
timeouts, back-pressure, rendezvous for large messages, several listeners, errors beyond a 502. They do
keep the per-request work the protocol asks for: the request head read, the forwarding rules for request
headers (the gateway's own function), a tracking id, the JSON, masked frames from the listener, the
response header checks (the gateway's own function), and one access line per request in the gateway.

    python -m benchmarks.hcfloor gateway PORT LOG
        Listen on 127.0.0.1:PORT (0: any free port) for one listener's control channel on the hybrid
        connection C{web} and for senders' requests to C{/web/...}; print C{READY <port>}.

    The environment variable C{HCFLOOR_ADD} adds product machinery to the gateway, to size what a lane near
    the floor would cost (a comma-separated list): C{timers} arms and cancels two timers per request (the
    gateway's response timer and its response address's expiry), C{logger} writes the access line
    through twisted.logger and the gateway's own log observer instead of a plain file write.

    python -m benchmarks.hcfloor listener GATEWAY_PORT UPSTREAM_PORT TOKEN
        Open a control channel for C{web} on the gateway and forward each request to the HTTP/1.1 server
        on 127.0.0.1:UPSTREAM_PORT over kept-alive connections (C{Content-Length} answers only); print
        C{READY} once the control channel is open.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from typing import IO, Any

from twisted.internet import epollreactor

ENTITY = "web"
_PREFIX = f"/{ENTITY}/"
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "trailer",
}
_OP_PING, _OP_CLOSE = 0x9, 0x8


def _control_frame(buffer: bytes, start: int, end: int, masked: bool) -> tuple[int, bytes]:
    """The opcode and (unmasked) payload of the whole frame C{buffer[start:end]} (payload under 126 bytes)."""
    from relay.wsframes import mask

    opcode, length = buffer[start] & 0x0F, buffer[start + 1] & 0x7F
    if not masked:
        return opcode, buffer[end - length : end]
    return opcode, mask(buffer[end - length : end], buffer[end - length - 4 : end - length])


def run_gateway(port: int, log_path: str) -> None:
    """The lean gateway: see the module docstring."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from relay.errors import new_tracking_id
    from relay.hybrid.headers import HeaderError, forward_request_headers, response_head
    from relay.wsframes import HAND_OVER, INCOMPLETE, read_frame, server_frame

    log: IO[str] = open(log_path, "a")  # open for the life of the process
    listeners: list[Connection] = []
    pending: dict[str, tuple[Connection, str, str]] = {}
    added = set(filter(None, os.environ.get("HCFLOOR_ADD", "").split(",")))
    timers: dict[str, tuple[Any, Any]] = {}
    access = None
    if "logger" in added:
        from twisted.logger import Logger, globalLogBeginner

        from benchmarks.gateway import log_observer

        log.close()
        globalLogBeginner.beginLoggingTo([log_observer(log_path)], redirectStandardIO=False)
        access = Logger(namespace="relay.hybrid.httpexchange.Exchange")

    def never() -> None:
        """A timer that is always cancelled before it fires."""

    class Connection(Protocol):
        """A sender's connection, until a WebSocket upgrade makes it a listener's control channel."""

        control = False
        waiting: tuple[Connection, str, str, int, list[tuple[str, str]]] | None = None

        def connectionMade(self) -> None:
            self.buffer = b""
            peer = self.transport.getPeer()  # type: ignore[attr-defined]
            self.peer = (peer.host, peer.port)
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]

        def connectionLost(self, reason: Any = None) -> None:
            if self in listeners:
                listeners.remove(self)

        def dataReceived(self, data: bytes) -> None:
            if self.control:
                self.frames(data)
                return
            buffer = self.buffer + data if self.buffer else data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    self.buffer = buffer
                    return
                head, buffer = buffer[:end], buffer[end + 4 :]
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                pairs = []
                key = None
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    value = value.strip(" \t")
                    pairs.append((name, value))
                    if name.lower() == "sec-websocket-key":
                        key = value
                if key is not None:
                    self.upgrade(key, buffer)
                    return
                self.relay(method, target, version, pairs)

        def upgrade(self, key: str, rest: bytes) -> None:
            accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.control = True
            self.buffer = b""
            listeners.append(self)
            if rest:
                self.frames(rest)

        def relay(self, method: str, target: str, version: str, pairs: list[tuple[str, str]]) -> None:
            if not target.startswith(_PREFIX) or not listeners:
                self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            request_id = new_tracking_id()
            headers = forward_request_headers(
                pairs,
                strip_authorization=False,
                via=f"{version[5:]} 127.0.0.1",
                client_address=self.peer[0],
                scheme="http",
            )
            message = {
                "request": {
                    "address": f"sb://127.0.0.1/$hc/{ENTITY}?sb-hc-action=request&sb-hc-id={request_id}",
                    "id": request_id,
                    "requestTarget": target,
                    "method": method,
                    "remoteEndpoint": {"address": self.peer[0], "port": self.peer[1]},
                    "requestHeaders": headers,
                    "body": False,
                }
            }
            pending[request_id] = (self, method, target)
            if "timers" in added:
                timers[request_id] = (reactor.callLater(60, never), reactor.callLater(90, never))  # type: ignore[attr-defined]
            listeners[0].transport.write(server_frame(_ENCODER.encode(message).encode()))

        def frames(self, data: bytes) -> None:
            buffer = self.buffer + data if self.buffer else data
            offset = 0
            while True:
                end, payload = read_frame(buffer, offset, True, 1 << 20, binary=True)
                if end == INCOMPLETE:
                    break
                if end == HAND_OVER:
                    self.transport.loseConnection()
                    return
                start, offset = offset, end
                if payload is None:
                    opcode, data = _control_frame(buffer, start, end, masked=True)
                    if opcode == _OP_PING:
                        self.transport.write(bytes((0x8A, len(data))) + data)
                    elif opcode == _OP_CLOSE:
                        self.transport.loseConnection()
                        return
                elif buffer[start] == 0x82:
                    self.body(payload)
                else:
                    self.response(json.loads(payload)["response"])
            self.buffer = buffer[offset:]

        def response(self, answer: dict[str, Any]) -> None:
            sender, method, target = pending.pop(answer["requestId"])
            armed = timers.pop(answer["requestId"], None)
            if armed is not None:
                for timer in armed:
                    timer.cancel()
            status = int(answer["statusCode"])
            try:
                head = response_head(answer.get("responseHeaders") or {}, via="1.1 127.0.0.1")
            except HeaderError:
                sender.answer(502, [], b"", method, target)
                return
            if answer.get("body"):
                self.waiting = (sender, method, target, status, list(head.headers))
            else:
                sender.answer(status, list(head.headers), b"", method, target)

        def body(self, payload: bytes) -> None:
            if self.waiting is not None:
                sender, method, target, status, fields = self.waiting
                self.waiting = None
                sender.answer(status, fields, payload, method, target)

        def answer(
            self, status: int, fields: list[tuple[str, str]], body: bytes, method: str, target: str
        ) -> None:
            lines = [f"HTTP/1.1 {status} OK"]
            lines += [f"{name}: {value}" for name, value in fields if name.lower() != "content-length"]
            lines.append(f"Content-Length: {len(body)}\r\n\r\n")
            self.transport.write("\r\n".join(lines).encode() + body)
            if access is not None:
                access.info(
                    "{access}",
                    access=f"{method} {target} -> {status} ({len(body)} bytes) from {self.peer[0]}",
                    method=method,
                    target=target,
                    status=status,
                    size=len(body),
                    client=self.peer[0],
                )
                return
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(
                f"{stamp} [hcfloor] {method} {target} -> {status} ({len(body)} bytes) from {self.peer[0]}\n"
            )
            log.flush()

    listening = reactor.listenTCP(port, Factory.forProtocol(Connection), interface="127.0.0.1")  # type: ignore[attr-defined]
    print("READY", listening.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


def run_listener(gateway_port: int, upstream_port: int, token: str) -> None:
    """The lean listener: see the module docstring."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    from relay.wsframes import INCOMPLETE, masked_frame, read_frame

    idle: list[Upstream] = []
    queued: list[tuple[str, bytes]] = []

    class Control(Protocol):
        """The control channel: requests in, answers out."""

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
            self.open = False
            self.buffer = b""
            key = base64.b64encode(os.urandom(16)).decode()
            self.transport.write(
                f"GET /$hc/{ENTITY}?sb-hc-action=listen&sb-hc-id=hcfloor HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{gateway_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"ServiceBusAuthorization: {token}\r\n\r\n".encode()
            )

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:  # type: ignore[attr-defined]
                reactor.stop()  # type: ignore[attr-defined]

        def dataReceived(self, data: bytes) -> None:
            buffer = self.buffer + data if self.buffer else data
            if not self.open:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    self.buffer = buffer
                    return
                if not buffer.startswith(b"HTTP/1.1 101"):
                    sys.exit(f"not upgraded: {buffer[:200]!r}")
                buffer, self.open = buffer[end + 4 :], True
                print("READY", flush=True)
            offset = 0
            while True:
                end, payload = read_frame(buffer, offset, False, 1 << 20, binary=True)
                if end == INCOMPLETE:
                    break
                start, offset = offset, end
                if payload is None:
                    opcode, data = _control_frame(buffer, start, end, masked=False)
                    if opcode == _OP_PING:
                        self.transport.write(_masked_pong(data))
                    continue
                request = json.loads(payload).get("request")
                if request is not None:
                    self.forward(request)
            self.buffer = buffer[offset:]

        def forward(self, request: dict[str, Any]) -> None:
            target = request["requestTarget"][len(_PREFIX) - 1 :]
            lines = [f"{request['method']} {target} HTTP/1.1", f"Host: 127.0.0.1:{upstream_port}"]
            lines += [
                f"{name}: {value}"
                for name, value in request["requestHeaders"].items()
                if name.lower() not in _HOP_BY_HOP and name.lower() != "host"
            ]
            head = ("\r\n".join(lines) + "\r\n\r\n").encode()
            if idle:
                idle.pop().send(request["id"], head)
            else:
                queued.append((request["id"], head))
                connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", upstream_port), Upstream())

        def answer(
            self, request_id: str, status: int, reason: str, headers: dict[str, str], body: bytes
        ) -> None:
            message = {
                "response": {
                    "requestId": request_id,
                    "statusCode": status,
                    "statusDescription": reason,
                    "responseHeaders": headers,
                    "body": bool(body),
                }
            }
            frames = masked_frame(_ENCODER.encode(message).encode())
            if body:
                frames += masked_frame(body, binary=True)
            self.transport.write(frames)

    control = Control()

    class Upstream(Protocol):
        """One kept-alive connection to the local server, one request at a time."""

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
            self.buffer = b""
            self.request_id = ""
            self.next()

        def next(self) -> None:
            if queued:
                self.send(*queued.pop(0))
            else:
                idle.append(self)

        def send(self, request_id: str, head: bytes) -> None:
            self.request_id = request_id
            self.transport.write(head)

        def dataReceived(self, data: bytes) -> None:
            buffer = self.buffer + data if self.buffer else data
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            lines = buffer[:end].decode("latin-1").split("\r\n")
            _, status, reason = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                value = value.strip()
                key = name.lower()
                if key == "content-length":
                    length = int(value)
                if key not in _HOP_BY_HOP:
                    headers[name] = value
            if len(buffer) - end - 4 < length:
                self.buffer = buffer
                return
            self.buffer = b""
            control.answer(self.request_id, int(status), reason, headers, buffer[end + 4 : end + 4 + length])
            self.next()

    connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", gateway_port), control)
    reactor.run()  # type: ignore[attr-defined]


def _masked_pong(payload: bytes) -> bytes:
    from relay.wsframes import mask

    key = os.urandom(4)
    return bytes((0x8A, 0x80 | len(payload))) + key + mask(payload, key)


def main(argv: list[str]) -> int:
    epollreactor.install()
    if len(argv) == 3 and argv[0] == "gateway":
        run_gateway(int(argv[1]), argv[2])
        return 0
    if len(argv) == 4 and argv[0] == "listener":
        run_listener(int(argv[1]), int(argv[2]), argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
