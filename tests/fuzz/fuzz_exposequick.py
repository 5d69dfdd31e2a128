"""relay expose's quick lane (relay.exposequick) against the general path, on any local answer in fuzzer-chosen reads: the same messages, log lines and local bytes."""

from __future__ import annotations

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.python.failure import Failure

from tests.fuzz.pieces import pieces, split_input
from tests.test_exposequick import Expose

_REQUESTS: tuple[tuple[str, bytes | None], ...] = (
    ("GET", None),
    ("HEAD", None),
    ("POST", b"payload"),
    ("DELETE", None),
)


def _run(quick: bool, method: str, body: bytes | None, reads: list[bytes]) -> Expose:
    expose = Expose(quick)
    expose.warm()
    expose.request(method, "/hyco/x?q=1", None, body)
    answered = 0
    while answered < len(expose.local.connections):  # a kept connection closed unused: a GET goes again
        protocol, transport = expose.local.connections[answered]
        answered += 1
        if protocol.closed:
            continue
        for data in reads:
            if transport.disconnecting or protocol.closed:
                break
            protocol.dataReceived(data)
        if not protocol.closed:  # the local server closes: what was read until then is its whole answer
            reason = ConnectionAborted() if transport.disconnected else ConnectionDone()
            protocol.connectionLost(Failure(reason))
    return expose


def check(data: bytes) -> None:
    method, body = _REQUESTS[data[0] % len(_REQUESTS)] if data else _REQUESTS[0]
    sizes, stream = split_input(data[1:])
    reads = pieces(stream, sizes)
    lane, general = _run(True, method, body, reads), _run(False, method, body, reads)
    assert lane.taken == [True], lane.taken  # a kept connection waits: the lane takes every such request
    assert lane.sent() == general.sent(), (lane.sent(), general.sent())
    assert lane.access() == general.access(), (lane.access(), general.access())
    assert [t.value() for _, t in lane.local.connections] == [t.value() for _, t in general.local.connections]
    assert len(lane.reactor.tcpClients) == len(general.reactor.tcpClients)
    assert lane.http.active == general.http.active
    sent = lane.sent()
    if not lane.reactor.tcpClients:  # answered on the control channel: one response head, for the request
        heads = [message for message, binary in sent if not binary]
        assert len(heads) == 1 and heads[0]["response"]["requestId"] == "r2", sent
        assert lane.http.active == 0
