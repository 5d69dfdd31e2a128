"""Replies and faults (bindings.faults): a listener's reply the gateway takes reaches SOAP 1.1 and 1.2 callers intact; a backend's reply the bridge turns into one the gateway takes."""

from __future__ import annotations

from lxml import etree

from bindings.addressing import read_addressing
from bindings.faultcodes import FaultCode
from bindings.faults import (
    Fault,
    FaultFormatError,
    fault_element,
    parse_fault,
    reply_to_soap11,
    reply_to_soap12,
)
from bindings.safexml import MAX_DEPTH_CAP, XmlLimits
from bindings.soap import SoapError, SoapVersion, parse_envelope
from bindings.wcfroles import _reply_problem

LIMITS = XmlLimits(max_bytes=16 * 1024, max_depth=32)
BIG = XmlLimits(max_bytes=1 << 22, max_depth=MAX_DEPTH_CAP)


def _same(a: etree._Element, b: etree._Element) -> bool:
    """The same names, attributes, text and children (prefixes aside)."""
    return (
        a.tag == b.tag
        and dict(a.attrib) == dict(b.attrib)
        and a.text == b.text
        and len(a) == len(b)
        and all(_same(x, y) and x.tail == y.tail for x, y in zip(a, b, strict=True))
    )


def _same_fault(a: Fault, b: Fault) -> bool:
    return (
        (a.code, a.reason, a.subcodes, a.node, a.role) == (b.code, b.reason, b.subcodes, b.node, b.role)
        and len(a.detail) == len(b.detail)
        and all(_same(x, y) for x, y in zip(a.detail, b.detail, strict=True))
    )


def _listener_reply(data: bytes) -> None:
    """wcfroles checks a listener's reply on arrival; httpsoap answers each caller version from it."""
    try:
        reply = parse_envelope(data, None, LIMITS)
        read_addressing(reply)
    except (SoapError, ValueError):
        return
    if _reply_problem(reply) is not None:
        return
    # SOAP 1.2 caller: the listener's bytes as they are, the fault's status from its Code
    again = parse_envelope(data, SoapVersion.SOAP12, BIG)
    fault = parse_fault(again.body[0], SoapVersion.SOAP12) if again.is_fault else None
    if fault is not None:
        # rendering a fault and reading it back gives the same fault
        rendered = fault_element(fault, SoapVersion.SOAP12)
        assert _same_fault(parse_fault(rendered, SoapVersion.SOAP12), fault)
    # SOAP 1.1 caller: converted down (a mustUnderstand the listener spelled wrong is refused)
    try:
        down = reply_to_soap11(again)
    except SoapError:
        return
    old = parse_envelope(down.to_bytes(), SoapVersion.SOAP11, BIG)
    assert old.is_fault == (fault is not None)
    assert len(old.headers) == len(
        [h for h in again.headers if not h.tag.startswith("{http://www.w3.org/2005/08/addressing}")]
    )
    if fault is None:
        assert len(old.body) == len(again.body) and all(
            _same(a, b) for a, b in zip(old.body, again.body, strict=True)
        )
        return
    seen = parse_fault(old.body[0], SoapVersion.SOAP11)
    # what a SOAP 1.1 caller sees: the innermost subcode (or Client/Server), the reason, the detail
    if fault.subcodes:
        assert seen.subcodes[-1:] == fault.subcodes[-1:], (seen.subcodes, fault.subcodes)
    else:
        expected = {FaultCode.SENDER: FaultCode.SENDER, FaultCode.DATA_ENCODING_UNKNOWN: FaultCode.SENDER}
        assert seen.code is expected.get(fault.code, fault.code), (seen.code, fault.code)
    assert (seen.reason, seen.node) == (fault.reason, fault.node)
    assert len(seen.detail) == len(fault.detail) and all(
        _same(a, b) for a, b in zip(seen.detail, fault.detail, strict=True)
    )


def _backend_reply(data: bytes) -> None:
    """bridge._reply: a backend's answer in either version becomes SOAP 1.2 for the gateway."""
    try:
        answer = parse_envelope(data, None, LIMITS)
        converted = reply_to_soap12(answer)
        read_addressing(converted)
    except (SoapError, FaultFormatError, ValueError):
        return
    payload = converted.to_bytes()
    # the gateway takes what the bridge sends (wcfroles: parse, addressing, _reply_problem)
    delivered = parse_envelope(payload, None, BIG)
    read_addressing(delivered)
    assert _reply_problem(delivered) is None
    if answer.is_fault and answer.version is SoapVersion.SOAP11:
        before = parse_fault(answer.body[0], SoapVersion.SOAP11)
        after = parse_fault(delivered.body[0], SoapVersion.SOAP12)
        assert _same_fault(before, after), (before, after)


def check(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        _backend_reply(data[1:])
    else:
        _listener_reply(data[1:])
