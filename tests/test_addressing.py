"""Tests for L{relay.hybrid.addressing}: reserved parameters and rendezvous addresses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.errors import new_tracking_id
from relay.hybrid.addressing import (
    AddressError,
    hc_path,
    hide_reserved_values,
    http_base,
    is_reserved,
    rendezvous_address,
    request_address,
    split_target,
    websocket_base,
)
from relay.hybrid.rendezvous import new_key


class SplitTargetTests(SynchronousTestCase):
    """Reserved C{sb-hc-*} pairs are removed; everything else stays byte for byte."""

    def test_dotnet_query_string_cases(self) -> None:
        """The cases of the .NET client's C{HybridRequestTests.QueryString} test."""
        cases = {
            "/hyco?a=1&a=2&": "a=1&a=2&",
            "/hyco?sb-hc-undefined": "sb-hc-undefined",
            "/hyco?a=1&sb-hc-id=zzz&sb-hc-x&b=2": "a=1&sb-hc-x&b=2",
            "/hyco?q=%20x+y&SB-HC-Token=abc": "q=%20x+y",
            "/hyco?sb-hc-action=listen": "",
            "/hyco": "",
            "/hyco?": "",
        }
        for raw, query in cases.items():
            with self.subTest(raw=raw):
                self.assertEqual(split_target(raw).query, query)

    def test_reserved_values_are_decoded(self) -> None:
        """Reserved values are URL-decoded (C{+} is a space there), names lower-cased."""
        target = split_target("/$hc/x?sb-hc-Token=SharedAccessSignature+sr%3Dabc&sb-hc-id=a%2Fb")
        self.assertEqual(target.param("token"), "SharedAccessSignature sr=abc")
        self.assertEqual(target.param("id"), "a/b")
        self.assertEqual(target.path, "/$hc/x")

    def test_first_occurrence_wins_but_action_must_be_unique(self) -> None:
        """A repeated reserved parameter keeps its first value; a repeated action is an error."""
        self.assertEqual(split_target("/x?sb-hc-id=1&sb-hc-id=2").param("id"), "1")
        self.assertRaises(AddressError, split_target, "/x?sb-hc-action=listen&sb-hc-action=connect")

    def test_malformed(self) -> None:
        """Absolute-form targets and fragments are refused."""
        self.assertRaises(AddressError, split_target, "http://host/x")
        self.assertRaises(AddressError, split_target, "/x#frag")

    def test_target_property(self) -> None:
        """C{target} rebuilds path and passed-on query."""
        self.assertEqual(split_target("/hyco/a?x=1&sb-hc-id=2").target, "/hyco/a?x=1")
        self.assertEqual(split_target("/hyco/a?sb-hc-id=2").target, "/hyco/a")

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "sb-hc-id", "sb-hc-x", "B", "sb-hc-Token", "c%20d"]),
                st.text(alphabet="abc%20+=", max_size=5),
                st.booleans(),
            ),
            max_size=8,
        )
    )
    def test_unreserved_pairs_survive_in_order(self, pairs: list[tuple[str, str, bool]]) -> None:
        """Property: exactly the unreserved pairs remain, in their order and encoding."""
        raw_pairs = [f"{n}={v}" if eq else n for n, v, eq in pairs]
        target = split_target("/p?" + "&".join(raw_pairs))
        expected = [p for p in raw_pairs if not is_reserved(p)]
        self.assertEqual(target.query, "&".join(expected) if expected else "")


class HiddenValuesTests(SynchronousTestCase):
    """L{hide_reserved_values}: what the access log may show of a target."""

    def test_secrets_hidden(self) -> None:
        """Tokens and keys are hidden however their names are spelled; the action and the rest stay."""
        raw = (
            b"/hyco/x?sb-hc-action=request&sb-hc-token=SharedAccessSignature%20sig%3Dabc"
            b"&a=1&%73B-HC-ID=key123&sb-hc-=z&b=sb-hc-token%3Dnot-a-name"
        )
        self.assertEqual(
            hide_reserved_values(raw),
            b"/hyco/x?sb-hc-action=request&sb-hc-token=(hidden)&a=1&%73B-HC-ID=(hidden)&sb-hc-=(hidden)"
            b"&b=sb-hc-token%3Dnot-a-name",
        )

    def test_wcf_secrets_hidden(self) -> None:
        """The C{$wcf} binding's C{sb-wcf-*} values are hidden the same way, C{sb-wcf-action} kept."""
        raw = b"/$wcf/calc?sb-wcf-action=send&SB-WCF-Token=SharedAccessSignature%20sig%3Dabc&sb-wcf-id=me&a=1"
        self.assertEqual(
            hide_reserved_values(raw),
            b"/$wcf/calc?sb-wcf-action=send&SB-WCF-Token=(hidden)&sb-wcf-id=(hidden)&a=1",
        )

    def test_nothing_to_hide(self) -> None:
        """A target without reserved values is given back as it is (the same object)."""
        for raw in (
            b"/hyco/x",
            b"/hyco/x?a=1&b",
            b"/hyco/x?sb-hc-action=listen",
            b"/x?sb-hc-token",
            b"/x?sb-wcf-action=listen",
        ):
            self.assertIs(hide_reserved_values(raw), raw)


class PathTests(SynchronousTestCase):
    """The C{$hc} prefix and URL bases."""

    def test_hc_path(self) -> None:
        """The part after C{$hc}; an encoded C{$} is accepted."""
        self.assertEqual(hc_path("/$hc/team/app/x"), "/team/app/x")
        self.assertEqual(hc_path("/%24hc/hyco"), "/hyco")
        self.assertEqual(hc_path("/$HC"), "/")
        self.assertIsNone(hc_path("/hyco"))

    def test_bases(self) -> None:
        """HTTP(S) public URLs map to WS(S) bases and back."""
        self.assertEqual(websocket_base("https://relay.example.org/"), "wss://relay.example.org")
        self.assertEqual(websocket_base("http://127.0.0.1:9080"), "ws://127.0.0.1:9080")
        self.assertEqual(http_base("wss://h:8443/base/"), "https://h:8443/base")
        self.assertEqual(http_base("http://127.0.0.1:9080/"), "http://127.0.0.1:9080")
        self.assertEqual(http_base("https://relay.example.org"), "https://relay.example.org")
        self.assertRaises(AddressError, websocket_base, "ftp://x")
        self.assertRaises(AddressError, websocket_base, "relay.example.org")
        self.assertRaises(AddressError, websocket_base, "https://[::1/")  # urlsplit raises a ValueError

    def test_rendezvous_address(self) -> None:
        """The address carries the sender's path suffix and query, the action and the id."""
        address = rendezvous_address("wss://r.example", "/hyco/chat", "room=1", "accept", "abc")
        self.assertEqual(address, "wss://r.example/$hc/hyco/chat?room=1&sb-hc-action=accept&sb-hc-id=abc")
        keyed = rendezvous_address("ws://r", "/hyco", "", "accept", "my id", key="k1")
        self.assertEqual(keyed, "ws://r/$hc/hyco?sb-hc-action=accept&sb-hc-id=my%20id&sb-hc-key=k1")

    @given(
        base=st.sampled_from(["ws://r", "wss://relay.example:8443/base"]),
        entity=st.sampled_from(["/a", "/x/y"]),
    )
    def test_request_address(self, base: str, entity: str) -> None:
        """An HTTP request's address, made from a cached start, is the one rendezvous_address makes."""
        request_id, key = new_tracking_id(), new_key()
        self.assertEqual(
            request_address(base, entity, request_id, key),
            rendezvous_address(base, entity, "", "request", request_id, key=key),
        )
