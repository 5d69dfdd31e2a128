"""
Tests for L{bindings.safexml}: every hostile document of spec section 11 and research notes section 10.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings import safexml
from bindings.safexml import Rule, XmlLimits, XmlRejected, check_size, parse_xml

SECRET = "TOP-SECRET-7f3a9c"


class SpyResolver(etree.Resolver):
    """Records every external resource lxml asks for, and refuses to provide any."""

    def __init__(self) -> None:
        super().__init__()
        self.requested: list[str] = []

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        self.requested.append(system_url)
        return self.resolve_string(f"<!ENTITY leak '{SECRET}'>", context)


class HostileDocumentTests(SynchronousTestCase):
    """Hostile payloads are refused and never read anything."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.remove(os.path.join(directory, n)) for n in os.listdir(directory)])
        self.secret_path = os.path.join(directory, "secret.txt")
        with open(self.secret_path, "w") as f:
            f.write(SECRET)
        self.dtd_path = os.path.join(directory, "ext.dtd")
        with open(self.dtd_path, "w") as f:
            f.write(f'<!ENTITY ext SYSTEM "file://{self.secret_path}"><!ATTLIST r injected CDATA "{SECRET}">')
        self.spy = SpyResolver()
        original = safexml.new_pull_parser

        def spying_parser() -> etree.XMLPullParser:
            parser = original()
            parser.resolvers.add(self.spy)
            return parser

        self.patch(safexml, "new_pull_parser", spying_parser)
        original_document = safexml.new_document_parser

        def spying_document_parser() -> etree.XMLParser:
            parser = original_document()
            parser.resolvers.add(self.spy)
            return parser

        self.patch(safexml, "new_document_parser", spying_document_parser)

    def assertRejected(
        self,
        data: bytes,
        rule: Rule | set[Rule],
        limits: XmlLimits = XmlLimits(),  # noqa: B008
    ) -> XmlRejected:
        error = self.assertRaises(XmlRejected, parse_xml, data, limits)
        self.assertIn(error.rule, rule if isinstance(rule, set) else {rule})
        self.assertNotIn(SECRET, str(error))
        self.assertEqual(self.spy.requested, [])
        return error

    def test_xxe_file_read(self) -> None:
        """An internal subset with an external entity is refused; the file content never appears."""
        data = (f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{self.secret_path}">]><r>&x;</r>').encode()
        self.assertRejected(data, Rule.DOCTYPE)

    def test_xxe_entity_left_unexpanded(self) -> None:
        """Even before the DOCTYPE check, the parser settings keep the entity unexpanded."""
        data = f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{self.secret_path}">]><r>&x;</r>'.encode()
        parser = safexml.new_pull_parser()
        parser.feed(data)
        root = parser.close()
        self.assertNotIn(SECRET, etree.tostring(root).decode())
        self.assertEqual(len(list(root.iter(etree.Entity))), 1)

    def test_billion_laughs(self) -> None:
        """
        The classic exponential entity bomb is refused.

        libxml2's amplification limit may stop it while parsing (not well-formed) before the DOCTYPE check.
        """
        lines = ['<!ENTITY lol0 "lol">']
        for i in range(1, 10):
            lines.append(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">')
        data = f"<!DOCTYPE r [{''.join(lines)}]><r>&lol9;</r>".encode()
        self.assertRejected(data, {Rule.DOCTYPE, Rule.WELL_FORMED}, XmlLimits(max_bytes=1 << 20))

    def test_quadratic_blowup(self) -> None:
        """A large entity referenced many times is refused without expansion."""
        data = ('<!DOCTYPE r [<!ENTITY a "' + "x" * 50_000 + '">]><r>' + "&a;" * 20_000 + "</r>").encode()
        self.assertRejected(data, {Rule.DOCTYPE, Rule.WELL_FORMED}, XmlLimits(max_bytes=1 << 20))

    def test_external_dtd_file(self) -> None:
        """An external DTD on disk is neither loaded nor applied: no attribute default, no entity."""
        data = f'<!DOCTYPE r SYSTEM "file://{self.dtd_path}"><r>&ext;</r>'.encode()
        self.assertRejected(data, Rule.DOCTYPE)

    def test_external_dtd_url(self) -> None:
        """An external DTD by http URL is never fetched."""
        data = b'<!DOCTYPE r SYSTEM "http://example.invalid/evil.dtd"><r/>'
        self.assertRejected(data, Rule.DOCTYPE)

    def test_spy_sees_unsafe_parser(self) -> None:
        """
        The spy resolver does catch external loads: with C{collect_ids=False} lxml loads the DTD anyway.

        This makes the "nothing fetched" assertions above meaningful and documents why the hardened settings
        leave C{collect_ids} alone.
        """
        spy = SpyResolver()
        parser = etree.XMLParser(**safexml.HARDENED_SETTINGS, collect_ids=False)
        parser.resolvers.add(spy)
        if etree.LIBXML_VERSION >= (2, 15):
            raise self.skipTest("libxml2 2.15 fixed the collect_ids loophole")
        etree.fromstring(f'<!DOCTYPE r SYSTEM "file://{self.dtd_path}"><r/>'.encode(), parser)
        self.assertEqual(spy.requested, [f"file://{self.dtd_path}"])

    def test_hardened_settings_lack_collect_ids(self) -> None:
        """The factory never passes C{collect_ids}, and matches the spec's settings exactly."""
        self.assertNotIn("collect_ids", safexml.HARDENED_SETTINGS)
        self.assertEqual(
            safexml.HARDENED_SETTINGS,
            {
                "resolve_entities": False,
                "no_network": True,
                "load_dtd": False,
                "dtd_validation": False,
                "attribute_defaults": False,
                "huge_tree": False,
                "recover": False,
                "remove_pis": False,
                "remove_comments": True,
            },
        )

    def test_depth_100(self) -> None:
        """Depth 100 exceeds the default limit of 64."""
        self.assertRejected(b"<a>" * 100 + b"</a>" * 100, Rule.DEPTH)

    def test_depth_at_limit(self) -> None:
        """Exactly C{max_depth} levels are accepted; one more is refused."""
        self.assertEqual(parse_xml(b"<a>" * 64 + b"</a>" * 64).tag, "a")
        self.assertRejected(b"<a>" * 65 + b"</a>" * 65, Rule.DEPTH)

    def test_depth_300(self) -> None:
        """Depth 300 is refused as too deep even with the hard cap as the limit."""
        self.assertRejected(b"<a>" * 300 + b"</a>" * 300, Rule.DEPTH, XmlLimits(max_depth=256))

    def test_depth_5000(self) -> None:
        """Depth 5000 is refused as too deep, not as some other parse error."""
        self.assertRejected(b"<a>" * 5000 + b"</a>" * 5000, Rule.DEPTH, XmlLimits(max_bytes=1 << 20))

    def test_unclosed_depth_in_one_chunk(self) -> None:
        """Deep nesting that libxml2 stops inside a chunk is still reported as depth."""
        self.assertRejected(b"<a>" * 1000, Rule.DEPTH, XmlLimits(max_depth=256))

    def test_pi_inside(self) -> None:
        """A processing instruction inside the document is refused."""
        self.assertRejected(b"<r><?evil data?></r>", Rule.PROCESSING_INSTRUCTION)

    def test_pi_before_root(self) -> None:
        """A processing instruction before the root element (a sibling) is refused."""
        self.assertRejected(b"<?evil data?><r/>", Rule.PROCESSING_INSTRUCTION)

    def test_pi_after_root(self) -> None:
        """A processing instruction after the root element is refused."""
        self.assertRejected(b"<r/><?evil data?>", Rule.PROCESSING_INSTRUCTION)

    def test_xml_declaration_is_not_a_pi(self) -> None:
        """The XML declaration is allowed."""
        self.assertEqual(parse_xml(b'<?xml version="1.0" encoding="utf-8"?><r/>').tag, "r")

    def test_huge_text_node(self) -> None:
        """An 11 MB text node is refused even when the size limit would allow it."""
        data = b"<r>" + b"x" * 11_000_000 + b"</r>"
        self.assertRejected(data, Rule.WELL_FORMED, XmlLimits(max_bytes=12_000_000))

    def test_xinclude_inert(self) -> None:
        """An XInclude element stays an ordinary element; the file is not read."""
        data = (
            f'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="file://{self.secret_path}"'
            ' parse="text"/></r>'
        ).encode()
        root = parse_xml(data)
        self.assertEqual(root[0].tag, "{http://www.w3.org/2001/XInclude}include")
        self.assertNotIn(SECRET, etree.tostring(root).decode())
        self.assertEqual(self.spy.requested, [])

    def test_comments_removed(self) -> None:
        """Comments anywhere are dropped from the tree rather than refused."""
        root = parse_xml(b"<!-- a --><r><!-- b --><c/></r><!-- c -->")
        self.assertEqual(etree.tostring(root), b"<r><c/></r>")
        self.assertEqual(list(root.itersiblings(preceding=True)), [])

    def test_not_well_formed(self) -> None:
        """Broken markup is refused as not well-formed."""
        self.assertRejected(b"<r><a></r>", Rule.WELL_FORMED)
        self.assertRejected(b"", Rule.WELL_FORMED)

    def test_undeclared_entity(self) -> None:
        """An entity reference without any DTD is not well-formed."""
        self.assertRejected(b"<r>&x;</r>", Rule.WELL_FORMED)


class LimitTests(SynchronousTestCase):
    """Size and limit values."""

    def test_size_before_parsing(self) -> None:
        """A document one byte over the limit is refused by size, whatever it holds."""
        error = self.assertRaises(
            XmlRejected, parse_xml, b"<r>" + b"x" * 100 + b"</r>", XmlLimits(max_bytes=106)
        )
        self.assertEqual(error.rule, Rule.SIZE)
        self.assertEqual(parse_xml(b"<r>" + b"x" * 100 + b"</r>", XmlLimits(max_bytes=107)).text, "x" * 100)

    def test_declared_length(self) -> None:
        """An announced length over the limit is refused before the body is read; unknown passes."""
        self.assertEqual(self.assertRaises(XmlRejected, check_size, 65537, XmlLimits()).rule, Rule.SIZE)
        check_size(65536, XmlLimits())
        check_size(None, XmlLimits())

    def test_limits_for(self) -> None:
        """L{safexml.limits_for} gives the limits asked for, checked like any other, and shares them."""
        limits = safexml.limits_for(1000, 8)
        self.assertEqual(limits, XmlLimits(max_bytes=1000, max_depth=8))
        self.assertIs(safexml.limits_for(1000, 8), limits)
        self.assertRaises(ValueError, safexml.limits_for, 1000, 257)
        self.assertEqual(
            self.assertRaises(XmlRejected, parse_xml, b"<r>" + b" " * 995 + b"</r>", limits).rule, Rule.SIZE
        )

    def test_limits_bounds(self) -> None:
        """Depth above the hard cap of 256 or a non-positive size cannot be configured."""
        self.assertRaises(ValueError, XmlLimits, max_depth=257)
        self.assertRaises(ValueError, XmlLimits, max_depth=0)
        self.assertRaises(ValueError, XmlLimits, max_bytes=0)
        self.assertEqual(XmlLimits(max_bytes=1, max_depth=1).max_depth, 1)
        self.assertEqual(XmlLimits(max_depth=256).max_depth, 256)


class EncodingTests(SynchronousTestCase):
    """Spec 11.4: UTF-8, or UTF-16 when the HTTP charset says so."""

    def test_utf8_default(self) -> None:
        """Without a charset, UTF-8 is parsed."""
        self.assertEqual(parse_xml("<r>é</r>".encode()).text, "é")

    def test_invalid_utf8(self) -> None:
        """Bytes that are not UTF-8 are refused by the encoding rule."""
        error = self.assertRaises(XmlRejected, parse_xml, b"<r>\xe9</r>")
        self.assertEqual(error.rule, Rule.ENCODING)

    def test_declaration_disagrees(self) -> None:
        """A document that declares Latin-1 is refused rather than decoded as Latin-1."""
        data = b'<?xml version="1.0" encoding="ISO-8859-1"?><r>x</r>'
        self.assertEqual(self.assertRaises(XmlRejected, parse_xml, data).rule, Rule.ENCODING)

    def test_charset_and_declaration_spellings(self) -> None:
        """Charset and declaration names are read in any case, quoted or not, with or without the hyphen."""
        utf8 = '<?xml version="1.0" encoding="UTF-8"?><r>\u00e9</r>'.encode()
        for charset in (None, "utf8", "UTF-8", '"utf-8"', " Utf-8 "):
            with self.subTest(charset=charset):
                self.assertEqual(parse_xml(utf8, charset=charset).text, "\u00e9")
        self.assertEqual(parse_xml(b"<?xml version='1.0' encoding='Utf8'?><r/>").tag, "r")
        self.assertEqual(parse_xml("<r>\u00e9</r>".encode("utf-16"), charset='"UTF-16"').text, "\u00e9")

    def test_invalid_utf16(self) -> None:
        """A lone surrogate under a UTF-16 charset is refused by the encoding rule."""
        data = codecs.BOM_UTF16_LE + "<r>".encode("utf-16-le") + b"\x00\xd8" + "</r>".encode("utf-16-le")
        error = self.assertRaises(XmlRejected, parse_xml, data, XmlLimits(), "utf-16")
        self.assertEqual((error.rule, error.detail), (Rule.ENCODING, "bytes are not valid UTF-16"))

    def test_utf16_declared(self) -> None:
        """UTF-16 with a byte order mark is accepted when the charset says UTF-16."""
        data = '<?xml version="1.0" encoding="UTF-16"?><r>é</r>'.encode("utf-16")
        self.assertEqual(parse_xml(data, charset="UTF-16").text, "é")
        self.assertEqual(parse_xml("<r>é</r>".encode("utf-16"), charset="utf-16").text, "é")

    def test_utf16_undeclared(self) -> None:
        """UTF-16 bytes without the charset are refused."""
        data = "<r>é</r>".encode("utf-16")
        self.assertEqual(self.assertRaises(XmlRejected, parse_xml, data).rule, Rule.ENCODING)

    def test_utf16_without_bom(self) -> None:
        """UTF-16 without a byte order mark is refused."""
        data = "<r/>".encode("utf-16-le")
        error = self.assertRaises(XmlRejected, parse_xml, data, XmlLimits(), "utf-16")
        self.assertEqual(error.rule, Rule.ENCODING)

    def test_utf32_is_not_utf16(self) -> None:
        """
        UTF-32 is refused under a UTF-16 charset: its little-endian byte order mark starts with UTF-16's.

        Decoded as UTF-16 it is text full of NULs, which no XML document holds; libxml2 itself would
        read it as UTF-32, whatever the transport said.
        """
        for text in ("<r>x</r>", '<?xml version="1.0" encoding="UTF-32"?><r>x</r>'):
            data = codecs.BOM_UTF32_LE + text.encode("utf-32-le")
            with self.subTest(text=text):
                error = self.assertRaises(XmlRejected, parse_xml, data, XmlLimits(), "utf-16")
                self.assertEqual(error.rule, Rule.ENCODING)
        self.assertEqual(
            parse_xml(codecs.BOM_UTF16_LE + "<r>\u0100x</r>".encode("utf-16-le"), charset="utf-16").text,
            "\u0100x",
        )

    def test_utf16_charset_utf8_declaration(self) -> None:
        """A UTF-16 document whose declaration claims UTF-8 is refused."""
        data = codecs.BOM_UTF16_LE + '<?xml version="1.0" encoding="utf-8"?><r/>'.encode("utf-16-le")
        error = self.assertRaises(XmlRejected, parse_xml, data, XmlLimits(), "utf-16")
        self.assertEqual(error.rule, Rule.ENCODING)

    def test_other_charset(self) -> None:
        """Charsets other than UTF-8 and UTF-16 are refused."""
        error = self.assertRaises(XmlRejected, parse_xml, b"<r/>", XmlLimits(), "iso-8859-1")
        self.assertEqual(error.rule, Rule.ENCODING)
        utf16 = "<r/>".encode("utf-16")  # what the UTF-16 rule would take
        for charset in ("iso-8859-1", "utf-32", "utf-16le"):
            with self.subTest(charset=charset):
                error = self.assertRaises(XmlRejected, parse_xml, utf16, XmlLimits(), charset)
                self.assertEqual(error.rule, Rule.ENCODING)

    def test_wide_encodings_without_bom(self) -> None:
        """
        UTF-16 and UTF-32 without a byte order mark, but with a declaration, are refused as UTF-8.

        Their ASCII-only bytes are valid UTF-8 (with NULs), and libxml2 would detect and decode them
        from their first bytes.
        """
        for encoding in ("utf-16-le", "utf-16-be", "utf-32-le"):
            data = '<?xml version="1.0"?><r>x</r>'.encode(encoding)
            with self.subTest(encoding=encoding):
                error = self.assertRaises(XmlRejected, parse_xml, data)
                self.assertEqual((error.rule, error.detail[:9]), (Rule.ENCODING, "a NUL byt"))


_xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    max_size=200,
)


class PropertyTests(SynchronousTestCase):
    """Properties over generated documents."""

    @given(text=_xml_text, depth=st.integers(min_value=1, max_value=64))
    def test_round_trip(self, text: str, depth: int) -> None:
        """Any text nested up to the depth limit survives a serialise-parse round trip."""
        root = etree.Element("r")
        leaf = root
        for _ in range(depth - 1):
            leaf = etree.SubElement(leaf, "n")
        leaf.text = text
        parsed = parse_xml(etree.tostring(root, encoding="utf-8"), XmlLimits(max_bytes=1 << 20))
        parsed_leaf = parsed
        for _ in range(depth - 1):
            parsed_leaf = parsed_leaf[0]
        self.assertEqual(parsed_leaf.text or "", text)
        self.assertEqual(len(parsed_leaf), 0)

    @given(depth=st.integers(min_value=65, max_value=400))
    def test_too_deep(self, depth: int) -> None:
        """Any nesting beyond the default limit is refused by the depth rule."""
        data = b"<a>" * depth + b"</a>" * depth
        self.assertEqual(self.assertRaises(XmlRejected, parse_xml, data).rule, Rule.DEPTH)

    @given(data=st.binary(max_size=300))
    def test_garbage(self, data: bytes) -> None:
        """Arbitrary bytes either parse or raise L{XmlRejected}; nothing else escapes."""
        try:
            parse_xml(data)
        except XmlRejected:
            pass


class ParserPathTests(SynchronousTestCase):
    """Small documents are parsed in one go, others incrementally; both apply every rule, parsers are reused."""

    def test_both_paths_same_tree(self) -> None:
        """A document under and one over max_depth '<' bytes parse to the same kind of tree."""
        small = b"<r><a>1</a></r>"
        large = b"<r>" + b"<a>1</a>" * 40 + b"</r>"
        self.assertEqual(etree.tostring(parse_xml(small, XmlLimits(max_depth=64))), small)
        self.assertEqual(etree.tostring(parse_xml(large, XmlLimits(max_depth=64))), large)

    def test_hostile_on_both_paths(self) -> None:
        """DOCTYPE, PI and malformed documents are refused whichever parser reads them."""
        padding = b"<p/>" * 70
        for body, rule in (
            (b'<!DOCTYPE r [<!ENTITY e "x">]><r>&e;%s</r>', Rule.DOCTYPE),
            (b"<r><?pi x?>%s</r>", Rule.PROCESSING_INSTRUCTION),
            (b"<r>%s<a></r>", Rule.WELL_FORMED),
        ):
            for fill in (b"", padding):
                error = self.assertRaises(XmlRejected, parse_xml, body % fill, XmlLimits(max_depth=64))
                self.assertEqual(error.rule, rule, (body, len(fill)))

    def test_namespace_errors_on_both_paths(self) -> None:
        """
        An undeclared prefix or a namespace name that is not a URI is not well-formed, whatever follows it.

        libxml2 logs these and goes on; lxml raised only when nothing was logged after them, so a relative
        namespace name later in the document (a warning) let an element named C{m:Add} in no namespace through.
        """
        padding = b"<p/>" * 70
        later = b'<w xmlns="relative"/>'
        for body in (
            b"<m:r>%s%s</m:r>",
            b'<r m:a="1">%s%s</r>',
            b'<r xmlns:m="urn>:m">%s%s</r>',
        ):
            for fill in (b"", padding):
                data = body % (fill, later)
                error = self.assertRaises(XmlRejected, parse_xml, data, XmlLimits(max_depth=64))
                self.assertEqual(error.rule, Rule.WELL_FORMED, data)
        for fill in (b"", padding):  # a relative namespace name alone is only a warning
            self.assertEqual(parse_xml(b"<r>%s%s</r>" % (fill, later), XmlLimits(max_depth=64)).tag, "r")

    def test_siblings_do_not_hide_depth(self) -> None:
        """Depth is nesting, not a balance of starts and ends: closed siblings before a deep branch count nothing."""
        for sibling in (b"<s/>", b"<s></s>", b"<s><t/></s>"):
            data = b"<r>" + sibling * 100 + b"<a>" * 64 + b"</a>" * 64 + b"</r>"
            with self.subTest(sibling=sibling):
                self.assertEqual(self.assertRaises(XmlRejected, parse_xml, data).rule, Rule.DEPTH)
        self.assertEqual(len(parse_xml(b"<r>" + b"<s/>" * 100 + b"<a>" * 63 + b"</a>" * 63 + b"</r>")), 101)

    def test_depth_stops_the_parse(self) -> None:
        """A document too deep in its first chunk is refused before the parser is fed the rest (spec 11, 2)."""
        fed: list[int] = []

        class CountingParser(etree.XMLPullParser):
            def feed(self, data: bytes) -> None:
                fed.append(len(data))
                super().feed(data)

        self.patch(
            safexml,
            "new_pull_parser",
            lambda: CountingParser(events=("start", "end"), **safexml.HARDENED_SETTINGS),
        )
        data = b"<a>" * 65 + b"<p/>" * (4 * safexml.CHUNK_SIZE) + b"</a>" * 65
        error = self.assertRaises(XmlRejected, parse_xml, data, XmlLimits(max_bytes=1 << 20))
        self.assertEqual((error.rule, fed), (Rule.DEPTH, [safexml.CHUNK_SIZE]))

    def test_depth_exactly_at_the_shortcut(self) -> None:
        """With as many '<' as max_depth the document cannot be too deep; one more nesting level is caught."""
        self.assertIsNotNone(parse_xml(b"<a>" * 4 + b"</a>" * 4, XmlLimits(max_depth=8)))
        error = self.assertRaises(XmlRejected, parse_xml, b"<a>" * 9 + b"</a>" * 9, XmlLimits(max_depth=8))
        self.assertEqual(error.rule, Rule.DEPTH)

    def test_reuse_after_failures(self) -> None:
        """After a refused document, on either path, the next good one parses."""
        for bad in (b"<r><a></r>", b"<a>" * 300, b"<r>" + b"<x/>" * 70 + b"<a></r>"):
            self.assertRaises(XmlRejected, parse_xml, bad)
            self.assertEqual(parse_xml(b"<ok/>").tag, "ok")
            self.assertEqual(parse_xml(b"<ok>" + b"<x/>" * 70 + b"</ok>").tag, "ok")
