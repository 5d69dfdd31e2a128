"""A `$wcf` WebSocket sender's message (wcfsender's steps): a SOAP 1.2 fault related to it, or a delivery that keeps it all."""

from __future__ import annotations

from bindings.addressing import read_addressing
from bindings.faultcodes import RelayFault
from bindings.inbound import Refusal, open_envelope, prepare
from bindings.settings import MULTICAST, ONEWAY, REQUEST_REPLY
from bindings.soap import SoapVersion
from tests.fuzz.fuzz_soaprequest import LIMITS, OPERATIONS, SENDER, TO, check_delivered, check_refusal

KINDS = (REQUEST_REPLY, ONEWAY, MULTICAST)


def check(data: bytes) -> None:
    if not data:
        return
    choice, payload = data[0], data[1:]
    kind = KINDS[choice % len(KINDS)]
    strict = bool(choice & 0x10)
    operations = OPERATIONS if not choice & 0x20 else None
    try:
        envelope, _token = open_envelope(payload, announced=SoapVersion.SOAP12, charset=None, limits=LIMITS)
        try:
            headers = read_addressing(envelope)
        except ValueError as e:  # wcfsender answers InvalidAddressingHeader
            raise Refusal(RelayFault.INVALID_ADDRESSING_HEADER, str(e)) from None
        prepared = prepare(
            envelope,
            kind=kind,
            operations=operations,
            to=TO,
            sender=SENDER,
            strict=strict,
            require_message_id=True,
            headers=headers,
        )
    except Refusal as refusal:
        check_refusal(refusal, SoapVersion.SOAP12)
        return
    assert prepared.message_id == headers.message_id, "a WebSocket sender's own id relates the answer"
    if kind != REQUEST_REPLY:
        assert prepared.one_way
    check_delivered(envelope, prepared, None)
