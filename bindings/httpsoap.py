"""
Plain HTTP for the SOAP relay bindings: SOAP 1.1 and 1.2 senders and C{?wsdl}.

L{SoapEndpoint} serves C{https://{host}/{name}} for the three binding kinds (spec 3, 6.2, 6.3): a POST is one
message (C{text/xml} is SOAP 1.1, C{application/soap+xml} SOAP 1.2), answered with 202 and an empty body for
a datagram (plus C{Relay-Delivered-Count} on a multicast name), with the listener's reply converted back to
the sender's version for a request, or with a gateway fault of spec 7.1 whose HTTP status says what went
wrong. C{GET ?wsdl} returns the registered contract with its addresses pointing at the public URL.
The Atom feed of public names (spec 13) is in L{bindings.registryfeed}.

A body is streamed to the resource (L{bindings.soapbody}) when it is chunked or larger than a control
message, so the name's limit is applied to the declared C{Content-Length} before any of the body is read,
and to a chunked body as it comes; a small one is read whole by twisted.web first. twisted.web does not
read the connection's next request while one is being answered; so an HTTP sender is held back by not
being answered (the outlets' C{send_timeout} still ends in C{ServerBusy}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from typing_extensions import override

from bindings.addressing import SAS_SCHEME, SenderInfo, choose_token, read_addressing
from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.faults import (
    FaultFormatError,
    gateway_fault,
    parse_fault,
    reply_to_soap11,
    service_fault_status,
    version_mismatch,
)
from bindings.inbound import Refusal, RegisteredContract, open_envelope, prepare
from bindings.names import BoundName
from bindings.oneway import Delivered
from bindings.requestreply import Reply
from bindings.safexml import MAX_DEPTH_CAP, XmlLimits
from bindings.settings import MESSAGE_BYTES, MULTICAST, BindingEntitySettings, ClientAuth
from bindings.soap import (
    Envelope,
    HttpSoapRequest,
    SoapError,
    SoapVersion,
    classify_request,
    content_type_header,
    parse_envelope,
)
from bindings.soapbody import LimitedBody
from relay.auth import Grant, Rights, split_tokens
from relay.connectionquota import ConnectionLease, ConnectionQuotaExceeded
from relay.entities import Entity, EntityMatch, Namespace
from relay.errors import ErrorKind, RelayError
from relay.httpbody import RequestBody
from relay.logger import Logger
from relay.resource import ErrorResource, request_host, tracking_id_of

if TYPE_CHECKING:
    from bindings.gateway import BindingsGateway

DELIVERED_COUNT_HEADER: Final = b"Relay-Delivered-Count"
_TOKEN_HEADER: Final = b"servicebusauthorization"


def header_value(request: IRequest, name: bytes) -> str | None:
    """A request header's value as text (Latin-1), or C{None}."""
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def token_header(request: IRequest) -> str | None:
    """
    Every C{ServiceBusAuthorization} value, joined as Autobahn joins them for C{$wcf} upgrades.

    A header given twice presents two tokens (L{split_tokens} parts them); C{getHeader} kept only the last.
    """
    values = request.requestHeaders.getRawHeaders(_TOKEN_HEADER)
    return ", ".join(value.decode("latin-1") for value in values) if values else None


def is_sas(authorization: str | None) -> bool:
    """Whether an C{Authorization} value is a shared access signature."""
    return authorization is not None and authorization.strip().lower().startswith(SAS_SCHEME.lower())


def _released(result: Any, lease: ConnectionLease) -> Any:
    """Give a finished call's lease back; the result (or failure) goes on."""
    lease.release()
    return result


def _write(request: IRequest, status: int, body: bytes, content_type: str | None) -> None:
    request.setResponseCode(status)
    if content_type is not None:
        request.setHeader(b"content-type", content_type.encode("latin-1"))
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.setHeader(b"cache-control", b"no-store")
    if body and request.method != b"HEAD":
        request.write(body)


class SoapResourceFactory:
    """The L{relay.resource.GatewayRoot} factory for requests on binding names."""

    def __init__(self, gateway: BindingsGateway) -> None:
        self.gateway = gateway

    def __call__(self, request: IRequest, namespace: Namespace, match: EntityMatch) -> IResource:
        """A resource for one request on a binding name."""
        return SoapEndpoint(self.gateway, namespace, match.entity)


class SoapEndpoint(Resource):
    """C{POST /{name}} (a SOAP message) and C{GET /{name}?wsdl} (the contract)."""

    isLeaf = True
    log = Logger()

    def __init__(self, gateway: BindingsGateway, namespace: Namespace, entity: Entity) -> None:
        super().__init__()
        self.gateway = gateway
        self.namespace = namespace
        self.entity = entity

    @property
    def settings(self) -> BindingEntitySettings:
        """The name's settings."""
        settings: BindingEntitySettings = self.entity.settings
        return settings

    def _authorize(self, request: IRequest, token: str | None) -> Grant | None:
        names = self.gateway.names
        return names.authorize(
            self.namespace,
            self.entity.name,
            self.entity.rules,
            request_host(request),
            split_tokens(token or ""),
            Rights.SEND,
            anonymous_ok=self.settings.client_auth is ClientAuth.ANONYMOUS,
        )

    def _fault(
        self,
        request: IRequest,
        kind: RelayFault,
        message: str,
        version: SoapVersion,
        relates_to: str | None = None,
    ) -> bytes:
        tracking_id = tracking_id_of(request)
        self.gateway.instruments.fault(self.entity.name, kind.subcode_name)
        self.log.info(
            "{method} {entity} refused: {subcode} {cause}",
            method=request.method.decode("latin-1"),
            entity=self.entity.name,
            subcode=kind.subcode_name,
            cause=message,
            status=kind.status,
            tracking_id=tracking_id,
        )
        envelope = gateway_fault(
            kind,
            version,
            path=self.entity.name,
            tracking_id=tracking_id,
            message=message,
            relates_to=relates_to if version is SoapVersion.SOAP12 else None,
        )
        request.setResponseCode(kind.status)
        request.setHeader(b"content-type", content_type_header(version).encode("latin-1"))
        request.setHeader(b"cache-control", b"no-store")
        return envelope.to_bytes()

    @override
    def render(self, request: IRequest) -> bytes | int:
        """POST and GET are served; anything else is 405."""
        if request.method not in (b"GET", b"HEAD", b"POST"):
            error = RelayError(ErrorKind.METHOD_NOT_ALLOWED, "Only POST (SOAP) and GET ?wsdl are served here")
            return ErrorResource(error).render(request)
        return super().render(request)  # type: ignore[no-any-return]

    # -- ?wsdl ----------------------------------------------------------------------------------------

    def render_GET(self, request: IRequest) -> bytes:
        """The contract as WSDL 1.1, with every address rewritten to the public URL (spec 9)."""
        query = request.uri.partition(b"?")[2]
        wants_wsdl = any(pair.partition(b"=")[0].lower() == b"wsdl" for pair in query.split(b"&"))
        if not wants_wsdl:
            error = RelayError(
                ErrorKind.METHOD_NOT_ALLOWED, "POST SOAP messages to this name, or GET ?wsdl for its contract"
            )
            return ErrorResource(error).render(request)
        version = SoapVersion.SOAP11
        authorization = header_value(request, b"authorization")
        token = token_header(request) or (authorization if is_sas(authorization) else None)
        try:
            self._authorize(request, token)
        except RelayFaultError as e:
            return self._fault(request, e.kind, e.message, version)
        bound = self.gateway.names.existing(self.namespace, self.entity)
        contract: RegisteredContract | None = bound.contract if bound is not None else None
        if contract is None:
            return self._fault(
                request, RelayFault.NO_SUCH_ENTITY, "No contract has been registered for this name", version
            )
        body = contract.served(self.gateway.names.public_url(self.namespace, self.entity.name))
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        # The document is a listener's: a browser must neither guess another type nor run what it holds
        # (an XHTML script in wsdl:documentation would run on the gateway's origin).
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"sandbox; default-src 'none'")
        return body

    # -- messages -------------------------------------------------------------------------------------

    def render_POST(self, request: IRequest) -> bytes | int:
        """Accept, refuse or route one SOAP message."""
        return _SoapCall(self, request).start()


class _SoapCall:
    """One HTTP SOAP message on its way through the gateway."""

    log = Logger()

    def __init__(self, endpoint: SoapEndpoint, request: IRequest) -> None:
        self.endpoint = endpoint
        self.request = request
        self.version = SoapVersion.SOAP11
        self.message_id: str | None = None
        self.action: str | None = None
        self.gone = False

    def start(self) -> bytes | int:
        endpoint, request = self.endpoint, self.request
        settings = endpoint.settings
        try:
            framing = classify_request(
                header_value(request, b"content-type"), header_value(request, b"soapaction")
            )
        except SoapError as e:
            return endpoint._fault(request, RelayFault.INVALID_MESSAGE, str(e), SoapVersion.SOAP11)
        self.version = framing.version
        limit = settings.message_limit
        declared = header_value(request, b"content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.strip().isdigit()
            and int(declared) > limit
        ):
            return endpoint._fault(
                request,
                RelayFault.MESSAGE_TOO_LARGE,
                f"The message has {int(declared)} bytes; the name allows {limit}",
                self.version,
            )
        body: RequestBody | None = getattr(request, "body", None)
        if body is None:  # a small body, read whole by twisted.web
            data = request.content.read(limit + 1) if request.content is not None else b""
            return self._too_large() if len(data) > limit else self._message(data, framing)
        body.attach(
            LimitedBody(
                limit,
                lambda data: self._respond(self._message(data, framing)),
                lambda: self._respond(self._too_large()),
                self._body_failed,
            )
        )
        return NOT_DONE_YET

    def _too_large(self) -> bytes:
        return self.endpoint._fault(
            self.request,
            RelayFault.MESSAGE_TOO_LARGE,
            f"The message is larger than {self.endpoint.settings.message_limit} bytes",
            self.version,
        )

    def _body_failed(self, reason: Failure) -> None:
        self.gone = True
        self.log.info(
            "HTTP sender went away before the end of its message ({error})",
            error=reason.getErrorMessage(),
            tracking_id=tracking_id_of(self.request),
        )

    def _respond(self, result: bytes | int) -> None:
        """Write an answer made after the body was streamed in (a fault), unless a reply is awaited."""
        if isinstance(result, int) or self.gone:  # NOT_DONE_YET: _finish answers
            return
        request = self.request
        request.setHeader(b"content-length", str(len(result)).encode("ascii"))
        if request.method != b"HEAD":
            request.write(result)
        request.finish()

    def _message(self, data: bytes, framing: HttpSoapRequest) -> bytes | int:
        """Parse, authorize and route the whole message; a fault's bytes, or C{NOT_DONE_YET}."""
        endpoint, request, settings = self.endpoint, self.request, self.endpoint.settings
        limit = settings.message_limit
        service_bus = token_header(request)
        authorization = header_value(request, b"authorization")
        try:
            grant = endpoint._authorize(request, service_bus) if service_bus else None
            envelope, soap_token = open_envelope(
                data,
                announced=self.version,
                charset=framing.charset,
                limits=XmlLimits(max_bytes=limit, max_depth=settings.max_depth),
            )
            choice = choose_token(None, service_bus, soap_token, authorization)
            if not service_bus:
                grant = endpoint._authorize(request, choice.token)
            forward = authorization if choice.forward_authorization and not is_sas(authorization) else None
            return self._route(envelope, grant, framing.media_action, framing.soap_action, forward)
        except Refusal as e:
            return self._refused(e)
        except RelayFaultError as e:
            return endpoint._fault(request, e.kind, e.message, self.version)

    def _route(
        self,
        envelope: Envelope,
        grant: Grant | None,
        media_action: str | None,
        soap_action: str | None,
        authorization: str | None,
    ) -> bytes | int:
        endpoint, request = self.endpoint, self.request
        gateway, names = endpoint.gateway, endpoint.gateway.names
        bound = names.bound(endpoint.namespace, endpoint.entity)
        contract: RegisteredContract | None = bound.contract
        if contract is None and bound.kind != MULTICAST:
            return endpoint._fault(request, RelayFault.NO_LISTENER, "No listener is connected", self.version)
        tracking_id = tracking_id_of(request)
        prepared = prepare(
            envelope,
            kind=bound.kind,
            operations=contract.operations if contract is not None else None,
            to=names.public_url(endpoint.namespace, endpoint.entity.name),
            sender=SenderInfo(grant.key_name if grant else "anonymous", tracking_id),
            strict=bound.settings.strict_addressing,
            media_action=media_action,
            soap_action=soap_action,
            authorization=authorization,
        )
        if prepared.duplicates:
            self.log.warn(
                "HTTP sender {tracking_id} repeated addressing headers {names} with different values",
                tracking_id=tracking_id,
                names=",".join(prepared.duplicates),
            )
        self.message_id, self.action = prepared.message_id, prepared.action
        try:
            lease = gateway.connections.take(endpoint.namespace.name)
        except ConnectionQuotaExceeded as e:
            return endpoint._fault(
                request, RelayFault.QUOTA_EXCEEDED, e.message, self.version, prepared.message_id
            )
        finished: Deferred[None] = request.notifyFinish()  # type: ignore[attr-defined]
        finished.addBoth(_released, lease)  # the call counts against its namespace until it is answered
        result = gateway.deliver(bound, prepared, tracking_id)
        finished.addErrback(self._sender_gone, result)
        # a failure in _answer (an unusable reply) is answered by _failed too: the caller never hangs
        result.addCallback(self._answer, bound).addErrback(self._failed)
        return NOT_DONE_YET

    def _sender_gone(self, failure: Failure, result: Deferred[Any]) -> None:
        self.gone = True
        self.log.info(
            "HTTP sender of {message_id} went away before its answer",
            message_id=self.message_id,
            tracking_id=tracking_id_of(self.request),
        )
        result.cancel()

    def _refused(self, refusal: Refusal) -> bytes:
        request = self.request
        if refusal.kind is None:
            tracking_id = tracking_id_of(request)
            self.endpoint.gateway.instruments.fault(self.endpoint.entity.name, "VersionMismatch")
            self.log.info(
                "{entity} refused: VersionMismatch {cause}",
                entity=self.endpoint.entity.name,
                cause=refusal.message,
                tracking_id=tracking_id,
            )
            request.setResponseCode(500)
            request.setHeader(b"content-type", content_type_header(refusal.version).encode("latin-1"))
            return version_mismatch(refusal.version, tracking_id).to_bytes()
        return self.endpoint._fault(
            request, refusal.kind, refusal.message, refusal.version, refusal.relates_to
        )

    def _finish(self, status: int, body: bytes, content_type: str | None) -> None:
        if self.gone:
            return
        _write(self.request, status, body, content_type)
        self.request.finish()
        self.log.info(
            "{version} {entity} {action} {message_id} answered {status}",
            version=f"SOAP {self.version.value}",
            entity=self.endpoint.entity.name,
            action=self.action,
            message_id=self.message_id,
            status=status,
            tracking_id=tracking_id_of(self.request),
        )

    def _answer(self, outcome: Delivered | Reply, bound: BoundName) -> None:
        if isinstance(outcome, Delivered):
            if bound.kind == MULTICAST and not self.gone:
                self.request.setHeader(DELIVERED_COUNT_HEADER, str(outcome.count).encode("ascii"))
            self._finish(202, b"", None)
            return
        cap = MESSAGE_BYTES[bound.kind][1]
        try:
            reply = parse_envelope(outcome.payload, SoapVersion.SOAP12, XmlLimits(cap, MAX_DEPTH_CAP))
            status = 200
            if reply.is_fault:
                status = service_fault_status(parse_fault(reply.body[0], SoapVersion.SOAP12), self.version)
            if self.version is SoapVersion.SOAP11:
                self._finish(status, reply_to_soap11(reply).to_bytes(), content_type_header(self.version))
                return
        except (SoapError, FaultFormatError) as e:  # pragma: no cover - replies are checked on arrival
            self._failed(Failure(RelayFaultError(RelayFault.INVALID_MESSAGE, f"unusable reply: {e}")))
            return
        self._finish(
            status, outcome.payload, content_type_header(self.version, read_addressing(reply).action)
        )

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError) or self.gone:
            return
        error = failure.value
        if not isinstance(error, RelayFaultError):
            self.log.failure("delivering {message_id} failed", failure, message_id=self.message_id)
            error = RelayFaultError(RelayFault.SERVER_BUSY, "The gateway could not deliver the message")
        body = self.endpoint._fault(self.request, error.kind, error.message, self.version, self.message_id)
        self._finish(error.kind.status, body, content_type_header(self.version))
