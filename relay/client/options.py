"""
Settings shared by every WebSocket the client opens: limits, timeouts, TLS trust.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

if TYPE_CHECKING:  # pyOpenSSL is imported only when TLS is actually used
    from twisted.internet._sslverify import IOpenSSLTrustRoot
    from twisted.internet.ssl import Certificate

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """
    How the client's WebSocket connections behave.

    @ivar receive_buffer: bytes of received, unread messages a connection holds before it stops reading
        from the network (C{pauseProducing}) until the application has read it down to half. Messages
        already read from the socket are still delivered, so the queue can exceed this by one read
        (at most 64 KiB on TCP) or one message.
    @ivar max_message_size: the largest message accepted (the connection fails with 1009 beyond it).
        Autobahn assembles whole messages in memory, so this also bounds memory per connection. The
        default matches the Node C{ws} library's 100 MiB.
    @ivar open_timeout: seconds allowed for the opening handshake. A sender's upgrade is held by the
        relay until a listener accepts (up to 30 s), so this must exceed that. A listener also gives its
        token provider this long to answer (at each connect and renewal); then the attempt fails, and is
        retried as other failures are.
    @ivar close_timeout: seconds to wait for the peer's close frame. The relay forwards a close end to
        end and answers only after the other party did, so this is longer than Autobahn's 1 s default.
    @ivar ping_interval: send a WebSocket ping after this many idle seconds (0: never).
    @ivar ping_timeout: drop the connection when a ping is not answered within this many seconds.
        Pings are answered only while the connection reads, so do not combine pings with an
        application that may stop reading for longer than this.
    @ivar trust_root: certificate authorities for C{wss} (e.g. C{Certificate.loadPEM(ca_pem)} for a
        development CA); the platform's trust store when C{None}.
    @ivar tls_options: full control over TLS: called with the host name of each connection (control
        channel and rendezvous hosts may differ), returns the client connection creator, e.g.
        C{lambda host: optionsForClientTLS(host, trustRoot=..., clientCertificate=...)}. Overrides
        C{trust_root}.
    @ivar user_agent: the C{User-Agent} header of upgrades, unless a sender's C{connect} brings its own.
    """

    receive_buffer: int = 1 * MIB
    max_message_size: int = 100 * MIB
    open_timeout: float = 60.0
    close_timeout: float = 10.0
    ping_interval: float = 0.0
    ping_timeout: float = 0.0
    trust_root: IOpenSSLTrustRoot | Certificate | None = None
    tls_options: Callable[[str], IOpenSSLClientConnectionCreator] | None = None
    user_agent: str = "relay-python-client/0.1"

    def __post_init__(self) -> None:
        if self.receive_buffer < 1:
            raise ValueError("receive_buffer must be positive")
        if self.max_message_size < 0:
            raise ValueError("max_message_size must not be negative (0: unlimited)")
        if self.open_timeout <= 0 or self.close_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.ping_interval < 0 or self.ping_timeout < 0:
            raise ValueError("ping settings must not be negative")

    def tls_creator(self, host: str) -> IOpenSSLClientConnectionCreator:
        """The TLS settings for a connection to C{host}."""
        if self.tls_options is not None:
            return self.tls_options(host)
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(host, trustRoot=self.trust_root)
