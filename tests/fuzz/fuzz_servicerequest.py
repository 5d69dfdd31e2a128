"""A request a service host receives (bindings.host, contracts): always an answer, and typed values that round-trip."""

from __future__ import annotations

from lxml import etree
from twisted.logger import Logger
from twisted.python.failure import Failure

from bindings.addressing import ANONYMOUS, read_addressing
from bindings.contracts import ContractError, contract_of
from bindings.faults import parse_fault
from bindings.host import ServiceDispatcher
from bindings.safexml import MAX_DEPTH_CAP, XmlLimits
from bindings.soap import Envelope, SoapError, SoapVersion, parse_envelope
from tests.bindings.calculator import ICalculator, IChecked
from tests.bindings.services import Calculator, Checked

CONTRACTS = ((contract_of(ICalculator), Calculator), (contract_of(IChecked), Checked))
LIMITS = XmlLimits(max_bytes=16 * 1024, max_depth=32)


def check(data: bytes) -> None:
    if not data:
        return
    contract, implementation = CONTRACTS[data[0] & 1]
    try:
        envelope = parse_envelope(data[1:], SoapVersion.SOAP12, LIMITS)
        headers = read_addressing(envelope)
    except (SoapError, ValueError):  # the gateway refuses these; they never reach a host
        return
    body = envelope.first_body_child
    operation = contract.by_request_element(body.tag) if body is not None else None
    if operation is not None and body is not None:
        try:
            values = operation.decode_request(body)
        except ContractError:
            pass
        else:
            # what a caller's proxy writes for these values reads back to the same values
            again = operation.decode_request(operation.encode_request(**values))
            assert repr(again) == repr(values), (values, again)
    results: list[object] = []
    implementation_object = implementation()
    implementation_object.hold = False
    dispatcher = ServiceDispatcher(implementation_object, contract)
    dispatcher.log = Logger(observer=lambda event: None)  # failures of the implementations are expected
    dispatcher.handle(envelope).addBoth(results.append)
    assert len(results) == 1, "the implementations here answer at once"
    result = results[0]
    if isinstance(result, Failure):
        raise AssertionError(f"the host failed instead of answering: {result.getTraceback()}")
    expected = headers.reply_to == ANONYMOUS
    if result is None:
        return
    assert expected, "an answer nobody asked for"
    assert isinstance(result, Envelope) and result.version is SoapVersion.SOAP12
    answer = parse_envelope(result.to_bytes(), SoapVersion.SOAP12, XmlLimits(1 << 22, MAX_DEPTH_CAP))
    assert read_addressing(answer).relates_to == headers.message_id
    if answer.is_fault:
        parse_fault(answer.body[0], SoapVersion.SOAP12)
    elif answer.body:
        assert isinstance(answer.body[0].tag, str)
        etree.tostring(answer.body[0])
