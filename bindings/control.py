"""
The control messages of the C{$wcf} WebSocket channel (spec section 4), as SOAP 1.2 envelopes.

Actions live in the relay namespace: C{r:Register} (listener, first frame), C{r:Registered},
C{r:Delivered}, C{r:RenewToken}, C{r:TokenRenewed}, C{r:Unregister} and C{r:Unregistered}. Each body is one element of the same name whose
children are simple text values; the WSDL travels base64-encoded in C{r:Register/r:Wsdl}, so the
gateway re-parses it as a separate document with the WSDL limits (spec section 9) instead of as part of the
envelope.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Final

from lxml import etree

from bindings.addressing import addressing_headers, read_addressing
from bindings.faultcodes import RELAY_NS, WSA_NS
from bindings.soap import SOAP12_NS, Envelope, SoapVersion, xml_text

ACTION_REGISTER: Final = f"{RELAY_NS}/Register"
ACTION_REGISTERED: Final = f"{RELAY_NS}/Registered"
ACTION_DELIVERED: Final = f"{RELAY_NS}/Delivered"
ACTION_RENEW_TOKEN: Final = f"{RELAY_NS}/RenewToken"
ACTION_TOKEN_RENEWED: Final = f"{RELAY_NS}/TokenRenewed"
ACTION_UNREGISTER: Final = f"{RELAY_NS}/Unregister"
ACTION_UNREGISTERED: Final = f"{RELAY_NS}/Unregistered"
CONTROL_ACTIONS: Final = frozenset(
    {
        ACTION_REGISTER,
        ACTION_REGISTERED,
        ACTION_DELIVERED,
        ACTION_RENEW_TOKEN,
        ACTION_TOKEN_RENEWED,
        ACTION_UNREGISTER,
        ACTION_UNREGISTERED,
    }
)

HTTP_AUTHORIZATION_TAG: Final = f"{{{RELAY_NS}}}HttpAuthorization"
"""
The header carrying an HTTP sender's non-SAS C{Authorization} header to the listener (spec 10.2).

Listeners only receive envelopes, so the header value travels as this SOAP header block (not
mustUnderstand); the bridge turns it back into an HTTP C{Authorization} header for the backend.
"""


class ControlError(ValueError):
    """A control message is malformed (the gateway answers C{InvalidMessage})."""


def _r(local: str) -> str:
    return f"{{{RELAY_NS}}}{local}"


def _body(name: str, values: dict[str, str | None]) -> etree._Element:
    element = etree.Element(_r(name), nsmap={"r": RELAY_NS})
    for key, value in values.items():
        if value is not None:
            etree.SubElement(element, _r(key)).text = value
    return element


def _envelope(
    action: str, body: etree._Element, *, message_id: str | None = None, relates_to: str | None = None
) -> Envelope:
    headers = addressing_headers(action=action, message_id=message_id, relates_to=relates_to)
    return Envelope(SoapVersion.SOAP12, headers, (body,))


def _only_child(envelope: Envelope, name: str) -> etree._Element:
    body = envelope.first_body_child
    if body is None or body.tag != _r(name) or len(envelope.body) != 1:
        raise ControlError(f"the body of a {name} message must be one r:{name} element")
    return body


def _text(element: etree._Element, name: str, *, required: bool = False, limit: int = 256) -> str | None:
    value: str | None = element.findtext(_r(name))
    if value is None or not value.strip():
        if required:
            raise ControlError(f"r:{name} is required")
        return None
    value = value.strip()
    if len(value) > limit:
        raise ControlError(f"r:{name} is longer than {limit} characters")
    return value


def control_action(envelope: Envelope) -> str | None:
    """The C{wsa:Action} of an envelope when it is one of the relay's control actions, else C{None}."""
    action: str | None = read_addressing(envelope).action
    if action is not None and action in CONTROL_ACTIONS:
        return action
    return None


@dataclass(frozen=True, slots=True)
class Registration:
    """
    What a listener asks for in C{r:Register}.

    @ivar kind: C{oneway}, C{requestreply} or C{multicast}.
    @ivar client_auth: C{token} or C{anonymous}.
    @ivar discovery: C{private} or C{public}.
    @ivar display_name: the registry title, or C{None} for the last path segment.
    @ivar wsdl: the contract's WSDL document, or C{None} (allowed for multicast only).
    """

    kind: str
    client_auth: str = "token"
    discovery: str = "private"
    display_name: str | None = None
    wsdl: bytes | None = field(default=None, repr=False)


def register_envelope(registration: Registration, message_id: str) -> Envelope:
    """The C{r:Register} envelope a service host sends as its first frame."""
    wsdl = base64.b64encode(registration.wsdl).decode("ascii") if registration.wsdl is not None else None
    body = _body(
        "Register",
        {
            "Kind": registration.kind,
            "ClientAuth": registration.client_auth,
            "Discovery": registration.discovery,
            "DisplayName": registration.display_name,
            "Wsdl": wsdl,
        },
    )
    return _envelope(ACTION_REGISTER, body, message_id=message_id)


def parse_register(envelope: Envelope, max_wsdl_bytes: int) -> Registration:
    """
    Read an C{r:Register} body.

    @raise ControlError: for a missing kind, an undecodable WSDL or one over C{max_wsdl_bytes}.
    """
    element = _only_child(envelope, "Register")
    kind = _text(element, "Kind", required=True, limit=32)
    encoded = element.findtext(_r("Wsdl"))
    wsdl: bytes | None = None
    if encoded is not None and encoded.strip():
        compact = "".join(encoded.split())
        if len(compact) > (max_wsdl_bytes + 2) // 3 * 4:
            raise ControlError(f"the WSDL is larger than {max_wsdl_bytes} bytes")
        try:
            wsdl = base64.b64decode(compact, validate=True)
        except binascii.Error:
            raise ControlError("r:Wsdl is not base64") from None
    return Registration(
        kind=kind or "",
        client_auth=_text(element, "ClientAuth", limit=32) or "token",
        discovery=_text(element, "Discovery", limit=32) or "private",
        display_name=_text(element, "DisplayName"),
        wsdl=wsdl,
    )


@dataclass(frozen=True, slots=True)
class Registered:
    """
    The gateway's acceptance of a registration.

    @ivar address: the public URL of the name (where HTTP senders and C{?wsdl} reach it).
    @ivar entity: the entity name.
    @ivar kind: the entity kind.
    """

    address: str
    entity: str
    kind: str


def registered_envelope(registered: Registered, relates_to: str) -> Envelope:
    """The C{r:Registered} answer to a listener's C{r:Register}."""
    body = _body(
        "Registered", {"Address": registered.address, "Entity": registered.entity, "Kind": registered.kind}
    )
    return _envelope(ACTION_REGISTERED, body, relates_to=relates_to)


def parse_registered(envelope: Envelope) -> Registered:
    """
    Read an C{r:Registered} body.

    @raise ControlError: when the address is missing.
    """
    element = _only_child(envelope, "Registered")
    return Registered(
        address=_text(element, "Address", required=True, limit=2048) or "",
        entity=_text(element, "Entity", limit=300) or "",
        kind=_text(element, "Kind", limit=32) or "",
    )


def delivered_envelope(count: int, relates_to: str) -> Envelope:
    """The C{r:Delivered} a WebSocket sender gets for a datagram: how many listeners took it."""
    return _envelope(ACTION_DELIVERED, _body("Delivered", {"Count": str(count)}), relates_to=relates_to)


_DELIVERED_START: Final = (
    f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Header><wsa:Action xmlns:wsa="{WSA_NS}">{ACTION_DELIVERED}'
    f'</wsa:Action><wsa:RelatesTo xmlns:wsa="{WSA_NS}">'
)
_DELIVERED_MIDDLE: Final = f'</wsa:RelatesTo></s:Header><s:Body><r:Delivered xmlns:r="{RELAY_NS}"><r:Count>'
_DELIVERED_END: Final = "</r:Count></r:Delivered></s:Body></s:Envelope>"


def delivered_bytes(count: int, relates_to: str) -> bytes:
    """
    C{delivered_envelope(count, relates_to).to_bytes()}, written as text.

    Every datagram a WebSocket sender sends is answered with one; building it as elements cost more than
    routing the datagram.
    """
    return f"{_DELIVERED_START}{xml_text(relates_to)}{_DELIVERED_MIDDLE}{count:d}{_DELIVERED_END}".encode()


def parse_delivered(envelope: Envelope) -> int:
    """
    The count of an C{r:Delivered} body.

    @raise ControlError: when the count is missing or not a non-negative integer.
    """
    text = _text(_only_child(envelope, "Delivered"), "Count", required=True, limit=12) or ""
    if not (text.isascii() and text.isdigit()):  # isdigit alone takes "²"
        raise ControlError("r:Count must be a non-negative integer")
    return int(text)


def renew_token_envelope(token: str, message_id: str) -> Envelope:
    """The C{r:RenewToken} a client sends to swap its connection's token."""
    return _envelope(ACTION_RENEW_TOKEN, _body("RenewToken", {"Token": token}), message_id=message_id)


def parse_renew_token(envelope: Envelope) -> str:
    """
    The token of an C{r:RenewToken} body.

    @raise ControlError: when the token is missing.
    """
    return _text(_only_child(envelope, "RenewToken"), "Token", required=True, limit=4096) or ""


def token_renewed_envelope(expiry: int, relates_to: str) -> Envelope:
    """The C{r:TokenRenewed} answer: the new token holds until C{expiry} (Unix seconds)."""
    return _envelope(
        ACTION_TOKEN_RENEWED, _body("TokenRenewed", {"Expires": str(expiry)}), relates_to=relates_to
    )


def unregister_envelope(message_id: str) -> Envelope:
    """
    The C{r:Unregister} a listener sends to leave gracefully: route nothing more to me, then tell me.

    The gateway answers C{r:Unregistered} once everything it had accepted for the listener is written,
    so that answer is a fence: what came before it is all the listener will get, and it closes once it
    has served that.
    """
    return _envelope(ACTION_UNREGISTER, _body("Unregister", {}), message_id=message_id)


def unregistered_envelope(relates_to: str) -> Envelope:
    """The C{r:Unregistered} answer: nothing more will be routed to the listener (see L{unregister_envelope})."""
    return _envelope(ACTION_UNREGISTERED, _body("Unregistered", {}), relates_to=relates_to)


def http_authorization_header(value: str) -> etree._Element:
    """The L{HTTP_AUTHORIZATION_TAG} header block holding an HTTP sender's C{Authorization} value."""
    element = etree.Element(HTTP_AUTHORIZATION_TAG, nsmap={"r": RELAY_NS})
    element.text = value
    return element


def read_http_authorization(envelope: Envelope) -> str | None:
    """The forwarded C{Authorization} value of an envelope, for services that run their own auth."""
    for block in envelope.find_headers(HTTP_AUTHORIZATION_TAG):
        return (block.text or "").strip() or None
    return None
