"""Tests for L{bindings.contracts} and L{bindings.xsdtypes}."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Optional, Union

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Attribute, Interface

from bindings.contracts import (
    ContractError,
    DeclaredFault,
    call_arguments,
    check_multicast,
    contract,
    contract_of,
    operation,
)
from bindings.faultcodes import FaultCode
from bindings.safexml import parse_xml
from bindings.xsdtypes import ValueCodecError, decode_value, encode_value, spec_for

from .calculator import DivideByZero, ICalculator, IChat, IChecked, Point, Positive, Shape

NS = "urn:example:calc"


def reparse(element: etree._Element) -> etree._Element:
    """Serialise and parse back through the hardened parser, as a message would travel."""
    return parse_xml(etree.tostring(element))


class NamingTests(SynchronousTestCase):
    """WCF-compatible names (spec section 8)."""

    def test_names(self) -> None:
        """Actions, wrapper elements and the Result element follow the WCF defaults."""
        c = contract_of(ICalculator)
        add = c.operation("Add")
        self.assertEqual((c.name, c.namespace), ("ICalculator", NS))
        self.assertEqual(add.action, "urn:example:calc/ICalculator/Add")
        self.assertEqual(add.reply_action, "urn:example:calc/ICalculator/AddResponse")
        self.assertEqual(
            (add.request_element, add.response_element), (f"{{{NS}}}Add", f"{{{NS}}}AddResponse")
        )
        self.assertEqual(add.result_name, "AddResult")
        self.assertEqual([p.name for p in add.parameters], ["a", "b"])
        self.assertEqual(
            c.operation("Divide").faults[0].action, "urn:example:calc/ICalculator/DivideDivideByZeroFault"
        )

    def test_order_and_lookup(self) -> None:
        """Operations keep declaration order and are found by action, element and method."""
        c = contract_of(ICalculator)
        self.assertEqual([op.name for op in c.operations], ["Add", "Divide", "Notify", "Centroid", "Reset"])
        self.assertIs(c.by_action("urn:example:calc/ICalculator/Notify"), c.operation("Notify"))
        self.assertIs(c.by_request_element(f"{{{NS}}}Divide"), c.operation("Divide"))
        self.assertIsNone(c.by_action("nope"))
        self.assertIs(c.by_method("Add"), c.operation("Add"))
        self.assertRaises(KeyError, c.operation, "Nope")

    def test_overrides_and_tempuri(self) -> None:
        """Explicit names and actions win; the default namespace is tempuri with no doubled slash."""

        @contract(name="Svc")
        class IThing(Interface):
            @operation(action="urn:custom", name="DoIt")
            def do(x: int) -> int:
                """Do."""

        op = contract_of(IThing).operation("DoIt")
        self.assertEqual((op.action, op.method, op.reply_action), ("urn:custom", "do", "urn:customResponse"))

        @contract()
        class IOther(Interface):
            @operation()
            def Ping() -> None:
                """Ping."""

        self.assertEqual(contract_of(IOther).operation("Ping").action, "http://tempuri.org/IOther/Ping")

    def test_inheritance(self) -> None:
        """Operations of base interfaces come first."""

        class IBase(Interface):
            @operation()
            def First() -> None:
                """First."""

        @contract(namespace="urn:x")
        class IDerived(IBase):
            @operation()
            def Second() -> None:
                """Second."""

        self.assertEqual([op.name for op in contract_of(IDerived).operations], ["First", "Second"])

    def test_multicast(self) -> None:
        """Only all-one-way contracts can serve a multicast name."""
        check_multicast(contract_of(IChat))
        self.assertTrue(contract_of(IChat).multicast_compatible)
        self.assertFalse(contract_of(ICalculator).multicast_compatible)
        error = self.assertRaises(TypeError, check_multicast, contract_of(ICalculator))
        self.assertIn("Add", str(error))

    def test_not_a_contract(self) -> None:
        """contract_of refuses interfaces without @contract."""

        class IPlain(Interface):
            pass

        self.assertRaises(TypeError, contract_of, IPlain)
        self.assertRaises(TypeError, contract_of, object())


class DeclarationTests(SynchronousTestCase):
    """Checks made when the interface is declared (spec section 8)."""

    def assertRefused(self, build: Any, fragment: str) -> None:
        error = self.assertRaises(TypeError, build)
        self.assertIn(fragment, str(error))

    def test_undecorated_method(self) -> None:
        """Every method needs @operation."""

        def build() -> None:
            @contract()
            class IBad(Interface):
                def Plain() -> None:
                    """No decorator."""

        self.assertRefused(build, "needs @operation")

    def test_attribute(self) -> None:
        """Contracts hold only operations."""

        def build() -> None:
            @contract()
            class IBad(Interface):
                value = Attribute("not an operation")

        self.assertRefused(build, "only operations")

    def test_one_way_returns(self) -> None:
        """A one-way operation must return None and declare no faults."""

        def returns() -> None:
            @contract()
            class IBad(Interface):
                @operation(one_way=True)
                def Op() -> int:
                    """Bad."""

        def faults() -> None:
            @contract()
            class IBad(Interface):
                @operation(one_way=True, faults=[DivideByZero])
                def Op() -> None:
                    """Bad."""

        self.assertRefused(returns, "must return None")
        self.assertRefused(faults, "cannot declare faults")

    def test_unique_names(self) -> None:
        """Two operations with one wire name are refused."""

        def build() -> None:
            @contract()
            class IBad(Interface):
                @operation(name="Same")
                def A() -> None:
                    """A."""

                @operation(name="Same")
                def B() -> None:
                    """B."""

        self.assertRefused(build, "unique")

    def test_varargs(self) -> None:
        """*args and **kwargs are refused."""

        def args() -> None:
            @contract()
            class IBad(Interface):
                @operation()
                def Op(*values: int) -> None:
                    """Bad."""

        def kwargs() -> None:
            @contract()
            class IBad(Interface):
                @operation()
                def Op(**values: int) -> None:
                    """Bad."""

        self.assertRefused(args, "*args")
        self.assertRefused(kwargs, "*args")

    def test_unsupported_types(self) -> None:
        """Types outside the supported set are refused, naming the parameter."""
        for annotation in (
            dict,
            complex,
            Union[int, str],  # noqa: UP007 - the spelling under test
            list,
            list[list[int]],
            Optional[list[int]],  # noqa: UP045
            list[Optional[int]],  # noqa: UP045
        ):

            def build(annotation: Any = annotation) -> None:
                def Op(x: int) -> None:
                    """Op."""

                Op.__annotations__["x"] = annotation
                decorated = operation()(Op)

                @contract()
                class IBad(Interface):
                    locals()["Op"] = decorated

            self.assertRefused(build, "'x'")

    def test_missing_annotations(self) -> None:
        """Parameters and the return need annotations."""

        def parameter() -> None:
            @contract()
            class IBad(Interface):
                @operation()
                def Op(x) -> None:  # type: ignore[no-untyped-def]
                    """Bad."""

        def result() -> None:
            @contract()
            class IBad(Interface):
                @operation()
                def Op(x: int):  # type: ignore[no-untyped-def]
                    """Bad."""

        self.assertRefused(parameter, "annotation")
        self.assertRefused(result, "return type")

    def test_fault_types(self) -> None:
        """Faults must be DeclaredFault dataclasses."""

        class NotADataclass(DeclaredFault):
            pass

        def plain() -> None:
            @contract()
            class IBad(Interface):
                @operation(faults=[ValueError])  # type: ignore[list-item]
                def Op() -> None:
                    """Bad."""

        def not_dataclass() -> None:
            @contract()
            class IBad(Interface):
                @operation(faults=[NotADataclass])
                def Op() -> None:
                    """Bad."""

        self.assertRefused(plain, "DeclaredFault")
        self.assertRefused(not_dataclass, "dataclass")

    def test_fault_fields_named_like_declared_fault_attributes(self) -> None:
        """A fault field named reason or code (or args) would shadow what the host builds the fault from."""

        @dataclass
        class QuotaFault(DeclaredFault):
            """Quota exceeded."""

            reason: str

        @dataclass
        class AppFault(DeclaredFault):
            """Application error."""

            code: int = 0
            text: str = ""

        def declare(fault: type[DeclaredFault]) -> None:
            @contract()
            class IFaulty(Interface):
                @operation(faults=[fault])
                def Op() -> None:
                    """Raises the fault."""

        self.assertRefused(lambda: declare(QuotaFault), "fields named reason")
        self.assertRefused(lambda: declare(AppFault), "fields named code")

    def test_type_name_clash(self) -> None:
        """Two different dataclasses with one name cannot share a contract."""
        first = Point

        @dataclass
        class Point2:
            x: int

        Point2.__name__ = "Point"

        def build() -> None:
            def A(p: int) -> None:
                """A."""

            def B(p: int) -> None:
                """B."""

            A.__annotations__["p"] = first
            B.__annotations__["p"] = Point2

            @contract()
            class IBad(Interface):
                locals()["A"] = operation()(A)
                locals()["B"] = operation()(B)

        self.assertRefused(build, "named 'Point'")

    def test_not_an_interface(self) -> None:
        """@contract applies only to interfaces."""
        self.assertRaises(TypeError, contract(), object)


class SerialisationTests(SynchronousTestCase):
    """Typed bodies to and from elements."""

    def test_request_round_trip(self) -> None:
        """A request with nested complex types decodes into the same typed arguments."""
        op = contract_of(ICalculator).operation("Centroid")
        shape = Shape(
            name="tri",
            points=[Point(0.0, 0.0), Point(1.5, -2.0, "b")],
            created=datetime.datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=datetime.UTC),
            price=Decimal("19.990"),
            data=b"\x00\xffbinary",
            day=datetime.date(2024, 5, 1),
            visible=True,
        )
        element = reparse(op.encode_request(shape, [0.5, 1e-9], note=None))
        self.assertEqual(op.decode_request(element), {"shape": shape, "weights": [0.5, 1e-9], "note": None})

    def test_wire_form(self) -> None:
        """Elements are qualified in the contract namespace, in declaration order; None is xsi:nil."""
        op = contract_of(ICalculator).operation("Centroid")
        element = op.encode_request(
            Shape(
                "s",
                [],
                datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                Decimal("1E+2"),
                b"",
                datetime.date(2024, 1, 1),
                False,
            ),
            [],
            None,
        )
        shape = element[0]
        self.assertEqual(
            [etree.QName(c).localname for c in shape],
            ["name", "created", "price", "data", "day", "visible", "rank"],
        )
        self.assertTrue(all(etree.QName(c).namespace == NS for c in shape.iter()))
        self.assertEqual(shape.findtext(f"{{{NS}}}created"), "2024-01-01T00:00:00Z")
        self.assertEqual(shape.findtext(f"{{{NS}}}price"), "100")
        self.assertEqual(shape.findtext(f"{{{NS}}}visible"), "false")
        self.assertEqual(element[-1].get("{http://www.w3.org/2001/XMLSchema-instance}nil"), "true")

    def test_response(self) -> None:
        """Results travel in {Operation}Result; None results give an empty response."""
        c = contract_of(ICalculator)
        add = c.operation("Add")
        element = reparse(add.encode_response(5))
        self.assertEqual(element.tag, f"{{{NS}}}AddResponse")
        self.assertEqual(element[0].tag, f"{{{NS}}}AddResult")
        self.assertEqual(add.decode_response(element), 5)
        reset = c.operation("Reset")
        self.assertEqual(len(reset.encode_response(None)), 0)
        self.assertIsNone(reset.decode_response(reparse(reset.encode_response(None))))
        self.assertRaises(ContractError, c.operation("Notify").encode_response, None)

    def test_absent_optional(self) -> None:
        """An absent optional element (zeep omits None) reads as None."""
        op = contract_of(ICalculator).operation("Centroid")
        element = op.encode_request(
            Shape(
                "s",
                [],
                datetime.datetime(2024, 1, 1),
                Decimal(0),
                b"",
                datetime.date(2024, 1, 1),
                True,
                rank=3,
            ),
            [],
            "n",
        )
        element.remove(element[-1])
        self.assertIsNone(op.decode_request(element)["note"])

    def test_bad_arguments(self) -> None:
        """Wrong types and wrong arity are ContractErrors, so is an int beyond the double range for a float."""
        add = contract_of(ICalculator).operation("Add")
        for args in ((1,), (1, 2, 3), ("1", 2), (True, 2), (2**63, 1)):
            self.assertRaises(ContractError, add.encode_request, *args)
        scale = contract_of(IChecked).operation("Scale")
        self.assertRaises(ContractError, scale.encode_request, 10**400)
        self.assertRaises(ContractError, scale.encode_response, -(10**400))
        self.assertRaises(
            ContractError, contract_of(ICalculator).operation("Notify").encode_request, "bad\x01char"
        )

    def test_bad_bodies(self) -> None:
        """Wrong wrapper, missing, extra or malformed elements are ContractErrors."""
        add = contract_of(ICalculator).operation("Add")
        for body in (
            f'<Sub xmlns="{NS}"><a>1</a><b>2</b></Sub>',
            f'<Add xmlns="{NS}"><a>1</a></Add>',
            f'<Add xmlns="{NS}"><a>1</a><b>2</b><c>3</c></Add>',
            f'<Add xmlns="{NS}"><b>2</b><a>1</a></Add>',
            f'<Add xmlns="{NS}"><a>1_000</a><b>2</b></Add>',
            f'<Add xmlns="{NS}"><a>1.5</a><b>2</b></Add>',
            f'<Add xmlns="{NS}"><a><x/></a><b>2</b></Add>',
            f'<Add xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><a xsi:nil="true"/><b>2</b></Add>',
            '<Add xmlns="urn:other"><a>1</a><b>2</b></Add>',
        ):
            self.assertRaises(ContractError, add.decode_request, parse_xml(body.encode()))

    def test_lexical_forms(self) -> None:
        """XML Schema lexical forms are accepted, Python-only ones refused."""
        cases: list[tuple[Any, str, Any]] = [
            (int, " +42 ", 42),
            (bool, "1", True),
            (bool, "false", False),
            (float, "INF", float("inf")),
            (float, "-1.5E3", -1500.0),
            (Decimal, "-.5", Decimal("-0.5")),
            (bytes, "YW Jj\n", b"abc"),
            (datetime.date, "2024-02-29Z", datetime.date(2024, 2, 29)),
            (
                datetime.datetime,
                "2024-01-01T10:00:00.1234567+02:00",
                datetime.datetime(
                    2024, 1, 1, 10, 0, 0, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
                ),
            ),
        ]
        for python, text, expected in cases:
            element = etree.Element("v")
            element.text = text
            self.assertEqual(decode_value(element, spec_for(python), NS), expected, text)  # type: ignore[arg-type]
        for python, text in (
            (int, "1_0"),
            (float, "infinity"),
            (float, "Inf"),
            (float, "NAN"),
            (float, "-nan"),
            (bool, "yes"),
            (Decimal, "1e5"),
            (bytes, "!!"),
            (datetime.date, "2024-1-1"),
        ):
            element = etree.Element("v")
            element.text = text
            self.assertRaises(ValueCodecError, decode_value, element, spec_for(python), NS)

    def test_python_spellings_of_double_specials(self) -> None:
        """inf, +inf, -inf and nan (as zeep writes them) are read; INF, -INF and NaN are still written."""
        for text, expected in (("inf", "INF"), ("+inf", "INF"), ("-inf", "-INF"), ("nan", "NaN")):
            element = etree.Element("v")
            element.text = text
            value = decode_value(element, spec_for(float), NS)  # type: ignore[arg-type]
            parent = etree.Element("p")
            encode_value(parent, "v", spec_for(float), value, NS)
            self.assertEqual(parent[0].text, expected)

    def test_base64_only_xml_whitespace(self) -> None:
        """Inside xsd:base64Binary only XML whitespace is skipped, not the rest of Unicode's."""
        for space in ("\u00a0", "\u3000", "\u2028", "\x85"):
            element = etree.Element("v")
            element.text = f"YWJj{space}"
            self.assertRaises(ValueCodecError, decode_value, element, spec_for(bytes), NS)

    def test_nan_round_trip(self) -> None:
        """NaN is written as NaN and read back as NaN."""
        parent = etree.Element("p")
        encode_value(parent, "v", spec_for(float), float("nan"), NS)
        self.assertEqual(parent[0].text, "NaN")
        self.assertNotEqual(
            decode_value(parent[0], spec_for(float), NS), decode_value(parent[0], spec_for(float), NS)
        )

    def test_declared_fault(self) -> None:
        """A declared fault becomes its detail element and back; others are not declared."""
        divide = contract_of(ICalculator).operation("Divide")
        detail = reparse(divide.encode_fault(DivideByZero(7)))
        self.assertEqual(detail.tag, f"{{{NS}}}DivideByZero")
        self.assertEqual(divide.decode_fault(detail), DivideByZero(7))
        self.assertIsNone(divide.decode_fault(etree.Element("{urn:x}Other")))
        self.assertIsNone(divide.fault_for(ValueError()))
        self.assertRaises(
            ContractError, contract_of(ICalculator).operation("Add").encode_fault, DivideByZero(1)
        )
        self.assertEqual(DivideByZero(1).reason(), "Division by zero.")
        self.assertEqual(DivideByZero.code, FaultCode.SENDER)

    def test_values_their_constructor_refuses(self) -> None:
        """A dataclass whose own checks refuse the decoded values is a ContractError: argument, result or fault."""

        @dataclass
        class Overdrawn(DeclaredFault):
            """Refuses a negative limit."""

            limit: int

            def __post_init__(self) -> None:
                if self.limit < 0:
                    raise ValueError("secret detail")

        @contract(namespace=NS)
        class IBank(Interface):
            @operation(faults=[Overdrawn])
            def Draw(amount: int) -> int:
                """Raises Overdrawn."""

        zero = Positive(1)
        zero.value = 0
        check, make = contract_of(IChecked).operation("Check"), contract_of(IChecked).operation("Make")
        request = reparse(check.encode_request(zero))
        response = reparse(make.encode_response(zero))
        negative = Overdrawn(1)
        negative.limit = -1
        draw = contract_of(IBank).operation("Draw")
        detail = reparse(draw.encode_fault(negative))
        for decode, element in (
            (check.decode_request, request),
            (make.decode_response, response),
            (draw.decode_fault, detail),
        ):
            error = self.assertRaises(ContractError, decode, element)
            self.assertIn("raised ValueError", str(error))
            self.assertNotIn("secret detail", str(error))

    def test_call_arguments(self) -> None:
        """Decoded values split into positional and keyword arguments for the implementation."""

        @contract(namespace="urn:x")
        class IKw(Interface):
            @operation()
            def Op(a: int, *, b: str) -> None:
                """Op."""

        op = contract_of(IKw).operation("Op")
        self.assertEqual(
            call_arguments(op, op.decode_request(reparse(op.encode_request(1, b="x")))), ([1], {"b": "x"})
        )


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    max_size=30,
)
_aware = st.datetimes(
    timezones=st.sampled_from([datetime.UTC, datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))])
)
_points = st.builds(
    Point, x=st.floats(allow_nan=False), y=st.floats(allow_nan=False), label=st.none() | _text
)
_shapes = st.builds(
    Shape,
    name=_text,
    points=st.lists(_points, max_size=3),
    created=_aware | st.datetimes(),
    price=st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12),
    data=st.binary(max_size=40),
    day=st.dates(),
    visible=st.booleans(),
    rank=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


class PropertyTests(SynchronousTestCase):
    """Round-trip and rejection properties of the typed codec."""

    @given(shape=_shapes, weights=st.lists(st.floats(allow_nan=False), max_size=4), note=st.none() | _text)
    def test_round_trip(self, shape: Shape, weights: list[float], note: str | None) -> None:
        """Any typed request survives encode, serialise, hardened parse and decode."""
        op = contract_of(ICalculator).operation("Centroid")
        decoded = op.decode_request(reparse(op.encode_request(shape, weights, note)))
        self.assertEqual(decoded, {"shape": shape, "weights": weights, "note": note})

    @given(a=st.integers(), b=st.integers(min_value=-(2**63), max_value=2**63 - 1))
    def test_int_range(self, a: int, b: int) -> None:
        """Integers inside xsd:long round-trip; outside it they are refused, never wrapped."""
        add = contract_of(ICalculator).operation("Add")
        if -(2**63) <= a < 2**63:
            self.assertEqual(add.decode_request(reparse(add.encode_request(a, b))), {"a": a, "b": b})
        else:
            self.assertRaises(ContractError, add.encode_request, a, b)

    @given(text=st.text(max_size=20))
    def test_int_rejection(self, text: str) -> None:
        """Text that is not an xsd:long lexical form never decodes as an int."""
        element = etree.Element("v")
        try:
            element.text = text
        except ValueError:
            return
        stripped = text.strip(" \t\n\r")
        digits = stripped[1:] if stripped[:1] in ("+", "-") else stripped
        valid = digits != "" and all(c in "0123456789" for c in digits)
        try:
            value = decode_value(element, spec_for(int), NS)  # type: ignore[arg-type]
        except ValueCodecError:
            self.assertFalse(valid and -(2**63) <= int(stripped) < 2**63)
        else:
            self.assertTrue(valid)
            self.assertEqual(value, int(stripped))
