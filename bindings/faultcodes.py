"""
The one table of faults the gateway raises itself (spec 7.1): subcode, SOAP Code and HTTP status.

This module is free of lxml so the routers can fail a sender's Deferred with a L{RelayFaultError} and let
the transport turn it into an envelope with L{bindings.faults}. Transports never write status literals:
they read L{RelayFault.status}.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

RELAY_NS: Final = "urn:relay:bindings:1"
"""The relay namespace (prefix C{r}): control actions, subcodes, C{r:Sender}, C{r:RelayError}."""

WSA_NS: Final = "http://www.w3.org/2005/08/addressing"
"""WS-Addressing 1.0; its own fault subcodes live here."""

QName = tuple[str, str]
"""A qualified name as C{(namespace, local name)}."""


class FaultCode(Enum):
    """The SOAP 1.2 fault codes, with their SOAP 1.1 C{faultcode} equivalents."""

    SENDER = "Sender"
    RECEIVER = "Receiver"
    VERSION_MISMATCH = "VersionMismatch"
    MUST_UNDERSTAND = "MustUnderstand"
    DATA_ENCODING_UNKNOWN = "DataEncodingUnknown"

    @property
    def soap11(self) -> str:
        """The SOAP 1.1 C{faultcode} local name (spec 6.2)."""
        return {"Sender": "Client", "Receiver": "Server", "DataEncodingUnknown": "Client"}.get(
            self.value, self.value
        )


class RelayFault(Enum):
    """
    Every fault the gateway raises itself.

    @ivar subcodes: the subcode chain, outermost first (the innermost is what SOAP 1.1 clients see).
    @ivar code: C{Sender} or C{Receiver}.
    @ivar status: the HTTP status, used for both SOAP versions.
    """

    INVALID_MESSAGE = (((RELAY_NS, "InvalidMessage"),), FaultCode.SENDER, 400)
    MESSAGE_TOO_LARGE = (((RELAY_NS, "MessageTooLarge"),), FaultCode.SENDER, 413)
    UNAUTHORIZED = (((RELAY_NS, "Unauthorized"),), FaultCode.SENDER, 401)
    FORBIDDEN = (((RELAY_NS, "Forbidden"),), FaultCode.SENDER, 403)
    NO_SUCH_ENTITY = (((RELAY_NS, "NoSuchEntity"),), FaultCode.SENDER, 404)
    ACTION_NOT_SUPPORTED = (((RELAY_NS, "ActionNotSupported"),), FaultCode.SENDER, 400)
    ACTION_MISMATCH = (((RELAY_NS, "ActionMismatch"),), FaultCode.SENDER, 400)
    DUPLICATE_MESSAGE_ID = (((RELAY_NS, "DuplicateMessageId"),), FaultCode.SENDER, 400)
    DESERIALIZATION_FAILED = (((RELAY_NS, "DeserializationFailed"),), FaultCode.SENDER, 400)
    INVALID_ADDRESSING_HEADER = (((WSA_NS, "InvalidAddressingHeader"),), FaultCode.SENDER, 400)
    INVALID_CARDINALITY = (
        ((WSA_NS, "InvalidAddressingHeader"), (WSA_NS, "InvalidCardinality")),
        FaultCode.SENDER,
        400,
    )
    ONLY_ANONYMOUS_ADDRESS_SUPPORTED = (
        ((WSA_NS, "InvalidAddressingHeader"), (WSA_NS, "OnlyAnonymousAddressSupported")),
        FaultCode.SENDER,
        400,
    )
    MESSAGE_ADDRESSING_HEADER_REQUIRED = (
        ((WSA_NS, "MessageAddressingHeaderRequired"),),
        FaultCode.SENDER,
        400,
    )
    ADDRESS_IN_USE = (((RELAY_NS, "AddressInUse"),), FaultCode.SENDER, 409)
    QUOTA_EXCEEDED = (((RELAY_NS, "QuotaExceeded"),), FaultCode.SENDER, 403)
    NO_LISTENER = (((RELAY_NS, "NoListener"),), FaultCode.RECEIVER, 502)
    LISTENER_GONE = (((RELAY_NS, "ListenerGone"),), FaultCode.RECEIVER, 502)
    SERVER_BUSY = (((RELAY_NS, "ServerBusy"),), FaultCode.RECEIVER, 503)
    TIMEOUT = (((RELAY_NS, "Timeout"),), FaultCode.RECEIVER, 504)
    INTERNAL_SERVICE_FAULT = (((RELAY_NS, "InternalServiceFault"),), FaultCode.RECEIVER, 500)

    def __init__(self, subcodes: tuple[QName, ...], code: FaultCode, status: int) -> None:
        self.subcodes = subcodes
        self.code = code
        self.status = status

    @property
    def subcode_name(self) -> str:
        """The innermost subcode's local name (C{NoListener}): what C{r:RelayError/Code} and logs carry."""
        return self.subcodes[-1][1]

    @property
    def is_addressing(self) -> bool:
        """Whether this is a WS-Addressing fault, sent with the addressing fault action."""
        return self.subcodes[0][0] == WSA_NS

    @classmethod
    def for_subcode(cls, name: str) -> RelayFault | None:
        """The row whose innermost subcode local name is C{name}, or C{None}."""
        for row in cls:
            if row.subcode_name == name:
                return row
        return None


class RelayFaultError(Exception):
    """
    A message could not be accepted or delivered; the transport answers with a gateway fault.

    @ivar kind: the table row.
    @ivar message: a short, secret-free cause for the fault's reason and the log.
    """

    def __init__(self, kind: RelayFault, message: str) -> None:
        super().__init__(f"{kind.subcode_name}: {message}")
        self.kind = kind
        self.message = message
