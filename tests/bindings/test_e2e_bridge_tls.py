"""
End to end: the bridge with certificates of a private CA (C{relay cert}'s development CA, say).

A C{wss://} gateway and an C{https://} backend that the platform's certificate authorities do not vouch for
are trusted with C{--ca} and C{--backend-ca}; without them the bridge does not start and says why.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import Certificate

from bindings.bridge import BridgeError, SoapBridge
from bindings.credentials import parse_address
from relay.certs import ServerCertificate, issue_server_certificate

from .e2e_support import CONFIG, BindingsE2E
from .test_e2e_bridge import bridge_process, legacy_site


class BridgeTLSTests(BindingsE2E):
    """A bridge between TLS peers whose certificates come from a private CA."""

    def certificate(self) -> ServerCertificate:
        base = Path(tempfile.mkdtemp(prefix="relay-test-"))
        self.addCleanup(shutil.rmtree, base, True)
        return issue_server_certificate(base, ["127.0.0.1"])

    async def https_backend(self, cert: ServerCertificate) -> str:
        description = cert.endpoint_description(0, interface="127.0.0.1")
        port: IListeningPort = await serverFromString(reactor, description).listen(legacy_site())
        self.addCleanup(port.stopListening)
        return f"https://127.0.0.1:{port.getHost().port}/service"  # type: ignore[attr-defined]

    async def test_https_backend(self) -> None:
        """A backend's CA given to the bridge is trusted; without it the bridge refuses to start."""
        await self.start()
        cert = self.certificate()
        backend = await self.https_backend(cert)
        address, credentials = parse_address(self.url("legacy")), self.credentials()
        untrusted = SoapBridge(backend, address, credentials, reactor=reactor)
        with self.assertRaises(BridgeError) as refused:
            await untrusted.start()
        self.assertIn("certificate verify failed", str(refused.exception))
        ca = Certificate.loadPEM(cert.ca_path.read_bytes())
        bridge = SoapBridge(backend, address, credentials, reactor=reactor, backend_trust_root=ca)
        await bridge.start()
        self.addCleanup(bridge.stop)
        added = await self.in_thread(
            lambda: self.zeep_client("legacy", self.token("legacy")).service.Add(2, 3)
        )
        self.assertEqual(added, 5)

    async def test_command(self) -> None:
        """C{relay soap-bridge --ca --backend-ca}: a wss gateway and an https backend of a development CA."""
        cert = self.certificate()
        await self.start(CONFIG, listen=cert.endpoint_description(0, interface="127.0.0.1"))
        backend = await self.https_backend(cert)
        ca = str(cert.ca_path)
        process = bridge_process(
            self, backend, self.gateway.connection_string, "--ca", ca, "--backend-ca", ca
        )
        await self.until(lambda: self.listener_count("legacy") == 1 or process.poll() is not None, timeout=20)
        if process.poll() is not None:
            self.fail(process.communicate()[1])

        def add() -> int:
            client = self.zeep_client("legacy", self.token("legacy"), verify=str(cert.ca_path))
            return client.service.Add(20, 22)  # type: ignore[no-any-return]

        self.assertEqual(await self.in_thread(add), 42)
