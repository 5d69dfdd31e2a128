"""What the $wcf endpoint keeps of a message once it is written: nothing, however large it was."""

from __future__ import annotations

import gc
import tracemalloc

from .test_wcf import add_request
from .wcfharness import BindingsTestCase

MIB = 1024 * 1024


class WrittenMessageTests(BindingsTestCase):
    """A large request written to its listener is not held by the gateway afterwards."""

    def test_large_request_not_kept(self) -> None:
        """
        A 3 MiB request, written and read: the gateway holds well under 1 MiB more than before it.

        The frame cache kept the last payload and its frame (6 MiB here, up to 128 MiB for a 64 MiB
        request) until the next message was written on any $wcf connection, however long that took.
        """
        listener = self.listener("calc")
        sender = self.wcf("calc", "send")
        request = add_request(message_id="urn:uuid:big").replace(
            b"</s:Body>", b"<pad>" + b"x" * (3 * MIB) + b"</pad></s:Body>"
        )
        gc.collect()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        sender.sendMessage(request, isBinary=False)
        del request
        self.net.flush()
        (payload, _binary) = listener.messages.pop()
        self.assertIn(b">urn:uuid:big<", payload)
        self.assertGreater(len(payload), 3 * MIB)
        del payload
        self.net.advance(0)
        self.net.flush()
        gc.collect()
        self.assertLess(tracemalloc.get_traced_memory()[0] - before, MIB)
