"""
C{relay expose}'s quick lane: a small request that a kept local connection answers goes straight back.

Most requests through C{relay expose} arrive whole on the control channel, find an idle kept-alive
connection to the local server, and get an answer whose C{Content-Length} fits the control channel. On the
general path (the SDK's L{RelayedRequest} and L{RelayedResponse}, a coroutine per request, the response
buffer, the pipe from the local client) such a request cost about three times what the protocol needs
(C{python -m benchmarks -s http.floor}). The lane does the same work with one callback per step.

Anything else continues on the general path before anything went back to the relay, so the sender gets
the same answer either way: a request the general path would refuse (it answers 400), no idle local
connection, an access log other than the forwarder's own, a local answer without a length or larger than
the control channel takes (relayed from the response head on), and a local server that fails before its
answer is complete (502 or 504).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from relay.client.address import split_request_target
from relay.client.commands import RequestCommand, remote_endpoint
from relay.client.headers import Headers
from relay.client.httprequest import RequestBody
from relay.client.httpresponse import CONTROL_RESPONSE_LIMIT
from relay.hybrid.messages import encode
from relay.localclient import LocalResponse
from relay.logger import Logger

if TYPE_CHECKING:
    from relay.client.http import HttpListener
    from relay.expose import Forwarder


def response_headers(local: LocalResponse, hop_by_hop: AbstractSet[str]) -> dict[str, Any]:
    """
    The C{responseHeaders} for a local answer, on the lane and on the general path alike.

    Repeated names (in any case) become one list under the first spelling, hop-by-hop fields are left
    out, and C{Content-Length} comes last when the answer has a length. The local head was checked by
    L{relay.http1} (token names, no CR, LF or NUL in values), so nothing here can be refused.
    """
    items: dict[str, tuple[str, Any]] = {}
    for raw_name, raw_value in local.headers:
        name = raw_name.decode("latin-1")
        key = name.lower()
        if key in hop_by_hop:
            continue
        value = raw_value.decode("latin-1")
        current = items.get(key)
        if current is None:
            items[key] = (name, value)
        else:
            values = [current[1]] if isinstance(current[1], str) else current[1]
            items[key] = (current[0], [*values, value])
    if local.length is not None:
        items["content-length"] = ("Content-Length", str(local.length))
    return dict(items.values())


class QuickLane:
    """The forwarder's lane for the common case (see the module docstring); C{HttpListener} calls it."""

    log = Logger(namespace="relay.expose.Forwarder")

    def __init__(self, forwarder: Forwarder, hop_by_hop: AbstractSet[str]) -> None:
        self.forwarder = forwarder
        self._hop_by_hop = hop_by_hop

    def __call__(self, command: RequestCommand, body: bytes | None, listener: HttpListener) -> bool:
        """Take the request (C{True}), or leave it to the general path before doing anything."""
        forwarder = self.forwarder
        if forwarder.draining:
            return False  # the general path answers 503
        logs = listener.on_response
        if logs is not None and logs != forwarder.access_line:
            return False  # someone else's access log wants the general path's request and response
        if not forwarder.client.has_idle():
            return False
        fields = command.fields
        raw_headers = fields.get("requestHeaders")
        headers = Headers(
            {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        )
        target_text = str(fields.get("requestTarget") or "/")
        path, query = split_request_target(target_text, listener.listener.address.path)
        method_text = str(fields.get("method"))
        local_request = forwarder.local_request(method_text, path, query, headers)
        if isinstance(local_request, str):
            return False  # the general path answers 400 with the reason
        method, target, local_headers = local_request
        data = body if command.has_body else None
        exchange = _QuickExchange(self, listener, command, body, target, method_text, path, query)
        listener.active += 1
        answer = forwarder.client.request(
            method, target, local_headers, RequestBody.whole(data) if data is not None else None
        )
        answer.addCallbacks(exchange.head, exchange.no_head)
        if not answer.called:
            exchange.watch(answer)
        return True


class _QuickExchange:
    """One request on the quick lane: waiting for the local head, then collecting a small body."""

    __slots__ = (
        "_answer",
        "_body",
        "_chunks",
        "_command",
        "_control",
        "_given_up",
        "_lane",
        "_listener",
        "_local",
        "_method",
        "_path",
        "_query",
        "_started",
        "_target",
    )

    def __init__(
        self,
        lane: QuickLane,
        listener: HttpListener,
        command: RequestCommand,
        body: bytes | None,
        target: bytes,
        method: str,
        path: str,
        query: str,
    ) -> None:
        self._lane = lane
        self._listener = listener
        self._command = command
        self._body = body
        self._control = listener.listener.control_channel
        self._target = target
        self._method = method
        self._path = path
        self._query = query
        self._started = listener.reactor.seconds()
        self._chunks: list[bytes] = []
        self._local: LocalResponse | None = None
        self._answer: Deferred[LocalResponse] | None = None
        self._given_up = False

    def watch(self, answer: Deferred[LocalResponse]) -> None:
        """Give up the local request if the control channel closes before the local head came."""
        watch = getattr(self._control, "watch", None)
        if watch is not None and watch(self._control_closed):
            self._answer = answer

    def _unwatch(self) -> None:
        if self._answer is not None:
            self._answer = None
            self._control.unwatch(self._control_closed)

    def _control_closed(self) -> None:
        """
        The relay failed the request (502 to its sender) as its control channel closed: stop waiting.

        As the general path does (L{RelayedResponse.when_lost}): a slow local server, or an endless one
        with no C{--timeout}, held its connection and a request slot until it answered.
        """
        answer, self._answer = self._answer, None
        if answer is not None:
            self._given_up = True
            answer.cancel()  # its canceller drops the local connection; no_head hands the end over

    def head(self, local: LocalResponse) -> None:
        """The local head: a small answer with a length is collected here, anything else goes general."""
        self._unwatch()
        if local.length is None or local.length > CONTROL_RESPONSE_LIMIT:
            forwarder = self._lane.forwarder
            self._hand_over(lambda request, response: forwarder.answer_from(request, response, local))
            return
        self._local = local
        local.deliver(self)

    def no_head(self, failure: Failure) -> None:
        """No answer from the local server: the general path says so (502, or 504 when it was late)."""
        self._unwatch()
        if self._given_up:  # the general path ends it as it ends its own: an info line, the access line
            request_id, forwarder = self._command.id, self._lane.forwarder

            def given_up(request: Any, response: Any) -> None:
                forwarder.given_up(request_id, response, "the control channel closed")

            self._hand_over(given_up)
            return
        forwarder, target = self._lane.forwarder, self._target
        error = failure.value if isinstance(failure.value, Exception) else Exception(str(failure.value))
        self._hand_over(lambda request, response: forwarder.local_failed(request, response, target, error))

    def _hand_over(self, app: Any) -> None:
        listener = self._listener
        listener.active -= 1
        listener.general(self._command, self._body, self._control, app, self._started)

    # -- the local body (a BodySink) -------------------------------------------------------------------

    def data(self, data: bytes) -> None:
        """A piece of the body (at most the control channel's limit in all)."""
        self._chunks.append(data)

    def end(self) -> None:
        """The body is complete: the response and its body go back in one write."""
        local = self._local
        if local is None:  # end() comes only after head() delivered the body here
            return
        body = b"".join(self._chunks)
        self._chunks = []
        lane, listener = self._lane, self._listener
        listener.active -= 1
        message = {
            "response": {
                "requestId": self._command.id,
                "statusCode": local.code,
                "statusDescription": local.phrase.decode("latin-1"),
                "responseHeaders": response_headers(local, lane._hop_by_hop),
                "body": bool(body),
            }
        }
        messages = [(encode(message), False)]
        if body:
            messages.append((body, True))
        control = self._control
        given_up = None
        if control is None or not control.send_messages(messages):
            lane.log.info(
                "request {request_id} ended early: the control channel closed before the response was sent",
                request_id=self._command.id,
            )
            body = b""
            given_up = lane.forwarder.GIVEN_UP_UNSENT
        if listener.on_response is not None:
            self._access(local.code, len(body), given_up)

    def failed(self, reason: Failure) -> None:
        """The local body was cut: nothing went back yet, so the general path answers 502."""
        self._chunks = []
        forwarder = self._lane.forwarder
        error = reason.value if isinstance(reason.value, Exception) else Exception(str(reason.value))
        self._hand_over(lambda request, response: forwarder.cut_short(request, response, error))

    def _access(self, status: int, size: int, given_up: str | None = None) -> None:
        endpoint = remote_endpoint(self._command.fields.get("remoteEndpoint"))
        listener = self._listener
        self._lane.forwarder.access(
            endpoint.address if endpoint else "-",
            self._method,
            self._path,
            self._query,
            status,
            size,
            listener.reactor.seconds() - self._started,
            given_up=given_up,
        )
