"""A request rendezvous (relay.client.http._RequestChannel, httprequest.RequestBody) on relay-sent messages in fuzzer-chosen frames: bodies whole, every request answered or cut."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from relay.client.errors import ConnectionClosedError
from relay.client.http import HttpListener, _RequestChannel
from relay.client.httprequest import RelayedRequest
from relay.client.httpresponse import RelayedResponse
from tests.client.test_http_abandon import FakeListener, FakeRendezvous
from tests.fuzz.pieces import pieces, split_input

SEPARATOR = b"\n\x1e"
"""Between the messages of one input; a message starting with C{\\x01} is binary (the rest of it)."""


def check(data: bytes) -> None:
    sizes, stream = split_input(data)
    messages = [(m[1:], True) if m[:1] == b"\x01" else (m, False) for m in stream.split(SEPARATOR)]
    outcomes: list[tuple[RelayedRequest, bytes | None]] = []

    async def app(request: RelayedRequest, response: RelayedResponse) -> None:
        try:
            body: bytes | None = await request.body.read_all()
        except ConnectionClosedError:
            body = None
        outcomes.append((request, body))
        await response.finish(b"done")

    rendezvous = FakeRendezvous()
    http = HttpListener(FakeListener(), app, reactor=MemoryReactorClock())
    channel = _RequestChannel(http, rendezvous)  # type: ignore[arg-type]
    served: list[Any] = []
    handle = http.handle

    def spy(command: Any, body: Any, response: Any, *args: Any) -> None:
        served.append(command)
        handle(command, body, response, *args)

    http.handle = spy  # type: ignore[method-assign]
    for payload, binary in messages:
        channel.message_begin(binary)
        for piece in pieces(payload, sizes):
            channel.message_data(piece)
        channel.message_end()
    answered = len(outcomes)
    channel.connection_closed(False, 1006, None)

    # Every request the channel took is heard of by the application, whole or cut, once the socket is gone.
    # (A request whose body is still due does not hold up the next one's answer: the order may differ.)
    assert sorted(r.id for r, _ in outcomes) == sorted(c.id for c in served), (outcomes, served)
    binaries = {payload for payload, binary in messages if binary}
    for request, body in outcomes:
        if body is None:
            continue
        if request.body.present:
            # One whole binary message, never a part or a mix; none when a text message came instead.
            assert body in binaries or body == b"", body
        else:
            assert body == b"", body
    # What finished before the close went back on the rendezvous, under its request's id, in that order.
    heads = [json.loads(p)["response"] for kind, p in rendezvous.calls if kind == "text"]
    assert [h["requestId"] for h in heads][:answered] == [r.id for r, _ in outcomes[:answered]], heads
