"""Tests for L{bindings.bridgewsdl.inline_schemas}: a bridged service's WSDL made one document."""

from __future__ import annotations

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from bindings.bridgewsdl import MAX_SCHEMAS, WsdlImportError, inline_schemas
from bindings.wsdl import WSDL_NS
from bindings.xsdtypes import XSD_NS

BASE = "http://backend.test/svc/Service.svc?wsdl"


def wsdl(types: str) -> etree._Element:
    return etree.fromstring(
        f'<definitions xmlns="{WSDL_NS}" xmlns:xsd="{XSD_NS}" targetNamespace="urn:t"><types>{types}</types>'
        "</definitions>"
    )


def schema(tns: str, body: str = "") -> etree._Element:
    return etree.fromstring(f'<xs:schema xmlns:xs="{XSD_NS}" targetNamespace="{tns}">{body}</xs:schema>')


class InlineTests(SynchronousTestCase):
    def run_inline(self, root: etree._Element, documents: dict[str, etree._Element]) -> list[str]:
        fetched: list[str] = []

        async def fetch(url: str) -> etree._Element:
            fetched.append(url)
            return documents[url]

        self.successResultOf(Deferred.fromCoroutine(inline_schemas(root, BASE, fetch)))
        return fetched

    def test_imports_and_includes(self) -> None:
        """Relative locations resolve against the referring document; each is fetched once."""
        root = wsdl(
            '<xsd:schema><xsd:import namespace="urn:a" schemaLocation="Service.svc?xsd=xsd0"/>'
            '<xsd:import namespace="urn:a" schemaLocation="Service.svc?xsd=xsd0"/></xsd:schema>'
        )
        documents = {
            "http://backend.test/svc/Service.svc?xsd=xsd0": schema(
                "urn:a",
                '<xs:include schemaLocation="/common/types.xsd"/><xs:element name="e" type="xs:int"/>',
            ),
            "http://backend.test/common/types.xsd": schema("urn:a", '<xs:simpleType name="s"/>'),
        }
        fetched = self.run_inline(root, documents)
        self.assertEqual(fetched, list(documents))
        self.assertNotIn(b"schemaLocation", etree.tostring(root))
        schemas = root.findall(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
        self.assertEqual([s.get("targetNamespace") for s in schemas], [None, "urn:a", "urn:a"])
        self.assertEqual(schemas[1].find(f"{{{XSD_NS}}}include"), None)
        element = schemas[1].find(f"{{{XSD_NS}}}element")
        assert element is not None
        self.assertEqual(element.nsmap["xs"], XSD_NS)  # type="xs:int" still names something

    def test_refused(self) -> None:
        """A WSDL import, a non-schema document, a non-http location, too many documents."""
        wcf = etree.fromstring(
            f'<definitions xmlns="{WSDL_NS}"><import namespace="urn:c" location="Service.svc?wsdl=wsdl0"/>'
            "</definitions>"
        )
        problems = [
            (wcf, {}),
            (
                wsdl('<xsd:schema><xsd:import schemaLocation="x.xsd"/></xsd:schema>'),
                {"http://backend.test/svc/x.xsd": etree.fromstring("<html/>")},
            ),
            (wsdl('<xsd:schema><xsd:import schemaLocation="file:///etc/passwd"/></xsd:schema>'), {}),
        ]
        many = "".join(f'<xsd:import schemaLocation="s{n}.xsd"/>' for n in range(MAX_SCHEMAS + 1))
        documents = {f"http://backend.test/svc/s{n}.xsd": schema(f"urn:{n}") for n in range(MAX_SCHEMAS + 1)}
        problems.append((wsdl(f"<xsd:schema>{many}</xsd:schema>"), documents))
        for root, docs in problems:

            async def fetch(url: str, docs: dict[str, etree._Element] = docs) -> etree._Element:
                return docs[url]

            failure = self.failureResultOf(Deferred.fromCoroutine(inline_schemas(root, BASE, fetch)))
            failure.trap(WsdlImportError)
