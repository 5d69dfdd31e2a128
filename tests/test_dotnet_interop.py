"""
What the official .NET client (NuGet C{Microsoft.Azure.Relay}) needs on the wire, beyond what the Node clients do.

The .NET client cannot run here, so each test reproduces its wire behaviour exactly, citing the source in
U{https://github.com/Azure/azure-relay-dotnet} (paths below are under C{src/Microsoft.Azure.Relay/}).
"""

from __future__ import annotations

import json
import uuid

from lxml import etree

from .httpharness import Reply
from .test_http import HttpTestCase
from .wsharness import HOST, KEY, GatewayTestCase, RecordingClient

DOTNET_CONTROL_BUFFER = 64 * 1024
"""
The .NET listener's control-channel receive buffer, in bytes.

C{HybridConnectionListener.cs} line 21 (C{DefaultConnectionBufferSize = 64 * 1024}) and line 618 (the
control connection's C{receiveBuffer}); lines 850-877 receive each message into what is left of that
buffer and never grow it.
"""


def dotnet_control_pump_reads(payload: bytes) -> bool:
    """
    Whether the .NET listener's control-channel pump can read a message of this size.

    Past the buffer, its next C{ReceiveAsync} gets an empty segment (C{HybridConnectionListener.cs} line
    852); the managed WebSocket answers that with 0 bytes and C{EndOfMessage = false} without consuming
    anything (C{WebSockets/NetStandard20/ManagedWebSocket.cs} lines 692-699, as the runtime's own
    C{ManagedWebSocket}), so the pump spins on the message for good: the listener takes no more
    announcements, while its keep-alive keeps the channel looking alive.
    """
    return len(payload) <= DOTNET_CONTROL_BUFFER


class AcceptMessageSizeTests(GatewayTestCase):
    """An C{accept} must fit the .NET listener's control-channel buffer."""

    def test_sender_whose_accept_would_not_fit_is_refused(self) -> None:
        """
        A sender whose C{accept} would be over 64 kB is refused with 431; the listener is not sent it.

        Its headers fit the gateway's header limit (64 kB), but C{connectHeaders} carries them JSON-escaped
        (a C{"} takes two bytes), so the announcement would be twice as large: the .NET listener's pump
        would spin on it (L{dotnet_control_pump_reads}) and serve no sender again.
        """
        listener = self.listen()
        self.net.flush()
        sender = self.send(headers_extra={"X-Quoted": '"' * 33000})
        self.net.flush()
        self.assertEqual(sender.status, 431)
        self.assertTrue(all(dotnet_control_pump_reads(payload) for payload, _ in listener.messages))
        self.assertEqual(listener.messages, [])
        # The listener still serves the next sender.
        sender = self.send(headers_extra={"X-Quoted": '"' * 100})
        self.net.flush()
        ((payload, is_binary),) = listener.messages
        self.assertFalse(is_binary)
        self.assertIn("accept", json.loads(payload))

    def test_accept_up_to_the_buffer_is_sent(self) -> None:
        """An C{accept} of large but fitting headers (40 kB) is announced as before."""
        listener = self.listen()
        self.net.flush()
        self.send(headers_extra={"X-Big": "a" * 40000})
        self.net.flush()
        ((payload, _),) = listener.messages
        self.assertTrue(dotnet_control_pump_reads(payload))
        self.assertEqual(json.loads(payload)["accept"]["connectHeaders"]["X-Big"], "a" * 40000)


DOTNET_USER_AGENT = "azure-relay-dotnet/2.0.15596.0 (Unix 5.15.0.0; .NET 6.0.36)"
"""
The C{Relay-User-Agent} of a .NET listener's control channel.

C{HybridConnectionConstants.cs} lines 29-30 (C{ClientAgent}) and 51 (the header's name), set on the listen
upgrade at C{HybridConnectionListener.cs} line 746; the rendezvous upgrades carry no such header
(C{HybridHttpConnection.cs} lines 262-272).
"""


class DotnetRendezvousTests(HttpTestCase):
    """HTTP rendezvous sockets of a .NET listener."""

    def dotnet_listen(self) -> RecordingClient:
        """
        A control channel opened as C{HybridConnectionListener} opens it.

        C{HybridConnectionListener.cs} lines 746-761: C{Relay-User-Agent}, the token in
        C{ServiceBusAuthorization}, and C{sb-hc-action=listen&sb-hc-id=<GUID>} (C{HybridConnectionUtility.cs}
        lines 28-45 and 108-126).
        """
        headers = {"Relay-User-Agent": DOTNET_USER_AGENT, "ServiceBusAuthorization": self.token()}
        return self.net.connect(
            f"wss://{HOST}/$hc/hyco?sb-hc-action=listen&sb-hc-id={uuid.uuid4()}", headers=headers
        )

    def answer_and_close(self, rendezvous: RecordingClient, request_id: str, body: bytes) -> None:
        """
        Answer on the rendezvous, then close it, as C{HybridHttpConnection} does after every response.

        C{HybridHttpConnection.cs} lines 497-551 (C{ResponseStream.CloseAsync}): the response (lines
        225-254), then C{CloseAsync} of the rendezvous with 1000 "NormalClosure" (lines 274-285); only the
        first request on a rendezvous is ever read (C{ProcessFirstRequestAsync}, lines 88-106).
        """
        response = {"requestId": request_id, "statusCode": 200, "statusDescription": "OK", "body": True}
        rendezvous.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        rendezvous.sendMessage(body, isBinary=True)
        self.net.flush()

    def test_dotnet_rendezvous_is_not_kept_for_the_next_request(self) -> None:
        """
        A POST after a large one on the same connection goes on the control channel: no 502.

        It used to go to the rendezvous that had fetched the large one, which the .NET listener was closing
        (it reads no second request there), and got a 502.
        """
        listener = self.dotnet_listen()
        self.net.flush()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70000)
        self.net.flush()
        rendezvous, request = self.fetch(listener)
        self.answer_and_close(rendezvous, request["id"], b"stored")
        self.assertEqual(sender.reply.body, b"stored")
        # The next request comes in before the listener's close frame does.
        sender.request("POST", "/hyco/next", self.auth(), b"small")
        self.net.flush()
        rendezvous.sendClose(1000, "NormalClosure")
        self.net.flush()
        following = self.texts(listener)[-1]["request"]
        self.assertEqual((following["requestTarget"], following["method"]), ("/hyco/next", "POST"))
        self.assertEqual(listener.messages[-1], (b"small", True))
        self.respond(listener, following["id"], body=b"next")
        self.assertEqual([(r.status, r.body) for r in sender.replies], [(200, b"stored"), (200, b"next")])
        self.assertEqual(len(rendezvous.messages), 2)  # the request fetched and its body; nothing more

    def test_other_listeners_rendezvous_are_still_kept(self) -> None:
        """A listener without the .NET agent (hyco-https reads further requests there) keeps its socket."""
        listener = self.listen()
        self.net.flush()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70000)
        self.net.flush()
        rendezvous, request = self.fetch(listener)
        self.respond(rendezvous, request["id"], body=b"stored")
        sender.request("POST", "/hyco/next", self.auth(), b"small")
        self.net.flush()
        self.assertEqual(json.loads(rendezvous.messages[-2][0])["request"]["requestTarget"], "/hyco/next")


ATOM = "{http://www.w3.org/2005/Atom}"
CONNECT = "{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}"


class RuntimeInformationTests(HttpTestCase):
    """C{GetRuntimeInformationAsync} of C{HybridConnectionListener} and C{HybridConnectionClient}."""

    def runtime_information(self, token: str | None = None, path: str = "/hyco?api-version=2016-07") -> Reply:
        """
        Ask as C{ManagementOperations.GetAsync} asks (C{ManagementOperations.cs} lines 22-36 and 64-70).

        An HTTPS GET of the entity's URI with C{?api-version=2016-07}, C{X-PROCESS-AT: ServiceBus}, and a
        token for the entity (C{http://HOST/NAME/}, as C{TokenProvider.NormalizeAudience} makes it) in
        C{Authorization}.
        """
        sender = self.sender()
        authorization = token if token is not None else self.token("hyco/")
        sender.request("GET", path, {"X-PROCESS-AT": "ServiceBus", "Authorization": authorization})
        self.net.flush()
        return sender.reply

    def description(self, reply: Reply) -> etree._Element:
        """
        The description the .NET client reads from the Atom entry (C{ManagementOperations.cs} lines 79-98).

        The response must not say C{type=feed} (lines 100-117: that means "no such entity").
        """
        self.assertEqual(reply.status, 200)
        self.assertIn("application/atom+xml", reply.header("content-type") or "")
        self.assertNotIn("type=feed", reply.header("content-type") or "")
        entry = etree.fromstring(reply.body)
        self.assertEqual(entry.tag, f"{ATOM}entry")
        content = entry.find(f"{ATOM}content")
        assert content is not None
        (description,) = list(content)
        self.assertEqual(description.tag, f"{CONNECT}HybridConnectionDescription")
        return description

    def test_listener_count(self) -> None:
        """
        The gateway answers with the hybrid connection's description; the listener is not asked.

        The members come in C{HybridConnectionRuntimeInformation.cs}'s order (lines 12-27): the data
        contract serializer skips one out of order.
        """
        listener = self.listen()
        self.net.flush()
        description = self.description(self.runtime_information())
        self.assertEqual(
            [(child.tag, child.text) for child in description],
            [(f"{CONNECT}RequiresClientAuthorization", "true"), (f"{CONNECT}ListenerCount", "1")],
        )
        self.assertEqual(listener.messages, [])

    def test_no_listener(self) -> None:
        """With no listener online the count is 0 (it was a 502: the request was relayed)."""
        description = self.description(self.runtime_information())
        self.assertEqual(description.findtext(f"{CONNECT}ListenerCount"), "0")

    def test_listen_only_token(self) -> None:
        """A listener's own Listen-only token is enough (it is the listener's method too)."""
        listen_only = self.token("hyco/", key_name="listen-only", key=KEY[::-1])
        description = self.description(self.runtime_information(listen_only))
        self.assertEqual(description.findtext(f"{CONNECT}ListenerCount"), "0")

    def test_needs_a_valid_token(self) -> None:
        """No token, or a bad one: 401, as for any other request."""
        self.assertEqual(self.runtime_information("").status, 401)
        self.assertEqual(self.runtime_information(self.token("hyco/", key="wrong-key")).status, 401)

    def test_other_requests_are_still_relayed(self) -> None:
        """Without C{X-PROCESS-AT: ServiceBus}, or below the name, a GET is relayed as before."""
        listener = self.listen()
        self.net.flush()
        self.sender().request("GET", "/hyco?api-version=2016-07", self.auth())
        self.net.flush()
        headers = {**self.auth(), "X-PROCESS-AT": "ServiceBus"}
        self.sender().request("GET", "/hyco/sub?api-version=2016-07", headers)
        self.net.flush()
        self.assertEqual(
            [request["request"]["requestTarget"] for request in self.texts(listener)],
            ["/hyco?api-version=2016-07", "/hyco/sub?api-version=2016-07"],
        )


def dotnet_type_hints(value: object) -> list[str]:
    """
    The type hints the .NET listener's JSON reader finds in a control message: C{[]} unless it is refused.

    C{ListenerCommand.ReadObject} (C{ListenerCommand.cs} lines 42 and 61-72) is a
    C{DataContractJsonSerializer}. Its reader takes a C{"__type"} that is the first member of any object
    for a type name (dotnet/corefx C{XmlJsonReader.ReadServerTypeAttribute}; then
    C{XmlObjectSerializerReadContextComplexJson.ReadAttributes}), which no type of the contract answers
    to: the whole command fails to deserialize.
    """
    if isinstance(value, dict):
        found = [str(value["__type"])] if next(iter(value), None) == "__type" else []
        for item in value.values():
            found += dotnet_type_hints(item)
        return found
    if isinstance(value, list):
        return [hint for item in value for hint in dotnet_type_hints(item)]
    return []


FORGED_ACCEPT = json.dumps(
    {
        "accept": {
            "address": "wss://intranet.example/$hc/x?sb-hc-action=accept&sb-hc-id=1",
            "id": "1",
            "connectHeaders": {
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        }
    }
).encode()


class TypeHintTests(HttpTestCase):
    """A sender's header named C{__type} must not reach a .NET listener as the first key of an object."""

    def test_request_headers(self) -> None:
        """
        A request whose first header is C{__type} reaches the .NET listener readable, without that header.

        Unreadable, the listener dropped it without an answer (C{HybridConnectionListener.cs} lines
        477-480: logged), and never took the body that followed (C{HybridHttpConnection.cs} lines 35-46
        read it only after the command); its pump then read the body as a control command (lines 850-877
        pass every message to C{OnCommandAsync}, whatever its type). A sender could so make the listener
        dial any address it chose, inside its network, and hand the socket to the application as an
        accepted connection (here: a forged C{accept}).
        """
        listener = self.listen()
        self.net.flush()
        sender = self.sender()
        head = (
            b"POST /hyco/x HTTP/1.1\r\n__type: ListenerCommand:#Microsoft.Azure.Relay\r\nHost: relay.test\r\n"
            b"ServiceBusAuthorization: " + self.token().encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(FORGED_ACCEPT)
        )
        sender.send(head + FORGED_ACCEPT)
        self.net.flush()
        (payload, _), (body, is_binary) = listener.messages
        request = json.loads(payload)
        self.assertEqual(dotnet_type_hints(request), [])
        self.assertNotIn("__type", request["request"]["requestHeaders"])
        self.assertEqual((body, is_binary), (FORGED_ACCEPT, True))

    def test_connect_headers(self) -> None:
        """A WebSocket sender's C{__type} header is not in C{connectHeaders} (its accept was unreadable)."""
        listener = self.listen()
        self.net.flush()
        sender = self.sender()
        sender.send(
            b"GET /$hc/hyco?sb-hc-action=connect HTTP/1.1\r\n__type: x\r\nHost: relay.test\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"ServiceBusAuthorization: " + self.token().encode() + b"\r\n\r\n"
        )
        self.net.flush()
        ((payload, _),) = listener.messages
        accept = json.loads(payload)
        self.assertEqual(dotnet_type_hints(accept), [])
        self.assertNotIn("__type", accept["accept"]["connectHeaders"])
        self.assertIn("Sec-WebSocket-Key", accept["accept"]["connectHeaders"])
