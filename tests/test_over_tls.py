"""
The gateway's protocol suites again, every connection through real TLS (OpenSSL in memory, L{TLSPair}).

TLS changes what a transport is (a wrapper delivering to a wrapped protocol) and when it closes (not
while a producer is registered), so code that takes sockets over or closes them is run both ways.
"""

from __future__ import annotations

from typing import Any

from tests import test_http, test_websocket
from tests.bindings import test_httpsoap, test_wcf


def _over_tls(suite: type[Any]) -> type[Any]:
    return type(f"{suite.__name__}OverTLS", (suite,), {"use_tls": True, "__module__": __name__})


ListenerTestsOverTLS = _over_tls(test_websocket.ListenerTests)
SenderTestsOverTLS = _over_tls(test_websocket.SenderTests)
ShutdownTestsOverTLS = _over_tls(test_websocket.ShutdownTests)
SmallRequestTestsOverTLS = _over_tls(test_http.SmallRequestTests)
RendezvousRequestTestsOverTLS = _over_tls(test_http.RendezvousRequestTests)
FailureTestsOverTLS = _over_tls(test_http.FailureTests)
RegistrationTestsOverTLS = _over_tls(test_wcf.RegistrationTests)
RequestReplyTestsOverTLS = _over_tls(test_wcf.RequestReplyTests)
DatagramTestsOverTLS = _over_tls(test_wcf.DatagramTests)
SoapPostTestsOverTLS = _over_tls(test_httpsoap.SoapPostTests)
