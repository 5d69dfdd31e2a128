"""The hardened XML parser (bindings.safexml): refusals name a rule, and what it accepts lxml's plain parse agrees with."""

from __future__ import annotations

from lxml import etree

from bindings.safexml import (
    CHUNK_SIZE,
    MAX_NAMESPACES_IN_SCOPE,
    Rule,
    XmlLimits,
    XmlRejected,
    _feed,
    new_pull_parser,
    parse_xml,
)
from tests.fuzz.choices import Choices

MAX_BYTES = 3 * CHUNK_SIZE
# The plain parse to compare with: lxml's defaults, minus what would reach outside or expand entities.
_REFERENCE = dict(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)

_NAMES = ("a", "b", "p:c", "q:d", "p:a", "xml:lang", "r", "p:", ":x", "1", "a-b")
_URIS = ("urn:p", "urn:q", "", "rel", "http://x/", "urn:p", "a b", "%41")
_TEXTS = (
    "t",
    " ",
    "&amp;",
    "&lt;",
    "&#x41;",
    "&#0;",
    "&e;",
    "]]>",
    "<![CDATA[c<d]]>",
    "&#x10FFFF;",
    "\u00e9",
    "\r\n",
)
_PROLOGS = (
    "",
    '<?xml version="1.0"?>',
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<?xml version="1.0" encoding="ISO-8859-1"?>',
    '<!DOCTYPE r [<!ENTITY e "x">]>',
    '<!DOCTYPE r SYSTEM "http://x/d.dtd">',
    "<?pi x?>",
    "<!-- c -->",
    '<?xml version="1.1"?>',
)


def _element(fdp: Choices, depth: int, out: list[str]) -> None:
    name = _NAMES[fdp.int(0, len(_NAMES) - 1)]
    out.append(f"<{name}")
    for _ in range(fdp.int(0, 3)):
        choice = fdp.int(0, 2)
        uri = _URIS[fdp.int(0, len(_URIS) - 1)]
        if choice == 0:
            out.append(f' xmlns:{"pq"[fdp.int(0, 1)]}="{uri}"')
        elif choice == 1:
            out.append(f' xmlns="{uri}"')
        else:
            out.append(f' {_NAMES[fdp.int(0, len(_NAMES) - 1)]}="{_TEXTS[fdp.int(0, 5)]}"')
    if fdp.flag() or depth > 40:
        out.append("/>")
        return
    out.append(">")
    for _ in range(fdp.int(0, 3)):
        kind = fdp.int(0, 3)
        if kind == 0:
            out.append(_TEXTS[fdp.int(0, len(_TEXTS) - 1)])
        elif kind == 1:
            out.append(_PROLOGS[fdp.int(6, 7)])
        else:
            _element(fdp, depth + 1, out)
    out.append(f"</{name}>")


def _document(fdp: Choices) -> bytes:
    out = [_PROLOGS[fdp.int(0, len(_PROLOGS) - 1)]]
    if fdp.flag():  # move the incremental parse's chunk boundaries through the document
        out.append(f"<!--{'x' * fdp.int(0, CHUNK_SIZE)}-->")
    _element(fdp, 1, out)
    out.append(_PROLOGS[fdp.int(0, len(_PROLOGS) - 1)] if fdp.flag() else "")
    return "".join(out).encode("utf-8")


def _depth(element: etree._Element) -> int:
    return 1 + max((_depth(c) for c in element if isinstance(c.tag, str)), default=0)


def _reference(data: bytes) -> etree._Element | None:
    """The plain parse's tree, or C{None} when it is not (namespace-)well-formed."""
    parser = etree.XMLParser(**_REFERENCE)  # type: ignore[arg-type]
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return None
    # lxml raises only when the last thing libxml2 logged is an error; an earlier one still counts
    if any(entry.level >= etree.ErrorLevels.ERROR for entry in parser.error_log):
        return None
    return root


def check(data: bytes) -> None:
    if not data:
        return
    fdp = Choices(data)
    max_depth = fdp.int(1, 12)
    document = _document(fdp) if fdp.flag() else fdp.rest()
    limits = XmlLimits(max_bytes=MAX_BYTES, max_depth=max_depth)
    reference = _reference(document)
    try:
        root = parse_xml(document, limits)
    except XmlRejected as e:
        if e.rule is Rule.WELL_FORMED and reference is not None:
            # the plain parse took it: the hardened one must have had a hardening reason
            raise AssertionError(f"refused as not well-formed, but lxml parses it: {e}") from None
        if e.rule is Rule.DEPTH and reference is not None:
            assert _depth(reference) > max_depth, (_depth(reference), max_depth)
        return
    assert reference is not None, "accepted what lxml's plain parse refuses"
    assert etree.tostring(root) == etree.tostring(reference)
    assert _depth(root) <= max_depth
    docinfo = root.getroottree().docinfo
    assert not docinfo.doctype
    assert next(root.iter(etree.PI, etree.Entity), None) is None
    assert len(root.nsmap) <= MAX_NAMESPACES_IN_SCOPE
    # the incremental parse (documents with many "<") takes the same documents as the one-shot parse
    try:
        fed = _feed(new_pull_parser(), document, max_depth)
    except XmlRejected as e:
        raise AssertionError(f"the incremental parse refuses what the one-shot parse takes: {e}") from None
    assert etree.tostring(fed) == etree.tostring(root)
