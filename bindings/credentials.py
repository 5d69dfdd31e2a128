"""
Client-side credentials and addresses: SAS keys that sign tokens, and C{sb://} names turned into URLs.

A service host or channel factory signs a fresh token for every connection and renews it before it lapses
(spec 4, C{r:RenewToken}); the key itself never leaves the process. Addresses follow spec 3: C{sb://host/path}
is shorthand for C{wss://host/$wcf/path} on the WebSocket channel and C{https://host/path} over HTTP;
C{ws://} and C{http://} addresses (or C{UseDevelopmentEmulator=true} in a connection string) select plain
transports for development gateways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlsplit

from relay.auth import make_token
from relay.connstr import parse_connection_string

WCF_SEGMENT: Final = "$wcf"
_SECURE = {"sb": True, "wss": True, "https": True, "ws": False, "http": False}


@dataclass(frozen=True, slots=True)
class SasCredentials:
    """
    A shared access key that signs tokens for the names it is used with.

    @ivar key_name: the rule name (C{skn}).
    @ivar key: the rule's key; never shown in reprs or logs.
    @ivar ttl: lifetime of each token in seconds; connections renew at L{renew_fraction} of it.
    """

    key_name: str
    key: str = field(repr=False)
    ttl: float = 3600.0
    renew_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.ttl <= 0 or not 0 < self.renew_fraction < 1:
            raise ValueError("ttl must be positive and renew_fraction between 0 and 1")

    def token(self, resource: str, now: float) -> str:
        """A token for C{resource} (a name's URL) valid for L{ttl} seconds from C{now}."""
        return make_token(resource, self.key_name, self.key, ttl=self.ttl, now=now)

    @property
    def renew_after(self) -> float:
        """Seconds after signing when a connection swaps in a new token."""
        return self.ttl * self.renew_fraction


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """
    Where a name lives, and the URLs that reach it.

    @ivar secure: TLS (C{wss}/C{https}) or plain (C{ws}/C{http}).
    @ivar netloc: C{host[:port]}.
    @ivar path: the name, without leading or trailing C{/}.
    """

    secure: bool
    netloc: str
    path: str

    @property
    def http_url(self) -> str:
        """C{https://host/path}: HTTP senders, C{?wsdl}, and the resource tokens are signed for."""
        return f"{'https' if self.secure else 'http'}://{self.netloc}/{self.path}"

    def websocket_url(self, action: str, client_id: str | None = None) -> str:
        """C{wss://host/$wcf/path?sb-wcf-action=...}: the WebSocket channel (spec 3)."""
        url = f"{'wss' if self.secure else 'ws'}://{self.netloc}/{WCF_SEGMENT}/{quote(self.path, safe='/')}"
        url += f"?sb-wcf-action={action}"
        if client_id is not None:
            url += f"&sb-wcf-id={quote(client_id, safe='')}"
        return url

    @property
    def host(self) -> str:
        """The host name without port."""
        return urlsplit(f"//{self.netloc}").hostname or ""

    @property
    def port(self) -> int:
        """The TCP port, defaulting by scheme."""
        return urlsplit(f"//{self.netloc}").port or (443 if self.secure else 80)


def parse_address(address: str, *, secure: bool | None = None) -> ServiceAddress:
    """
    Read a name's address: C{sb://}, C{wss://}, C{ws://}, C{https://} or C{http://}.

    @param secure: override TLS for C{sb://} addresses (a development gateway serves plain C{ws://}).
    @raise ValueError: for another scheme, no host or no name.
    """
    parts = urlsplit(address)
    scheme = parts.scheme.lower()
    if scheme not in _SECURE or not parts.netloc:
        raise ValueError(f"address {address!r} must be sb://, wss://, ws://, https:// or http://host/name")
    path = parts.path.strip("/")
    if path.split("/", 1)[0].lower() == WCF_SEGMENT:
        path = path.split("/", 1)[1] if "/" in path else ""
    if not path:
        raise ValueError(f"address {address!r} names no entity")
    tls = _SECURE[scheme] if secure is None or scheme != "sb" else secure
    return ServiceAddress(secure=tls, netloc=parts.netloc, path=path)


def from_connection_string(text: str, name: str | None = None) -> tuple[ServiceAddress, SasCredentials]:
    """
    The address and credentials a connection string describes (Azure's format).

    @param name: the entity name when the string has no C{EntityPath}.
    @raise ValueError: when the string is malformed, has no key, or names no entity.
    """
    parsed = parse_connection_string(text)
    entity = name or parsed.entity_path
    if not entity:
        raise ValueError("the connection string has no EntityPath: give the name")
    if parsed.key_name is None or parsed.key is None:
        raise ValueError("the connection string needs SharedAccessKeyName and SharedAccessKey")
    address = parse_address(f"sb://{parsed.netloc}/{entity}", secure=not parsed.plain)
    return address, SasCredentials(parsed.key_name, parsed.key)
