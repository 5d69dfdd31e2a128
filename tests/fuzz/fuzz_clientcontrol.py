"""A listener's control channel on relay-sent messages (relay.client.control, commands, accepting, http): every request answered with its id, nothing raised."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from relay.client.accepting import AcceptContext
from relay.client.address import HybridConnectionAddress
from relay.client.commands import AcceptCommand, RequestCommand
from relay.client.control import ControlChannel
from relay.client.http import HttpListener
from relay.client.httprequest import RelayedRequest
from relay.client.httpresponse import RelayedResponse
from relay.hybrid.addressing import is_reserved

SEPARATOR = b"\n\x1e"
"""Between the messages of one input; a message starting with C{\\x01} is binary (the rest of it)."""


class _Protocol:
    """What L{ControlChannel} needs of its WebSocket: nothing is read here, sent messages are kept."""

    transport = None

    def __init__(self) -> None:
        self.write_through = False
        self.sent: list[tuple[bytes, bool]] = []

    def send_wholes(self, messages: Any) -> None:
        self.sent.extend(messages)


class _Listener:
    """The listener an L{HttpListener} serves: an address, a control channel, no holds."""

    def __init__(self, control: Any) -> None:
        self.address = HybridConnectionAddress("wss", "ns.example", "hyco")
        self.control_channel = control
        self.request_handler: Any = None
        self.close_handler: Any = None
        self.closed = False

    def hold_reading(self, reason: str) -> None:
        pass

    def release_reading(self, reason: str) -> None:
        pass


def _messages(data: bytes) -> list[tuple[bytes, bool]]:
    out = []
    for part in data.split(SEPARATOR):
        if part[:1] == b"\x01":
            out.append((part[1:], True))
        else:
            out.append((part, False))
    return out


def check(data: bytes) -> None:
    protocol = _Protocol()
    accepted: list[AcceptContext] = []
    served: list[tuple[RelayedRequest, bytes]] = []
    requests: list[tuple[RequestCommand, bytes | None]] = []

    async def app(request: RelayedRequest, response: RelayedResponse) -> None:
        served.append((request, await request.body.read_all()))
        response.headers["X-Path"] = request.path
        await response.finish(b"ok")

    def on_accept(command: AcceptCommand) -> None:
        accepted.append(AcceptContext.from_command(command, "hyco"))

    def on_request(command: RequestCommand, body: bytes | None) -> None:
        requests.append((command, body))
        listener.request_handler(command, body)

    channel = ControlChannel(
        protocol,  # type: ignore[arg-type]
        listener_id="L",
        on_accept=on_accept,
        on_request=on_request,
        on_closed=lambda *_: None,
    )
    listener = _Listener(channel)
    HttpListener(listener, app, reactor=MemoryReactorClock())
    for payload, binary in _messages(data):
        channel.message_received(payload, binary)

    for context in accepted:
        assert context.suffix == "" or context.suffix.startswith("/"), context.suffix
        assert not any(is_reserved(pair) for pair in context.query.split("&")), context.query
        assert all(p and p == p.strip() for p in context.offered_subprotocols), context.offered_subprotocols
    # Every request that came whole (with its method) is served and answered on the control channel, with
    # its id; one without a method is fetched from its address instead (not here: no network).
    whole = [(command, body) for command, body in requests if "method" in command.fields]
    assert len(served) == len(whole), (len(served), len(whole))
    answers = [json.loads(payload) for payload, binary in protocol.sent if not binary]
    assert [a["response"]["requestId"] for a in answers] == [c.id for c, _ in whole], answers
    for (command, body), (request, read) in zip(whole, served, strict=True):
        assert request.id == command.id and isinstance(request.method, str)
        assert read == (body or b"") if command.has_body else read == b""
        assert request.path == "" or request.path.startswith("/"), request.path
        assert not any(is_reserved(pair) for pair in request.query.split("&")), request.query
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in request.headers.items())
        endpoint = request.remote_endpoint
        assert endpoint is None or (isinstance(endpoint.address, str) and isinstance(endpoint.port, int))
