"""
The only XML parser factory for documents that come from the network.

Envelopes, replies and WSDL uploads all go through L{parse_xml}: a size check before any byte is parsed,
an incremental parse with a depth counter, and a look at the finished tree for the constructs SOAP forbids
(DOCTYPE, entity references, processing instructions). The lxml settings are the hardened set of spec
section 11; C{collect_ids=False} is deliberately absent because with libxml2 older than 2.15 it makes lxml
load the external DTD subset despite C{load_dtd=False}. Nothing here ever calls C{xinclude()}, follows a
C{schemaLocation} or runs XSLT.
"""

from __future__ import annotations

import codecs
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from lxml import etree

HARDENED_SETTINGS: Final[dict[str, bool]] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
    "recover": False,
    "remove_pis": False,
    "remove_comments": True,
}
"""Keyword arguments for every lxml parser built here (spec section 11)."""

MAX_DEPTH_CAP: Final = 256
"""Hard cap on element depth; libxml2's own limit without C{huge_tree}."""

MAX_NAMESPACES_IN_SCOPE: Final = 128
"""Most namespace declarations in scope at any element (its own and its ancestors', redeclarations too)."""

DEFAULT_MAX_BYTES: Final = 64 * 1024
DEFAULT_MAX_DEPTH: Final = 64
CHUNK_SIZE: Final = 4096

DECLARED_ENCODING: Final = re.compile(rb"^<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._\-]+)[\"']")
"""The encoding an XML declaration at the start of a document names (group 1)."""
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF16_XMLNS: Final = b"x\0m\0l\0n\0s"  # in UTF-16 LE and BE alike


class Rule(Enum):
    """The hardening rule a rejected document broke; its value is the text used in faults and logs."""

    SIZE = "document too large"
    DEPTH = "elements nested too deep"
    WELL_FORMED = "not well-formed XML"
    DOCTYPE = "document type declarations are not allowed"
    ENTITY = "entity references are not allowed"
    PROCESSING_INSTRUCTION = "processing instructions are not allowed"
    ENCODING = "unsupported or inconsistent character encoding"
    NAMESPACES = "too many namespace declarations in scope"


class XmlRejected(ValueError):
    """
    A document from the network was refused; the transport answers it with an C{InvalidMessage} fault.

    @ivar rule: which rule of spec section 11 was broken.
    @ivar detail: a short, content-free explanation (never the document's text).
    """

    def __init__(self, rule: Rule, detail: str = "") -> None:
        super().__init__(f"{rule.value}: {detail}" if detail else rule.value)
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """
    Per-document limits.

    @ivar max_bytes: the largest document accepted (the entity's C{max_message_bytes}, or the WSDL cap).
    @ivar max_depth: the deepest element nesting accepted, at most L{MAX_DEPTH_CAP}.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if not 1 <= self.max_depth <= MAX_DEPTH_CAP:
            raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_CAP}")


@functools.lru_cache(maxsize=128)
def limits_for(max_bytes: int, max_depth: int) -> XmlLimits:
    """The (shared, immutable) L{XmlLimits} for these numbers: connections ask for the same few per message."""
    return XmlLimits(max_bytes=max_bytes, max_depth=max_depth)


def check_size(declared_length: int | None, limits: XmlLimits) -> None:
    """
    Refuse a document by its announced length (C{Content-Length}, frame length) before reading it.

    @raise XmlRejected: with L{Rule.SIZE} when the length is over the limit.
    """
    if declared_length is not None and declared_length > limits.max_bytes:
        raise XmlRejected(Rule.SIZE, f"{declared_length} bytes is over the limit of {limits.max_bytes}")


def new_pull_parser() -> etree.XMLPullParser:
    """
    Build a hardened incremental parser that reports start and end events, and namespace declarations.

    Exposed so tests can attach a spy resolver and prove nothing external is ever loaded.
    """
    return etree.XMLPullParser(events=("start", "end", "start-ns", "end-ns"), **HARDENED_SETTINGS)


def new_document_parser() -> etree.XMLParser:
    """
    Build the hardened one-shot parser used for documents too small to break the depth rule.

    Exposed, like L{new_pull_parser}, so tests can attach a spy resolver.
    """
    return etree.XMLParser(**HARDENED_SETTINGS)


class _ReusedDocumentParser(threading.local):
    """One one-shot parser per thread (a parser is reusable; building one costs as much as a parse)."""

    factory: Callable[[], etree.XMLParser] | None = None
    parser: etree.XMLParser | None = None

    def get(self) -> etree.XMLParser:
        factory = new_document_parser
        if self.parser is None or self.factory is not factory:
            self.parser = factory()
            self.factory = factory
        return self.parser


class _ReusedParser(threading.local):
    """
    One pull parser per thread, reused from document to document.

    Building an lxml parser costs about as much as parsing a small envelope. A parser that finished a
    document (C{close()}) is reset and can take the next one; one that failed mid-document is thrown away.
    The factory is remembered so that a test replacing L{new_pull_parser} gets parsers from its replacement.
    """

    factory: Callable[[], etree.XMLPullParser] | None = None
    parser: etree.XMLPullParser | None = None

    def take(self) -> etree.XMLPullParser:
        factory = new_pull_parser
        parser = self.parser
        if parser is None or self.factory is not factory:
            parser = factory()
            self.factory = factory
        self.parser = None  # taken: a failure leaves nothing behind to reuse
        return parser

    def give_back(self, parser: etree.XMLPullParser) -> None:
        self.parser = parser


_reused = _ReusedParser()
_reused_document = _ReusedDocumentParser()


def new_tree_parser() -> etree.XMLParser:
    """A hardened non-incremental parser, for documents we produced ourselves (golden files, tests)."""
    return etree.XMLParser(**HARDENED_SETTINGS)


def _check_encoding(data: bytes, charset: str | None) -> None:
    """
    Enforce spec 11.4: UTF-8 by default, UTF-16 only when the transport declared it.

    The XML declaration, if any, must agree with the transport; otherwise libxml2 would silently decode
    with whatever the document claims.
    """
    wanted = (charset or "utf-8").strip().strip('"').lower()
    if wanted in ("utf-8", "utf8"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise XmlRejected(Rule.ENCODING, "bytes are not valid UTF-8") from None
        if b"\0" in data:
            # XML has no NUL character; ASCII-only UTF-16 or UTF-32 without a byte order mark is valid
            # UTF-8 byte for byte, and libxml2 would detect and decode it from its first bytes.
            raise XmlRejected(Rule.ENCODING, "a NUL byte: not UTF-8 XML (UTF-16 or UTF-32 without a BOM?)")
        match = DECLARED_ENCODING.match(data.removeprefix(codecs.BOM_UTF8))
        if match and match.group(1).lower() not in (b"utf-8", b"utf8"):
            raise XmlRejected(Rule.ENCODING, "the XML declaration names another encoding than UTF-8")
    elif wanted == "utf-16":
        if not data.startswith(_UTF16_BOMS):
            raise XmlRejected(Rule.ENCODING, "UTF-16 documents must start with a byte order mark")
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise XmlRejected(Rule.ENCODING, "bytes are not valid UTF-16") from None
        if "\0" in text:
            # UTF-32's little-endian byte order mark starts with UTF-16's, and libxml2 would decode the
            # document as UTF-32; as UTF-16 it holds NUL characters, which no XML document has.
            raise XmlRejected(Rule.ENCODING, "a NUL character: not UTF-16 XML (UTF-32?)")
        match = DECLARED_ENCODING.match(text.encode("utf-8", errors="replace"))
        if match and not match.group(1).lower().startswith(b"utf-16"):
            raise XmlRejected(Rule.ENCODING, "the XML declaration names another encoding than UTF-16")
    else:
        raise XmlRejected(Rule.ENCODING, f"charset {wanted[:40]!r} is not supported (use UTF-8 or UTF-16)")


def _feed(parser: etree.XMLPullParser, data: bytes, max_depth: int) -> Any:
    depth = 0
    in_scope = 0  # namespace declarations of the open elements (an element's come before its start)

    def count() -> None:
        nonlocal depth, in_scope
        for event, _element in parser.read_events():
            if event == "start":
                depth += 1
                if depth > max_depth:
                    raise XmlRejected(Rule.DEPTH, f"deeper than {max_depth} elements")
            elif event == "end":
                depth -= 1
            elif event == "start-ns":
                in_scope += 1
                if in_scope > MAX_NAMESPACES_IN_SCOPE:
                    raise XmlRejected(Rule.NAMESPACES, f"more than {MAX_NAMESPACES_IN_SCOPE} at one element")
            else:
                in_scope -= 1

    try:
        if len(data) <= CHUNK_SIZE:
            parser.feed(data)
            count()
        else:
            for offset in range(0, len(data), CHUNK_SIZE):
                parser.feed(data[offset : offset + CHUNK_SIZE])
                count()
        root = parser.close()
        count()
        _check_errors(parser.feed_error_log)
    except etree.XMLSyntaxError as e:
        # libxml2 may stop at its own depth limit inside one chunk; the events it queued tell us so.
        count()
        message = str(e)
        if "depth" in message.lower():
            raise XmlRejected(Rule.DEPTH, "deeper than the parser allows") from None
        raise XmlRejected(Rule.WELL_FORMED, message.split("\n")[0][:200]) from None
    return root


def _check_errors(log: Any) -> None:
    """
    Refuse a document the parser logged an error for without raising (namespace errors, spec 11.1).

    libxml2 reports an undeclared prefix or a namespace name that is not a URI as an error but goes on,
    and lxml raises only when the last message it logged is an error: a warning after it (a relative
    namespace name such as C{xmlns="n"}) let the document through, with tags like C{"m:Add"} in no
    namespace that lxml can neither copy nor serialise as namespace-well-formed XML.
    """
    for entry in log:
        if entry.level >= etree.ErrorLevels.ERROR:
            raise XmlRejected(Rule.WELL_FORMED, str(entry.message)[:200])


def _check_tree(root: etree._Element) -> None:
    """Reject what SOAP forbids, looking at the root's siblings as well as its descendants (spec 11.3)."""
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlRejected(Rule.DOCTYPE)
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        if isinstance(sibling, etree._ProcessingInstruction):
            raise XmlRejected(Rule.PROCESSING_INSTRUCTION, "next to the root element")
        if isinstance(sibling, etree._Entity):
            raise XmlRejected(Rule.ENTITY)
    found = next(root.iter(etree.Entity, etree.ProcessingInstruction), None)  # one walk for both
    if isinstance(found, etree._Entity):
        raise XmlRejected(Rule.ENTITY)
    if found is not None:
        raise XmlRejected(Rule.PROCESSING_INSTRUCTION)


def _declarations_at_most(data: bytes, limit: int) -> bool:
    """Whether the document has at most C{limit} namespace declarations (each is an C{xmlns} in its text)."""
    if data.count(b"=") <= limit:  # every declaration has one "=" byte, in UTF-16 too: a fifth of the cost
        return True
    return data.count(b"xmlns") + data.count(_UTF16_XMLNS) <= limit


def parse_xml(data: bytes, limits: XmlLimits = XmlLimits(), charset: str | None = None) -> etree._Element:
    """
    Parse one untrusted document, applying every rule of spec section 11 in order.

    @param data: the complete document as received.
    @param charset: the C{charset} parameter of the HTTP C{Content-Type}, or C{None} (UTF-8; the only
        choice on WebSocket).
    @return: the root element; comments are already removed.
    @raise XmlRejected: naming the rule that was broken.
    """
    check_size(len(data), limits)
    _check_encoding(data, charset)
    if data.count(b"<") <= limits.max_depth and _declarations_at_most(data, MAX_NAMESPACES_IN_SCOPE):
        # Every element starts with a "<" byte (in UTF-16 too), so this document cannot nest deeper than
        # the limit, nor have more namespace declarations in scope than it has "xmlns": the incremental
        # parse and its counters have nothing to catch. Same settings, same checks after the parse; a
        # fraction of the cost for a small envelope.
        document_parser = _reused_document.get()
        try:
            root = etree.fromstring(data, document_parser)
        except etree.XMLSyntaxError as e:
            raise XmlRejected(Rule.WELL_FORMED, str(e).split("\n")[0][:200]) from None
        _check_errors(document_parser.error_log)
    else:
        parser = _reused.take()
        root = _feed(parser, data, limits.max_depth)
        _reused.give_back(parser)  # only after a clean close(): the parser is reset
    _check_tree(root)
    return root  # type: ignore[no-any-return]
