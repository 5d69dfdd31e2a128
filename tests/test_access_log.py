"""What the gateway's log lines show of a refused or failed request: no secrets, and the reason."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import log as legacy_log

from .test_http import HttpTestCase


class AccessLogTests(HttpTestCase):
    """twisted.web's access line for requests the relay did not log itself."""

    def lines(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def setUp(self) -> None:
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.gateway.site.doStart()  # what listening on a port does: the access log goes to the log
        self.addCleanup(self.gateway.site.doStop)

    def test_query_token_hidden(self) -> None:
        """A live token in C{sb-hc-token} of a request that failed (no listener, 502) is not logged."""
        token = self.token("hyco")
        sender = self.sender()
        sender.request("GET", "/hyco/x?a=1&sb-hc-token=" + quote(token, safe=""), {})
        self.net.flush()
        self.assertEqual(sender.reply.status, 502)
        signature = token.split("sig=")[1].split("&")[0]
        for secret in (signature, quote(signature, safe=""), quote(quote(signature, safe=""), safe="")):
            self.assertEqual([line for line in self.lines() if secret in line], [])
        access = [line for line in self.lines() if '"GET /hyco/x?' in line]
        self.assertEqual(len(access), 1, self.lines())
        self.assertIn('"GET /hyco/x?a=1&sb-hc-token=(hidden) HTTP/1.1" 502', access[0])

    def test_refused_token_hidden(self) -> None:
        """A token for another entity (403) is not logged either."""
        token = self.token("open")
        sender = self.sender()
        sender.request("GET", "/hyco/x?sb-hc-token=" + quote(token, safe=""), {})
        self.net.flush()
        self.assertEqual(sender.reply.status, 403)
        signature = quote(token.split("sig=")[1].split("&")[0], safe="")
        self.assertEqual([line for line in self.lines() if signature in line], [])

    def test_referer_token_hidden(self) -> None:
        """
        A token in the C{Referer} of a refused request is not logged either.

        A browser can only send a token in the query: a page opened with C{?sb-hc-token=...} names that
        URL as the referer of each of its sub-requests, and those without a token get 401.
        """
        token = self.token("hyco")
        page = "http://relay.test/hyco/page?sb-hc-token=" + quote(token, safe="") + "&lang=en"
        sender = self.sender()
        sender.request("GET", "/hyco/style.css", {"Referer": page})  # no token: 401
        self.net.flush()
        self.assertEqual(sender.reply.status, 401)
        signature = quote(token.split("sig=")[1].split("&")[0], safe="")
        self.assertEqual([line for line in self.lines() if signature in line], [])
        access = [line for line in self.lines() if '"GET /hyco/style.css' in line]
        self.assertEqual(len(access), 1, self.lines())
        self.assertIn('"http://relay.test/hyco/page?sb-hc-token=(hidden)&lang=en"', access[0])


class RefusalReasonTests(HttpTestCase):
    """The refusal line keeps its reason when a legacy observer is listening too."""

    def test_reason_with_a_legacy_observer(self) -> None:
        """
        The reason is a field of its own: C{message} is the legacy log system's, which rewrites it.
        """
        legacy: list[dict[str, object]] = []
        legacy_log.addObserver(legacy.append)
        self.addCleanup(legacy_log.removeObserver, legacy.append)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        sender = self.sender()
        sender.request("GET", "/hyco/x", {})  # no token: 401
        self.net.flush()
        self.assertEqual(sender.reply.status, 401)
        refusals = [formatEvent(event) for event in events if "refused GET" in formatEvent(event)]
        self.assertEqual(len(refusals), 1)
        self.assertRegex(refusals[0], r"refused GET /hyco/x: UNAUTHORIZED \w+")
        self.assertNotIn("()", refusals[0])
