"""
SOAP 1.1 and 1.2 envelopes as values, their HTTP content types, and conversion between the versions.

Listeners always see SOAP 1.2 (spec 6.1); basic-profile HTTP senders speak SOAP 1.1, so requests are
converted up and replies down (spec 6.2). Header blocks and body children keep every namespace declaration
that was in scope where they were found, so moving them into another envelope keeps QName-valued content
(C{xsi:type="tns:T"}) meaningful: they are "moved untouched with their namespace declarations". A parsed
envelope holds the elements of the parsed tree itself (no copies: lxml serialises a subelement with every
declaration in scope, which is all L{Envelope.to_bytes} needs); conversions build L{standalone} copies.
Callers treat the held elements as read-only; every transformation here builds new elements.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final
from urllib.parse import quote

from lxml import etree

from bindings.safexml import HARDENED_SETTINGS, Rule, XmlLimits, XmlRejected, parse_xml

SOAP11_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS: Final = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_NEXT: Final = "http://schemas.xmlsoap.org/soap/actor/next"
SOAP12_NEXT: Final = "http://www.w3.org/2003/05/soap-envelope/role/next"
SOAP12_ULTIMATE_RECEIVER: Final = "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"
PREFIX: Final = "s"
_ENCODING_STYLE: Final = (f"{{{SOAP11_NS}}}encodingStyle", f"{{{SOAP12_NS}}}encodingStyle")


class SoapVersion(Enum):
    """A SOAP envelope version with its namespace and HTTP media type."""

    SOAP11 = "1.1"
    SOAP12 = "1.2"

    # Enum's own hash is a Python function, run for every lookup keyed by a version (several per message
    # relayed); members are singletons compared by identity, so the object's hash is as good.
    __hash__ = object.__hash__

    @property
    def namespace(self) -> str:
        """The envelope namespace URI."""
        return SOAP11_NS if self is SoapVersion.SOAP11 else SOAP12_NS

    @property
    def media_type(self) -> str:
        """The HTTP media type without parameters."""
        return "text/xml" if self is SoapVersion.SOAP11 else "application/soap+xml"

    def qname(self, local: str) -> str:
        """A Clark-notation name in this version's envelope namespace."""
        return f"{{{SOAP11_NS if self is SoapVersion.SOAP11 else SOAP12_NS}}}{local}"

    @classmethod
    def for_namespace(cls, namespace: str | None) -> SoapVersion | None:
        """The version whose envelope namespace is C{namespace}, or C{None}."""
        return _VERSIONS.get(namespace or "")


_VERSIONS: Final = {SOAP11_NS: SoapVersion.SOAP11, SOAP12_NS: SoapVersion.SOAP12}
_ENVELOPE_TAGS: Final = {f"{{{ns}}}Envelope": version for ns, version in _VERSIONS.items()}
_HEADER_TAGS: Final = {version: f"{{{ns}}}Header" for ns, version in _VERSIONS.items()}
_BODY_TAGS: Final = {version: f"{{{ns}}}Body" for ns, version in _VERSIONS.items()}
_MUST_UNDERSTAND_ATTRIBUTES: Final = {version: f"{{{ns}}}mustUnderstand" for ns, version in _VERSIONS.items()}
_XML_SPACE: Final = " \t\n\r"  # str.strip() alone would take NBSP and other Unicode spaces too


class SoapErrorKind(Enum):
    """What an unusable envelope is answered with."""

    INVALID_MESSAGE = "InvalidMessage"
    VERSION_MISMATCH = "VersionMismatch"


class SoapError(ValueError):
    """
    An envelope or its HTTP framing is unusable.

    @ivar kind: whether this is an C{InvalidMessage} or a C{VersionMismatch}.
    @ivar version: the version the answer must be written in (the one the sender announced), if known.
    @ivar xml_rule: the hardening rule, when the XML parser refused the document.
    """

    def __init__(
        self,
        kind: SoapErrorKind,
        message: str,
        version: SoapVersion | None = None,
        xml_rule: Rule | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.version = version
        self.xml_rule = xml_rule


_FEW_ATTRIBUTES = 32
"""Up to this many attributes, L{standalone} copies them one by one (cheaper than a serialise-and-parse)."""


def standalone(element: etree._Element) -> etree._Element:
    """
    Copy an element so that it declares, on itself, every namespace in scope at its original place.

    A plain deep copy keeps only the declarations the copied names use, which breaks QNames inside
    attribute values and text.
    """
    if len(element.attrib) > _FEW_ATTRIBUTES:
        # Each attribute set on a new element walks the ones before it (libxml2 appends to a list), so
        # copying many is quadratic; lxml serialises an element with every namespace in scope, and a
        # parse of that is linear.
        return etree.fromstring(
            etree.tostring(element, with_tail=False), etree.XMLParser(**HARDENED_SETTINGS)
        )
    new = etree.Element(element.tag, nsmap=element.nsmap)
    for name, value in element.attrib.items():
        new.set(name, value)
    new.text = element.text
    for child in element:
        new.append(copy.deepcopy(child))
    return new


@dataclass(frozen=True, slots=True)
class Envelope:
    """
    A SOAP envelope: version, header blocks and body children.

    @ivar version: SOAP 1.1 or 1.2.
    @ivar headers: header block elements: standalone (see L{standalone}), or the blocks of a parsed tree.
    @ivar body: body child elements, the same way; a fault is a single C{Fault} child.
    """

    version: SoapVersion
    headers: tuple[etree._Element, ...] = ()
    body: tuple[etree._Element, ...] = ()

    @property
    def first_body_child(self) -> etree._Element | None:
        """The body's first element (the wrapper element of a document/literal message), if any."""
        return self.body[0] if self.body else None

    @property
    def is_fault(self) -> bool:
        """Whether the body is a SOAP fault of this envelope's version."""
        return len(self.body) == 1 and self.body[0].tag == self.version.qname("Fault")

    def find_headers(self, tag: str) -> tuple[etree._Element, ...]:
        """The header blocks named C{tag} (Clark notation), in document order."""
        return tuple(h for h in self.headers if h.tag == tag)

    def replace(
        self, *, headers: Iterable[etree._Element] | None = None, body: Iterable[etree._Element] | None = None
    ) -> Envelope:
        """A new envelope with other header blocks or body children."""
        return Envelope(
            self.version,
            self.headers if headers is None else tuple(headers),
            self.body if body is None else tuple(body),
        )

    def to_element(self) -> etree._Element:
        """Build the envelope as a fresh element tree (parsed back from L{to_bytes})."""
        root: etree._Element = etree.fromstring(self.to_bytes(), etree.XMLParser(**HARDENED_SETTINGS))
        return root

    def to_bytes(self) -> bytes:
        """
        Serialise as UTF-8 without an XML declaration.

        Each held element is serialised on its own and the pieces are joined as text. Copying the elements
        into one tree instead would let libxml2 reconcile namespaces wrongly: an element that declares a
        prefix locally (C{xmlns:s="urn:other"}) and has an attribute in the envelope namespace gets that
        attribute written with the envelope's own C{s:} prefix, which the local declaration shadows.
        """
        return envelope_bytes(
            self.version, [etree.tostring(h, encoding="utf-8") for h in self.headers], self.body
        )


_ENVELOPE_PARTS: Final = {
    version: (
        f'<{PREFIX}:Envelope xmlns:{PREFIX}="{version.namespace}">'.encode(),
        f"<{PREFIX}:Header>".encode(),
        f"</{PREFIX}:Header>".encode(),
        f"<{PREFIX}:Body>".encode(),
        f"</{PREFIX}:Body></{PREFIX}:Envelope>".encode(),
    )
    for version in (SoapVersion.SOAP11, SoapVersion.SOAP12)
}


def envelope_bytes(version: SoapVersion, headers: list[bytes], body: Iterable[etree._Element]) -> bytes:
    """
    The bytes of L{Envelope.to_bytes} from header blocks that are already serialised.

    The gateway writes its own delivery headers from text (L{bindings.addressing.delivery_bytes}) and
    only serialises what the sender wrote; the result is byte for byte what L{Envelope.to_bytes} gives.
    """
    start, header_start, header_end, body_start, end = _ENVELOPE_PARTS[version]
    parts = [start]
    if headers:
        parts.append(header_start)
        parts.extend(headers)
        parts.append(header_end)
    parts.append(body_start)
    parts.extend(etree.tostring(b, encoding="utf-8") for b in body)
    parts.append(end)
    return b"".join(parts)


_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(value: str) -> str:
    """C{value} with the characters XML 1.0 cannot carry replaced by U+FFFD (for text we did not choose)."""
    return _NOT_XML_CHAR.sub("\ufffd", value)


def xml_text(value: str) -> str:
    """
    Escape character data exactly as lxml serialises an element's text.

    @raise ValueError: for characters XML 1.0 cannot carry (lxml refuses them the same way).
    """
    if value.isascii() and value.isprintable():  # no control characters, CR included: the common case
        if "&" in value or "<" in value or ">" in value:
            return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return value
    if _NOT_XML_CHAR.search(value) is not None:
        raise ValueError("All strings must be XML compatible")
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _is_blank(text: str | None) -> bool:
    return text is None or not text.strip(_XML_SPACE)


def envelope_from_element(
    root: etree._Element, expected: SoapVersion | None = None, *, may_have_encoding_style: bool = True
) -> Envelope:
    """
    Check the structure of a parsed envelope and turn it into an L{Envelope}.

    @param expected: the version the transport announced (Content-Type); C{None} accepts either.
    @param may_have_encoding_style: C{False} when the caller knows no attribute is named C{encodingStyle}
        (its UTF-8 bytes do not contain the name), so the scan of every element can be skipped.
    @raise SoapError: C{VersionMismatch} for an envelope of another or unknown version, C{InvalidMessage}
        for anything else that is not a document/literal SOAP envelope.
    """
    version = _ENVELOPE_TAGS.get(root.tag)
    if version is None or (expected is not None and version is not expected):
        qname = etree.QName(root)
        if qname.localname != "Envelope":
            raise SoapError(
                SoapErrorKind.INVALID_MESSAGE, "the root element is not a SOAP Envelope", expected
            )
        raise SoapError(
            SoapErrorKind.VERSION_MISMATCH,
            f"envelope namespace {qname.namespace!r} does not match the announced SOAP version",
            expected or SoapVersion.SOAP12,
        )
    if may_have_encoding_style:
        for element in root.iter():
            attributes = element.attrib
            if attributes and any(name in attributes for name in _ENCODING_STYLE):
                raise SoapError(
                    SoapErrorKind.INVALID_MESSAGE,
                    "encodingStyle is not supported; only document/literal messages are",
                    version,
                )
    children = _children_without_text(root, "Envelope", version)
    header: etree._Element | None = None
    if children and children[0].tag == _HEADER_TAGS[version]:
        header = children.pop(0)
    if len(children) != 1 or children[0].tag != _BODY_TAGS[version]:
        raise SoapError(
            SoapErrorKind.INVALID_MESSAGE, "the Envelope must hold an optional Header and one Body", version
        )
    headers = () if header is None else tuple(_children_without_text(header, "Header", version))
    for block in headers:
        if not block.tag.startswith("{"):
            raise SoapError(
                SoapErrorKind.INVALID_MESSAGE, "header blocks must be namespace-qualified", version
            )
        # Passed on as written, a SOAP 1.2 caller got a reply it cannot read, and a conversion to the
        # other version failed later, blaming the caller for its listener's reply.
        _must_understand(block, version)
    return Envelope(version, headers, tuple(_children_without_text(children[0], "Body", version)))


def _children_without_text(part: etree._Element, name: str, version: SoapVersion) -> list[etree._Element]:
    """
    The Envelope's, Header's or Body's child elements; text directly inside it is refused.

    Only child elements are carried: text before the first child was dropped, text after one went along
    with it only while the envelope kept its version (a converted copy has no tail), data silently lost
    or not, by chance.
    """
    text = part.text
    if text is not None and text.strip(_XML_SPACE):
        raise SoapError(SoapErrorKind.INVALID_MESSAGE, f"text directly inside the {name}", version)
    children = list(part)
    for child in children:
        text = child.tail
        if text is not None and text.strip(_XML_SPACE):
            raise SoapError(SoapErrorKind.INVALID_MESSAGE, f"text directly inside the {name}", version)
    return children


def parse_envelope(
    data: bytes,
    expected: SoapVersion | None = None,
    limits: XmlLimits = XmlLimits(),  # noqa: B008 - frozen value
    charset: str | None = None,
) -> Envelope:
    """
    Parse an envelope received from the network through the hardened parser.

    @raise SoapError: C{InvalidMessage} (with the broken rule in C{xml_rule}) or C{VersionMismatch}.
    """
    try:
        root = parse_xml(data, limits, charset)
    except XmlRejected as e:
        raise SoapError(SoapErrorKind.INVALID_MESSAGE, str(e), expected, e.rule) from None
    # parse_xml accepted the bytes as UTF-8 when no charset (or UTF-8) was declared: an attribute named
    # encodingStyle would then have its name in the bytes as they are.
    utf8 = charset is None or charset.strip().strip('"').lower() in ("utf-8", "utf8")
    envelope = envelope_from_element(
        root, expected, may_have_encoding_style=not utf8 or b"encodingStyle" in data
    )
    _check_inherited_declarations(envelope, limits, len(data))
    return envelope


_ESCAPED_IN_ATTRIBUTES: Final = ("&", "<", ">", '"', "\t", "\n", "\r")


def _declarations_bytes(nsmap: dict[str | None, str]) -> int:
    """At least as many bytes as C{nsmap}'s declarations take once written (C{ xmlns:p="uri"}, escaped)."""
    size = 0
    for prefix, uri in nsmap.items():
        size += 10 + len(prefix or "") + len(uri.encode("utf-8"))
        size += 5 * sum(uri.count(c) for c in _ESCAPED_IN_ATTRIBUTES)  # "&quot;" for '"'
    return size


def _check_inherited_declarations(envelope: Envelope, limits: XmlLimits, size: int) -> None:
    """
    Refuse an envelope whose blocks would carry more than C{limits.max_bytes} of inherited declarations.

    Each header block and body child is written on its own with every namespace declaration in scope
    (L{Envelope.to_bytes}), so what the Envelope, Header and Body declare is written once per block: one
    long namespace name and thousands of empty blocks made a 60 KB message a 150 MB envelope. The repeated
    declarations may add at most the message limit again.

    @param size: the message's length in bytes. Every declaration in scope is written in it, and none
        takes more than six times its bytes there once written again (L{_declarations_bytes} counts
        C{&quot;} and the like as six bytes, UTF-8 takes at most three for a UTF-16 character's two),
        so a message whose blocks times six times its size is within the limit needs no count.
    @raise SoapError: C{InvalidMessage} with the size rule (answered with C{MessageTooLarge}).
    """
    if (len(envelope.headers) + len(envelope.body)) * 6 * size <= limits.max_bytes:
        return
    inherited = 0
    for blocks in (envelope.headers, envelope.body):
        if blocks:
            parent = blocks[0].getparent()
            if parent is not None:
                inherited += len(blocks) * _declarations_bytes(parent.nsmap)
    if inherited > limits.max_bytes:
        raise SoapError(
            SoapErrorKind.INVALID_MESSAGE,
            f"the namespace declarations its header blocks and body children inherit come to {inherited} "
            f"bytes once written on each; the limit is {limits.max_bytes}",
            envelope.version,
            Rule.SIZE,
        )


_MUST_UNDERSTAND_UP = {"1": "true", "0": "false", "true": "true", "false": "false"}
_MUST_UNDERSTAND_DOWN = {"1": "1", "0": "0", "true": "1", "false": "0"}


def _must_understand(block: etree._Element, version: SoapVersion) -> str | None:
    """The block's C{mustUnderstand} without surrounding spaces, if it has one; a boolean or L{SoapError}."""
    must: str | None = block.get(_MUST_UNDERSTAND_ATTRIBUTES[version])
    if must is None:
        return None
    must = must.strip()
    if must not in _MUST_UNDERSTAND_UP:
        raise SoapError(
            SoapErrorKind.INVALID_MESSAGE, f"mustUnderstand value {must[:20]!r} is not a boolean", version
        )
    return must


def _convert_header(block: etree._Element, source: SoapVersion, target: SoapVersion) -> etree._Element:
    must = _must_understand(block, source)  # checked again: an envelope built in code was not parsed
    new = standalone(block)
    if must is not None:
        del new.attrib[source.qname("mustUnderstand")]
        table = _MUST_UNDERSTAND_UP if target is SoapVersion.SOAP12 else _MUST_UNDERSTAND_DOWN
        new.set(target.qname("mustUnderstand"), table[must])
    if source is SoapVersion.SOAP11:
        actor = new.attrib.pop(source.qname("actor"), None)
        if actor is not None:
            new.set(target.qname("role"), SOAP12_NEXT if actor == SOAP11_NEXT else actor)
    else:
        role = new.attrib.pop(source.qname("role"), None)
        new.attrib.pop(source.qname("relay"), None)
        if role is not None and role != SOAP12_ULTIMATE_RECEIVER:
            new.set(target.qname("actor"), SOAP11_NEXT if role == SOAP12_NEXT else role)
    return new


def convert(envelope: Envelope, target: SoapVersion) -> Envelope:
    """
    Move an envelope to another SOAP version (spec 6.2).

    Header attributes are translated (C{mustUnderstand} C{"1"}/C{"0"} against C{"true"}/C{"false"},
    C{actor} against C{role}, the "next" URIs mapped onto each other); body children are moved as they are.
    Faults are not translated here: see L{bindings.faults.reply_to_soap11}.
    """
    if envelope.version is target:
        return envelope
    headers = tuple(_convert_header(h, envelope.version, target) for h in envelope.headers)
    return Envelope(target, headers, tuple(standalone(b) for b in envelope.body))


def to_soap12(envelope: Envelope) -> Envelope:
    """The SOAP 1.2 form of an envelope, as listeners receive it."""
    return convert(envelope, SoapVersion.SOAP12)


@dataclass(frozen=True, slots=True)
class ContentType:
    """
    A parsed HTTP C{Content-Type}.

    @ivar media_type: lower-cased C{type/subtype}.
    @ivar params: parameters with lower-cased names and unquoted values.
    """

    media_type: str
    params: Mapping[str, str]


_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A value is a quoted string or whatever comes before the next ';' (a token alternative would stop an
# unquoted action such as urn:a/Add at its first ':').
_PARAM = re.compile(r"\s*;\s*(" + _TCHARS + r')\s*=\s*("(?:[^"\\]|\\.)*"(?=\s*(?:;|$))|[^;]*)')


def parse_content_type(value: str) -> ContentType:
    """
    Parse a C{Content-Type} header value.

    @raise SoapError: C{InvalidMessage} when the value has no C{type/subtype}.
    """
    media, _, rest = value.partition(";")
    media = media.strip().lower()
    if not re.fullmatch(rf"{_TCHARS}/{_TCHARS}", media):
        raise SoapError(SoapErrorKind.INVALID_MESSAGE, "the Content-Type is not a media type")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest if rest else ""):
        raw = match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(match.group(1).lower(), raw)
    return ContentType(media, params)


@dataclass(frozen=True, slots=True)
class HttpSoapRequest:
    """
    What the HTTP framing of a SOAP request says.

    @ivar version: SOAP 1.1 for C{text/xml}, 1.2 for C{application/soap+xml}.
    @ivar charset: the declared charset, or C{None}.
    @ivar media_action: the SOAP 1.2 C{action} media-type parameter, or C{None}.
    @ivar soap_action: the SOAP 1.1 C{SOAPAction} header without quotes, C{None} when absent or empty.
    """

    version: SoapVersion
    charset: str | None
    media_action: str | None
    soap_action: str | None


def soap_action_value(header: str | None) -> str | None:
    """The action in a C{SOAPAction} header: quotes removed; an empty value means no action (spec 6.4)."""
    if header is None:
        return None
    value = header.strip()
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1].strip()
    return value or None


def classify_request(content_type: str | None, soap_action: str | None = None) -> HttpSoapRequest:
    """
    Tell the SOAP version and action sources of an HTTP request from its headers.

    @raise SoapError: C{InvalidMessage} for a media type that is neither SOAP 1.1 nor SOAP 1.2.
    """
    if not content_type:
        raise SoapError(SoapErrorKind.INVALID_MESSAGE, "the request has no Content-Type")
    parsed = parse_content_type(content_type)
    for version in SoapVersion:
        if parsed.media_type == version.media_type:
            break
    else:
        raise SoapError(
            SoapErrorKind.INVALID_MESSAGE,
            f"media type {parsed.media_type[:60]!r} is neither text/xml (SOAP 1.1) nor application/soap+xml (SOAP 1.2)",
        )
    media_action = parsed.params.get("action") if version is SoapVersion.SOAP12 else None
    return HttpSoapRequest(
        version=version,
        charset=parsed.params.get("charset"),
        media_action=media_action or None,
        soap_action=soap_action_value(soap_action),
    )


_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x20, 0x7F))


def content_type_header(version: SoapVersion, action: str | None = None) -> str:
    """The C{Content-Type} for a UTF-8 envelope of C{version}, with the 1.2 C{action} parameter if given."""
    value = f"{version.media_type}; charset=utf-8"
    if action is not None and version is SoapVersion.SOAP12:
        # An action is an IRI: as a URI (RFC 3987 3.1) it fits a header, whose bytes are Latin-1 at most.
        action = quote(action, safe=_PRINTABLE_ASCII)
        escaped = action.replace("\\", "\\\\").replace('"', '\\"')
        value += f'; action="{escaped}"'
    return value
