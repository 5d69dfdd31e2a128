"""
Bridging an existing HTTP SOAP service onto a relay name, without changing it (issue item 5).

L{SoapBridge} fetches the backend's WSDL (C{?wsdl}), registers it on a C{requestreply} name, and forwards
every envelope the gateway delivers to the backend over HTTP: converted to the SOAP version the backend
speaks (its WSDL says; SOAP 1.1 when it has both), with C{SOAPAction} set and a forwarded C{Authorization}
header restored. The backend's answer, a fault included, goes back as SOAP 1.2; an unreachable or
misbehaving backend becomes a C{Receiver} fault with the subcode C{r:BackendUnavailable}, so callers never
wait for a timeout. Each call is logged once (action, status, duration, sizes). The listener connection
reconnects on its own (L{bindings.session.ListenerSession}).
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Sequence
from typing import Any, Final

from lxml import etree
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from bindings.addressing import ANONYMOUS, addressing_headers, read_addressing
from bindings.bridgewsdl import backend_version, declared_soap_actions, inline_schemas, reply_actions
from bindings.channels import BytesProducer, TooLarge, read_capped
from bindings.control import HTTP_AUTHORIZATION_TAG, Registered, Registration, read_http_authorization
from bindings.credentials import SasCredentials, ServiceAddress
from bindings.faultcodes import RELAY_NS, WSA_NS, FaultCode
from bindings.faults import SOAP_FAULT_ACTION, Fault, FaultFormatError, fault_envelope, reply_to_soap12
from bindings.safexml import DECLARED_ENCODING, MAX_DEPTH_CAP, XmlLimits, parse_xml
from bindings.session import CLOSE_TIMEOUT, Backoff, IEnvelopeHandler, ListenerSession
from bindings.settings import MESSAGE_BYTES, REQUEST_REPLY, ClientAuth, Discovery
from bindings.soap import (
    Envelope,
    SoapError,
    SoapVersion,
    content_type_header,
    convert,
    parse_content_type,
    parse_envelope,
)
from bindings.wsclient import EndpointFactory, default_endpoint
from bindings.wsdl import WSDL_MAX_BYTES, WSDL_MAX_DEPTH, parse_wsdl
from relay.logger import Logger

BACKEND_SUBCODE: Final = "BackendUnavailable"
_SENDER_TAG: Final = f"{{{RELAY_NS}}}Sender"
_WSA_TO: Final = f"{{{WSA_NS}}}To"


class BridgeError(Exception):
    """The bridge cannot start (the backend's WSDL is unreachable or unusable, or registration failed)."""


_DECLARATION: Final = re.compile(r"^<\?xml[^>]*\?>")
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def as_utf8(data: bytes, charset: str | None) -> bytes:
    """
    A document from the backend in UTF-8, whatever encoding it came in.

    The gateway takes UTF-8 only from listeners, and the hardened parser UTF-8 or UTF-16 only; the backend
    is a service the team cannot change, and older ones answer in ISO-8859-1, windows-1252 or Shift_JIS.
    The encoding is the one its SOAP clients (lxml, so zeep) would use: the byte order mark, else the XML
    declaration, else the C{Content-Type} charset, else UTF-8. The XML declaration is dropped (UTF-8 needs
    none). The hardened parser still reads the result.

    @raise ValueError: when the encoding is unknown or the bytes are not in it.
    """
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    if encoding is None:
        declared = DECLARED_ENCODING.match(data)
        if declared is not None:
            encoding = declared.group(1).decode("ascii")
        elif charset:
            encoding = charset.strip().strip('"')
        else:
            return data  # UTF-8, checked by the parser
    try:
        if codecs.lookup(encoding).name == "utf-8":
            return data
        text = data.decode(encoding)
    except LookupError:
        raise ValueError(f"the encoding {encoding[:40]!r} is unknown") from None
    except UnicodeDecodeError:
        raise ValueError(f"the bytes are not {encoding[:40]!r}") from None
    return _DECLARATION.sub("", text.removeprefix("\ufeff"), count=1).encode("utf-8")


def _charset(response: IResponse) -> str | None:
    """The C{charset} of a response's C{Content-Type}, if it has one."""
    types: Sequence[bytes] = response.headers.getRawHeaders(b"content-type") or [b""]
    try:
        return parse_content_type(types[0].decode("latin-1")).params.get("charset")
    except SoapError:
        return None


class _BackendTimeout(Exception):
    """The backend's whole answer did not arrive within the request timeout."""


def _timed_out(result: object, timeout: float) -> object:
    """C{addTimeout}'s C{onTimeoutCancel}: whatever the cancelled call failed with, it timed out."""
    raise _BackendTimeout()


def _backend_fault(reason: str) -> Fault:
    return Fault(FaultCode.RECEIVER, reason, subcodes=((RELAY_NS, BACKEND_SUBCODE),))


class _QuietClientFactory(_HTTP11ClientFactory):
    """A backend connection's factory that does not log "Starting factory" and "Stopping factory"."""

    noisy = False


CLOSE_SECONDS: Final = 2.0
"""How long L{SoapBridge.stop} waits for the backend's side of closing its idle connections."""
IDLE_CONNECTION_SECONDS: Final = 2
"""How long a backend connection is kept unused: shorter than services' own keep-alive timeouts (Apache's
and Node's 5 s), so the bridge does not send a call on a connection the service is closing."""


def quiet_agent(
    reactor: Any, trust_root: Any = None, connections: int = 64
) -> tuple[Agent, HTTPConnectionPool]:
    """
    An C{Agent} for the backend that keeps up to C{connections} connections alive and logs nothing itself.

    A connection per call left one socket in TIME_WAIT on the bridge's side per call (when the service
    closes after the bridge): a few hundred calls per second used up the ephemeral ports. twisted.web
    retries a request on a connection the service had closed only for idempotent methods, never a SOAP
    POST; the short idle time keeps that case rare. Its connection factories announce their start and
    stop at info level, which would add two lines per connection to the bridge's one per call.

    @param trust_root: what to trust for an C{https} backend (a C{Certificate} of a private CA); the
        platform's certificate authorities when C{None}.
    @param connections: idle connections kept (the calls the bridge runs at once).
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = connections
    pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
    pool._factory = _QuietClientFactory  # type: ignore[misc]
    return Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust_root), pool=pool), pool


@implementer(IEnvelopeHandler)
class SoapBridge:
    """
    A request/reply listener that forwards to an HTTP SOAP backend.

    @ivar backend_url: where the backend accepts POSTs (and C{?wsdl}).
    @ivar version: the SOAP version spoken to the backend, known after L{start}.
    @ivar ended: fires with a L{BridgeError} if the gateway refuses the bridge for good after L{start}
        succeeded (its reconnections have stopped then).

    C{trust_root} and C{backend_trust_root} are what to trust for a C{wss} gateway and an C{https} backend
    (a C{twisted.internet.ssl.Certificate} of a private CA); the platform's certificate authorities when
    C{None}.
    """

    log = Logger()

    def __init__(
        self,
        backend_url: str,
        address: ServiceAddress,
        credentials: SasCredentials | None,
        *,
        reactor: Any = None,
        agent: IAgent | None = None,
        endpoint: EndpointFactory | None = None,
        wsdl_url: str | None = None,
        soap_version: SoapVersion | None = None,
        client_auth: ClientAuth = ClientAuth.TOKEN,
        discovery: Discovery = Discovery.PRIVATE,
        display_name: str | None = None,
        request_timeout: float = 60.0,
        max_message_bytes: int = MESSAGE_BYTES[REQUEST_REPLY][0],
        backoff: Backoff | None = None,
        trust_root: Any = None,
        backend_trust_root: Any = None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.backend_url = backend_url
        self.wsdl_url = wsdl_url or backend_url + ("&wsdl" if "?" in backend_url else "?wsdl")
        self.address = address
        self.credentials = credentials
        self.clock: IReactorTime = reactor
        self.pool: HTTPConnectionPool | None = None
        if agent is None:
            agent, self.pool = quiet_agent(reactor, backend_trust_root)
        self.agent: IAgent = agent
        self.endpoint = endpoint or default_endpoint(reactor, trust_root)
        self.version = soap_version
        self.client_auth = client_auth
        self.discovery = discovery
        self.display_name = display_name
        self.request_timeout = request_timeout
        self.max_message_bytes = max_message_bytes
        self.backoff = backoff or Backoff()
        self.close_timeout = close_timeout
        self.session: ListenerSession | None = None
        self.soap_actions: dict[str, str] = {}
        self.reply_actions: dict[str, str] = {}
        self.ended: Deferred[BridgeError] = Deferred()

    async def _get(self, url: str, what: str) -> bytes:
        """A document of the backend (its WSDL, a schema), in UTF-8."""
        try:
            response: IResponse = await self.agent.request(b"GET", url.encode())
            data = await read_capped(response, WSDL_MAX_BYTES)
        except Exception as e:
            raise BridgeError(f"cannot fetch the backend's {what} from {url}: {e}") from None
        if response.code != 200:
            raise BridgeError(f"the backend answered {response.code} for {url}")
        try:
            return as_utf8(data, _charset(response))
        except ValueError as e:
            raise BridgeError(f"the backend's {what} at {url} is unusable: {e}") from None

    async def _schema(self, url: str) -> etree._Element:
        data = await self._get(url, "schema")
        try:
            return parse_xml(data, XmlLimits(WSDL_MAX_BYTES, WSDL_MAX_DEPTH))
        except ValueError as e:
            raise BridgeError(f"the backend's schema at {url} is unusable: {e}") from None

    async def fetch_wsdl(self) -> bytes:
        """
        Fetch the backend's WSDL, with the schemas it imports put in it (L{inline_schemas}).

        @raise BridgeError: when it cannot be fetched or is not a usable WSDL 1.1 document.
        """
        data = await self._get(self.wsdl_url, "WSDL")
        try:
            root = parse_wsdl(data, WSDL_MAX_BYTES)
            if await inline_schemas(root, self.wsdl_url, self._schema):
                data = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
            if self.version is None:
                self.version = backend_version(root)
            self.soap_actions = declared_soap_actions(root, self.version)
            self.reply_actions = reply_actions(root)
        except ValueError as e:
            raise BridgeError(f"the backend's WSDL is unusable: {e}") from None
        return data

    async def start(self) -> Registered:
        """
        Fetch the WSDL and register it on the relay name; keeps the registration up until L{stop}.

        @raise BridgeError: when the WSDL is unusable or the gateway refuses the registration for good.
        """
        try:
            wsdl = await self.fetch_wsdl()
        except BridgeError:
            await self._close_connections()
            raise
        registration = Registration(
            kind=REQUEST_REPLY,
            client_auth=self.client_auth.value,
            discovery=self.discovery.value,
            display_name=self.display_name,
            wsdl=wsdl,
        )
        self.session = ListenerSession(
            self.address,
            registration,
            self,
            self.credentials,
            self.clock,
            self.endpoint,
            backoff=self.backoff,
            on_stopped=self._stopped,
            close_timeout=self.close_timeout,
        )
        try:
            return await self.session.open()
        except Exception as e:
            await self._close_connections()
            raise BridgeError(f"the gateway refused the bridge: {e}") from None

    async def _close_connections(self) -> None:
        """Close the idle backend connections; a TLS one whose service does not answer the close is left."""
        if self.pool is None:
            return
        closing: Deferred[None] = self.pool.closeCachedConnections()
        closing.addTimeout(CLOSE_SECONDS, self.clock)
        try:
            await closing
        except (DeferredTimeout, CancelledError):
            pass

    def _stopped(self, error: BaseException) -> None:
        if not self.ended.called:
            self.ended.callback(BridgeError(f"the gateway refused the bridge: {error}"))

    def stop(self) -> Deferred[None] | None:
        """
        Leave gracefully, then close the connections kept to the backend.

        Calls in progress are answered first (within the session's close timeout): their connections
        are only idle, and closed here, once they are.
        """
        leaving = self.session.close() if self.session is not None else succeed(None)
        return leaving.addCallback(lambda _: Deferred.fromCoroutine(self._close_connections()))

    def hurry(self) -> None:
        """Stop waiting for the calls in progress (a second SIGTERM or SIGINT): leave at once."""
        if self.session is not None:
            self.session.abort()

    # IEnvelopeHandler

    def handle(self, envelope: Envelope) -> Deferred[Envelope | None]:
        """Forward one envelope to the backend; fire with the reply for the caller (C{None} for one-way)."""
        return Deferred.fromCoroutine(self._forward(envelope))

    def _outgoing(self, envelope: Envelope) -> tuple[bytes, Headers]:
        version = self.version or SoapVersion.SOAP11
        headers = read_addressing(envelope)
        drop = {_SENDER_TAG, HTTP_AUTHORIZATION_TAG}
        kept = [h for h in envelope.headers if h.tag not in drop]
        if version is SoapVersion.SOAP11:  # basic profile: no WS-Addressing
            kept = [h for h in kept if not h.tag.startswith(f"{{{WSA_NS}}}")]
        elif headers.to is not None:
            # The message now goes to the service: wsa:To names it (WCF's address filter checks), as a
            # client calling it directly would.
            kept = [*addressing_headers(to=self.backend_url), *(h for h in kept if h.tag != _WSA_TO)]
        outgoing = convert(envelope.replace(headers=kept), version)
        action = headers.action
        if action is not None:
            action = self.soap_actions.get(action, action)  # as the WSDL declares it, "" included
        http_headers = Headers({b"content-type": [content_type_header(version, action or None).encode()]})
        if version is SoapVersion.SOAP11:  # always there (SOAP 1.1 section 6.1.1); "" says: see the URL
            http_headers.setRawHeaders(b"soapaction", [f'"{action or ""}"'.encode()])
        authorization = read_http_authorization(envelope)
        if authorization is not None:
            http_headers.setRawHeaders(b"authorization", [authorization.encode("latin-1", errors="replace")])
        return outgoing.to_bytes(), http_headers

    async def _forward(self, envelope: Envelope) -> Envelope | None:
        headers = read_addressing(envelope)
        expects_reply = headers.reply_to == ANONYMOUS
        started = time.monotonic()
        try:
            body, http_headers = self._outgoing(envelope)
        except SoapError as e:
            # What the backend's SOAP version cannot carry (the gateway checked the envelope on arrival, so
            # this is rare): the caller's fault, answered now, not after the gateway's timeout.
            self.log.info("{action} not forwarded: {error}", action=headers.action, error=str(e))
            fault = Fault(FaultCode.SENDER, f"The message cannot be sent to the backend: {e}")
            return self._fault(fault, headers.message_id) if expects_reply else None
        status: int | str = "-"
        size = 0
        try:
            requested: Deferred[IResponse] = self.agent.request(
                b"POST", self.backend_url.encode(), http_headers, BytesProducer(body)
            )
            deadline = self.clock.seconds() + self.request_timeout
            # Cancelled, the agent's request fails with ResponseNeverReceived (CancelledError inside),
            # which addTimeout does not recognise as its own: say it here.
            requested.addTimeout(self.request_timeout, self.clock, _timed_out)
            response = await requested
            status = response.code
            # The whole answer within the timeout: a backend that stalls mid-body would hold the call.
            reading = read_capped(response, self.max_message_bytes)
            reading.addTimeout(max(0.0, deadline - self.clock.seconds()), self.clock, _timed_out)
            data = await reading
            size = len(data)
            reply = self._reply(response, data, headers.action, headers.message_id) if expects_reply else None
        except Exception as e:
            if isinstance(e, _BackendTimeout):
                status, reason = (
                    "timeout",
                    f"The backend service did not answer within {self.request_timeout:g} seconds",
                )
            elif isinstance(e, TooLarge):
                status = "too large"
                reason = f"The backend's answer is larger than {self.max_message_bytes} bytes, the most the bridge takes"
            else:
                status, reason = type(e).__name__, f"The backend service could not be reached: {e}"
            reply = self._fault(_backend_fault(reason), headers.message_id) if expects_reply else None
        finally:
            self.log.info(
                "{action} -> {status} in {duration_ms} ms ({size_in} bytes in, {size_out} bytes out)",
                action=headers.action,
                status=status,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                size_in=len(body),
                size_out=size,
                message_id=headers.message_id,
            )
        return reply

    def _fault(self, fault: Fault, relates_to: str | None) -> Envelope:
        return fault_envelope(fault, SoapVersion.SOAP12, SOAP_FAULT_ACTION, relates_to)

    def _reply(
        self, response: IResponse, data: bytes, action: str | None, relates_to: str | None
    ) -> Envelope:
        if not data:
            return self._fault(
                _backend_fault(f"The backend answered {response.code} without a body"), relates_to
            )
        try:
            utf8 = as_utf8(data, _charset(response))
            answer = parse_envelope(utf8, None, XmlLimits(self.max_message_bytes, MAX_DEPTH_CAP))
            converted = reply_to_soap12(answer)
            backend_action = read_addressing(converted).action
        except (SoapError, FaultFormatError, ValueError) as e:
            return self._fault(
                _backend_fault(f"The backend answered {response.code} with no usable SOAP envelope: {e}"),
                relates_to,
            )
        kept = [h for h in converted.headers if not h.tag.startswith(f"{{{WSA_NS}}}")]
        reply_action: str | None
        if converted.is_fault:
            reply_action = backend_action or SOAP_FAULT_ACTION
        else:
            reply_action = backend_action or (
                self.reply_actions.get(action, f"{action}Response") if action else None
            )
        ours = addressing_headers(action=reply_action, relates_to=relates_to)
        return converted.replace(headers=(*ours, *kept))


def run_bridge(bridge: SoapBridge, reactor: Any = None) -> None:
    """
    Run a bridge until the process is interrupted (the C{relay soap-bridge} command).

    Logs go to stderr, one access-log line per call.

    @raise BridgeError: when the bridge cannot start, or when the gateway refuses it for good later.
    """
    import sys

    from twisted.logger import globalLogBeginner, textFileLogObserver

    from relay.eventloop import on_second_signal

    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    problems: list[BaseException] = []
    interrupted = False

    def give_up(error: BaseException) -> None:
        if interrupted:  # stopped (SIGTERM, SIGINT) before it registered: not a failure
            return
        problems.append(error)
        if reactor.running:
            reactor.stop()

    def stop() -> Deferred[None] | None:
        nonlocal interrupted
        interrupted = True
        on_second_signal(reactor, bridge.hurry)  # a second signal does not wait for the calls in progress
        return bridge.stop()

    bridge.ended.addCallback(give_up)

    def started(registered: Registered) -> None:
        Logger().info(
            "bridging {address} to {backend} (SOAP {version})",
            address=registered.address,
            backend=bridge.backend_url,
            version=bridge.version.value if bridge.version else "?",
        )

    def failed(failure: Any) -> None:
        give_up(failure.value)

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(bridge.start()).addCallbacks(started, failed))
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    if problems:
        raise BridgeError(str(problems[0]))
