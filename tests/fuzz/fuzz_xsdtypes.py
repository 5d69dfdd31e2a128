"""XSD lexical forms (bindings.xsdtypes): what is read writes back to itself; what is written reads back equal."""

from __future__ import annotations

import datetime
import math
import struct
from decimal import Decimal
from typing import Any

from lxml import etree

from bindings.xsdtypes import SCALARS, Scalar, ValueCodecError, decode_value, encode_value
from tests.fuzz.choices import Choices

NS = "urn:fuzz"
TAG = f"{{{NS}}}v"


def _element(text: str) -> etree._Element | None:
    element = etree.Element(TAG)
    try:
        element.text = text
    except ValueError:  # not XML character data: no parsed document holds it
        return None
    return element


def _write(spec: Scalar, value: Any) -> etree._Element:
    parent = etree.Element("p")
    encode_value(parent, TAG, spec, value, NS)
    # through bytes, as a peer would see it
    return etree.fromstring(etree.tostring(parent))[0]


def _same(spec: Scalar, a: Any, b: Any) -> bool:
    if spec.python is float and isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if spec.python is datetime.datetime:
        return a == b and a.utcoffset() == b.utcoffset()
    return type(a) is type(b) and a == b


def _value(fdp: Choices, spec: Scalar) -> Any:
    python = spec.python
    if python is bool:
        return fdp.flag()
    if python is int:
        return fdp.int(-(2**63), 2**63 - 1)
    if python is float:
        return struct.unpack(">d", fdp.fixed(8))[0]
    if python is Decimal:
        return Decimal(fdp.int(-(10**30), 10**30)).scaleb(fdp.int(-40, 40))
    if python is bytes:
        return fdp.bytes(64)
    if python is datetime.date:
        return datetime.date.fromordinal(fdp.int(1, datetime.date.max.toordinal()))
    if python is datetime.datetime:
        day = datetime.date.fromordinal(fdp.int(1, datetime.date.max.toordinal()))
        zone = None
        if fdp.flag():
            zone = datetime.timezone(datetime.timedelta(minutes=fdp.int(-23 * 60 - 59, 23 * 60 + 59)))
        return datetime.datetime(
            day.year,
            day.month,
            day.day,
            fdp.int(0, 23),
            fdp.int(0, 59),
            fdp.int(0, 59),
            fdp.int(0, 999_999) if fdp.flag() else 0,
            tzinfo=zone,
        )
    return fdp.text(64)


def check(data: bytes) -> None:
    fdp = Choices(data)
    spec = SCALARS[fdp.int(0, len(SCALARS) - 1)]
    if fdp.flag():
        # a value a service returns: written, then read back by the caller
        value = _value(fdp, spec)
        try:
            element = _write(spec, value)
        except ValueCodecError:
            assert spec.python is str or (spec.python is datetime.datetime and value.utcoffset() is not None)
            return
        back = decode_value(element, spec, NS)
        if spec.python is str:
            assert back == value.replace("\r\n", "\n").replace("\r", "\n") or back == value, (value, back)
        else:
            assert _same(spec, value, back), (value, element.text, back)
        return
    # text from the wire: read, written back, read again to the same value
    text = fdp.rest().decode("utf-8", errors="replace")
    element = _element(text)
    if element is None:
        return
    try:
        value = decode_value(element, spec, NS)
    except ValueCodecError:
        return
    assert isinstance(value, spec.python), (spec, value)
    again = decode_value(_write(spec, value), spec, NS)
    assert _same(spec, value, again), (text, value, again)
