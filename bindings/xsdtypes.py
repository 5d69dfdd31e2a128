"""
Python types of contract parameters mapped to XML Schema, and typed values to and from elements.

The supported set is deliberately small (spec section 8): C{int}, C{str}, C{float}, C{bool}, C{bytes},
C{Decimal}, C{datetime}, C{date}, C{Optional[T]}, C{list[T]} and dataclasses of those. C{int} is
C{xsd:long} (Python integers are wider than WCF's C{xsd:int}; values beyond 64 bits are refused rather
than silently wrapped). Lexical forms are checked with regular expressions instead of Python's own
parsers, which accept things XML Schema does not (C{"1_000"}, C{"infinity"}); the one exception is
xsd:double's C{inf}, C{-inf} and C{nan}, which zeep writes as Python spells them and which are read too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Union

from lxml import etree

XSD_NS: Final = "http://www.w3.org/2001/XMLSchema"
XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
XSI_NIL: Final = f"{{{XSI_NS}}}nil"
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_XML_SPACE: Final = " \t\n\r"


class ValueCodecError(ValueError):
    """A typed value could not be written, or an element could not be read as the declared type."""


@dataclass(frozen=True, slots=True)
class Scalar:
    """
    A built-in simple type.

    @ivar python: the Python class.
    @ivar xsd: the local name of the XML Schema type.
    """

    python: type
    xsd: str


@dataclass(frozen=True, slots=True)
class OptionalOf:
    """C{Optional[T]}: the element may be absent or C{xsi:nil}."""

    item: TypeSpec


@dataclass(frozen=True, slots=True)
class ListOf:
    """C{list[T]}: zero or more repeated elements of the same name."""

    item: TypeSpec


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a complex type, in declaration order."""

    name: str
    spec: TypeSpec


@dataclass(frozen=True, slots=True)
class Struct:
    """
    A dataclass mapped to a named complex type holding a sequence of its fields.

    @ivar python: the dataclass.
    @ivar name: the complex type's name (the class name).
    """

    python: type
    name: str
    fields: tuple[FieldSpec, ...]


TypeSpec = Union[Scalar, OptionalOf, ListOf, Struct]  # noqa: UP007 - a runtime alias used in annotations above

# bool before int and datetime before date: both are subclasses of the other.
SCALARS: Final[tuple[Scalar, ...]] = (
    Scalar(bool, "boolean"),
    Scalar(int, "long"),
    Scalar(str, "string"),
    Scalar(float, "double"),
    Scalar(bytes, "base64Binary"),
    Scalar(Decimal, "decimal"),
    Scalar(datetime.datetime, "dateTime"),
    Scalar(datetime.date, "date"),
)
_SCALAR_BY_TYPE: Final = {s.python: s for s in SCALARS}


def spec_for(annotation: Any, _seen: frozenset[type] = frozenset()) -> TypeSpec:
    """
    Map a resolved annotation to its type spec.

    @raise TypeError: for anything outside the supported set, C{Optional[list]}, nested lists,
        lists of optionals and recursive dataclasses.
    """
    if annotation in _SCALAR_BY_TYPE:
        return _SCALAR_BY_TYPE[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise TypeError(f"only Optional[T] unions are supported, not {annotation!r}")
        inner = spec_for(others[0], _seen)
        if isinstance(inner, ListOf):
            raise TypeError(
                "Optional[list[T]] is not supported: an empty list and None look the same on the wire"
            )
        return OptionalOf(inner)
    if origin is list:
        if len(args) != 1:
            raise TypeError("list needs an item type: list[T]")
        item = spec_for(args[0], _seen)
        if isinstance(item, ListOf | OptionalOf):
            raise TypeError(f"list items must be a scalar or a dataclass, not {args[0]!r}")
        return ListOf(item)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if annotation in _seen:
            raise TypeError(f"recursive dataclass {annotation.__name__} is not supported")
        try:
            hints = typing.get_type_hints(annotation)
        except NameError as e:
            raise TypeError(f"cannot resolve the annotations of {annotation.__name__}: {e}") from None
        fields = tuple(
            FieldSpec(f.name, spec_for(hints[f.name], _seen | {annotation}))
            for f in dataclasses.fields(annotation)
            if f.init
        )
        return Struct(annotation, annotation.__name__, fields)
    raise TypeError(
        f"type {annotation!r} is not supported (use int, str, float, bool, bytes, Decimal, datetime, date, "
        "Optional[T], list[T] or a dataclass of those)"
    )


def structs_in(spec: TypeSpec) -> Iterator[Struct]:
    """Every dataclass a spec refers to, depth first, each before the types that contain it."""
    if isinstance(spec, OptionalOf | ListOf):
        yield from structs_in(spec.item)
    elif isinstance(spec, Struct):
        for field in spec.fields:
            yield from structs_in(field.spec)
        yield spec


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_DOUBLE = re.compile(r"([+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?INF|NaN|[+-]?inf|nan)")
"""xsd:double's lexical forms, and Python's spellings of the specials, which zeep writes (read only)."""
_DATE = re.compile(r"-?[0-9]{4,}-[0-9]{2}-[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})?")
_DATETIME = re.compile(
    r"-?[0-9]{4,}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _format_datetime(value: datetime.datetime) -> str:
    offset = value.utcoffset()
    if offset is not None and offset.seconds % 60:
        raise ValueCodecError("time zone offsets with seconds cannot be written as xsd:dateTime")
    text = value.isoformat()
    return text[:-6] + "Z" if offset == datetime.timedelta(0) else text


def _parse_datetime(text: str) -> datetime.datetime:
    if not _DATETIME.fullmatch(text):
        raise ValueError
    if "." in text:  # Python accepts at most six fraction digits; XML Schema any number.
        head, _, rest = text.partition(".")
        digits = re.match(r"[0-9]+", rest).group(0)  # type: ignore[union-attr]
        text = f"{head}.{(digits + '000000')[:6]}{rest[len(digits) :]}"
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _format(spec: Scalar, value: Any) -> str:
    python = spec.python
    if python is bool:
        if not isinstance(value, bool):
            raise ValueCodecError(f"expected bool, got {type(value).__name__}")
        return "true" if value else "false"
    if python is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueCodecError(f"expected int, got {type(value).__name__}")
        if not LONG_MIN <= value <= LONG_MAX:
            raise ValueCodecError("integer does not fit in xsd:long")
        return str(value)
    if python is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueCodecError(f"expected float, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond the double range
            raise ValueCodecError("integer does not fit in xsd:double") from None
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "INF" if number > 0 else "-INF"
        return repr(number)
    if python is Decimal:
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise ValueCodecError(f"expected Decimal, got {type(value).__name__}")
        decimal = Decimal(value)
        if not decimal.is_finite():
            raise ValueCodecError("xsd:decimal has no NaN or infinity")
        return format(decimal, "f")
    if python is bytes:
        if not isinstance(value, bytes | bytearray):
            raise ValueCodecError(f"expected bytes, got {type(value).__name__}")
        return base64.b64encode(bytes(value)).decode("ascii")
    if python is datetime.datetime:
        if not isinstance(value, datetime.datetime):
            raise ValueCodecError(f"expected datetime, got {type(value).__name__}")
        return _format_datetime(value)
    if python is datetime.date:
        if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
            raise ValueCodecError(f"expected date, got {type(value).__name__}")
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueCodecError(f"expected str, got {type(value).__name__}")
    return value


def _read(spec: Scalar, raw: str) -> Any:
    python = spec.python
    if python is str:
        return raw
    text = raw.strip(_XML_SPACE)
    if python is bool:
        if text not in ("true", "false", "1", "0"):
            raise ValueError
        return text in ("true", "1")
    if python is int:
        if not _INTEGER.fullmatch(text) or not LONG_MIN <= int(text) <= LONG_MAX:
            raise ValueError
        return int(text)
    if python is float:
        if not _DOUBLE.fullmatch(text):
            raise ValueError
        return float(text)  # float() takes INF and NaN in any case; the pattern allows only these
    if python is Decimal:
        if not _DECIMAL.fullmatch(text):
            raise ValueError
        return Decimal(text)
    if python is bytes:
        # XML whitespace only: str.split() would also skip NBSP and other Unicode spaces
        return base64.b64decode(re.sub(f"[{_XML_SPACE}]", "", text), validate=True)
    if python is datetime.datetime:
        return _parse_datetime(text)
    if not _DATE.fullmatch(text):
        raise ValueError
    return datetime.date.fromisoformat(text[:10])  # a time zone on a date has no Python equivalent


def encode_value(parent: etree._Element, tag: str, spec: TypeSpec, value: Any, namespace: str) -> None:
    """
    Append the element(s) for C{value} named C{tag} to C{parent}.

    @param namespace: the contract namespace, for the fields of dataclasses.
    @raise ValueCodecError: when the value does not have the declared type.
    """
    if isinstance(spec, OptionalOf):
        if value is None:
            etree.SubElement(parent, tag, nsmap={"xsi": XSI_NS}).set(XSI_NIL, "true")
        else:
            encode_value(parent, tag, spec.item, value, namespace)
        return
    if isinstance(spec, ListOf):
        if not isinstance(value, list | tuple):
            raise ValueCodecError(
                f"expected a list for {etree.QName(tag).localname}, got {type(value).__name__}"
            )
        for item in value:
            encode_value(parent, tag, spec.item, item, namespace)
        return
    element = etree.SubElement(parent, tag)
    if isinstance(spec, Struct):
        if not isinstance(value, spec.python):
            raise ValueCodecError(f"expected {spec.name}, got {type(value).__name__}")
        for field in spec.fields:
            encode_value(
                element, f"{{{namespace}}}{field.name}", field.spec, getattr(value, field.name), namespace
            )
        return
    try:
        element.text = _format(spec, value)
    except ValueError as e:  # lxml refuses control characters in text
        if isinstance(e, ValueCodecError):
            raise
        raise ValueCodecError(f"{etree.QName(tag).localname}: {e}") from None


def _is_nil(element: etree._Element) -> bool:
    return (element.get(XSI_NIL) or "").strip() in ("true", "1")


def decode_value(element: etree._Element, spec: Scalar | Struct, namespace: str) -> Any:
    """
    Read one element as a scalar or dataclass.

    @raise ValueCodecError: when the content is not a valid lexical form of the type.
    """
    name = etree.QName(element).localname
    if _is_nil(element):
        raise ValueCodecError(f"{name} is nil but not optional")
    if isinstance(spec, Struct):
        return construct(spec.python, decode_sequence(list(element), spec.fields, namespace), name)
    if len(element):
        raise ValueCodecError(f"{name} must hold text, not elements")
    try:
        return _read(spec, element.text or "")
    except (ValueError, binascii.Error, InvalidOperation, OverflowError):
        raise ValueCodecError(f"{name} is not a valid xsd:{spec.xsd}") from None


def construct(python: type, values: dict[str, Any], name: str) -> Any:
    """
    Build a dataclass from decoded field values.

    Its own checks (a validating C{__post_init__}) may refuse them: that is a malformed element too, not
    an error to escape the codec. The exception's text is left out (it is the service's, not the wire's).

    @raise ValueCodecError: when the constructor raises.
    """
    try:
        return python(**values)
    except Exception as e:
        raise ValueCodecError(
            f"{name} could not be built: {python.__name__} raised {type(e).__name__}"
        ) from e


def decode_sequence(
    children: Sequence[etree._Element], fields: Sequence[FieldSpec], namespace: str
) -> dict[str, Any]:
    """
    Read a sequence of child elements into field values, in declaration order.

    Optional fields may be absent or nil; lists take every consecutive element of their name. Unknown or
    misplaced elements are refused.

    @raise ValueCodecError: naming the offending element.
    """
    values: dict[str, Any] = {}
    position = 0

    def at(tag: str) -> bool:
        return position < len(children) and children[position].tag == tag

    for field in fields:
        tag = f"{{{namespace}}}{field.name}"
        spec = field.spec
        if isinstance(spec, ListOf):
            items = []
            while at(tag):
                items.append(decode_value(children[position], spec.item, namespace))  # type: ignore[arg-type]
                position += 1
            values[field.name] = items
        elif isinstance(spec, OptionalOf):
            if at(tag):
                element = children[position]
                position += 1
                values[field.name] = None if _is_nil(element) else decode_value(element, spec.item, namespace)  # type: ignore[arg-type]
            else:
                values[field.name] = None
        elif at(tag):
            values[field.name] = decode_value(children[position], spec, namespace)
            position += 1
        else:
            raise ValueCodecError(f"element {field.name} is missing")
    if position < len(children):
        raise ValueCodecError(f"unexpected element {etree.QName(children[position]).localname}")
    return values


def xsd_element(
    parent: etree._Element,
    name: str,
    spec: TypeSpec,
    type_name: Callable[[str], str],
    xsd_prefix: str = "xsd",
) -> etree._Element:
    """
    Declare C{name} of C{spec} in a schema C{sequence}.

    @param type_name: turns a complex type's name into the prefixed QName text (C{tns:Point}).
    """
    element = etree.SubElement(parent, f"{{{XSD_NS}}}element", name=name)
    item = spec
    if isinstance(spec, OptionalOf):
        element.set("minOccurs", "0")
        element.set("nillable", "true")
        item = spec.item
    elif isinstance(spec, ListOf):
        element.set("minOccurs", "0")
        element.set("maxOccurs", "unbounded")
        item = spec.item
    if isinstance(item, Struct):
        element.set("type", type_name(item.name))
    elif isinstance(item, Scalar):
        element.set("type", f"{xsd_prefix}:{item.xsd}")
    return element
