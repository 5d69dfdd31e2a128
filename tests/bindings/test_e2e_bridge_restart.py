"""
End to end: C{relay soap-bridge} across gateway restarts.

It registers again when the gateway comes back; when the gateway refuses it for good after a restart
(the name is no longer a request/reply name, say), the command ends with status 1 rather than staying up
with nothing registered.
"""

from __future__ import annotations

import socket
import subprocess
import threading

from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort

from .e2e_support import CONFIG, BindingsE2E
from .test_e2e_bridge import bridge_process, legacy_site

LEGACY = '[[namespaces.requestreply]]\n  name = "legacy"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BridgeRestartTests(BindingsE2E):
    async def restart(self, config: str, listen: str) -> None:
        await self.gateway.service.stopService()
        await self.start(config, listen=listen)

    async def test_gateway_restarts(self) -> None:
        """Back on a restarted gateway; exit status 1 once a restarted gateway refuses the name for good."""
        listen = f"tcp:{free_port()}:interface=127.0.0.1"
        await self.start(CONFIG, listen=listen)
        backend: IListeningPort = reactor.listenTCP(0, legacy_site(), interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        url = f"http://127.0.0.1:{backend.getHost().port}/service"  # type: ignore[attr-defined]
        process = bridge_process(self, url, self.gateway.connection_string)
        await self.until(lambda: self.listener_count("legacy") == 1, timeout=20)
        await self.restart(CONFIG, listen)
        await self.until(lambda: self.listener_count("legacy") == 1, timeout=20)
        added = await self.in_thread(
            lambda: self.zeep_client("legacy", self.token("legacy")).service.Add(2, 3)
        )
        self.assertEqual(added, 5)

        await self.restart(CONFIG.replace(LEGACY, LEGACY.replace("requestreply", "oneway")), listen)
        await self.until(lambda: process.poll() is not None, timeout=20)
        _, stderr = await self.in_thread(lambda: process.communicate(timeout=10))
        self.assertEqual(process.returncode, 1, stderr[-2000:])
        self.assertIn("relay soap-bridge: ", stderr)
        self.assertIn("is a oneway name, not requestreply", stderr.splitlines()[-1])

    async def test_stopped_while_the_gateway_is_unreachable(self) -> None:
        """
        SIGTERM while the bridge still retries its first connection: status 0, nothing else said.

        It ended with status 1, "the gateway refused the bridge: the listener was closed before it
        registered", and an unhandled ReactorNotRunning traceback.
        """
        await self.start()
        backend: IListeningPort = reactor.listenTCP(0, legacy_site(), interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        nobody = f"Endpoint=sb://127.0.0.1:{free_port()}/;SharedAccessKeyName=root;SharedAccessKey=eA==;"
        url = f"http://127.0.0.1:{backend.getHost().port}/service"  # type: ignore[attr-defined]
        process = bridge_process(self, url, nobody + "UseDevelopmentEmulator=true", stdout=subprocess.DEVNULL)
        lines: list[str] = []
        assert process.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        await self.until(lambda: any("retrying in" in line for line in lines), timeout=20)
        process.terminate()
        status = await self.in_thread(lambda: process.wait(10))
        await self.in_thread(lambda: reader.join(10))
        self.assertEqual(status, 0, "".join(lines)[-2000:])
        self.assertNotIn("Traceback", "".join(lines))
        self.assertNotIn("relay soap-bridge:", "".join(lines))
