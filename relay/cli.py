"""
The C{relay} command for people: tokens, connection strings, keys and development certificates.

Unix habits: C{--help} everywhere, results on stdout, errors on stderr, exit status 0 on success, 1 on
failure and 2 on usage errors. The gateway itself runs under C{twistd relay}.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from relay.auth import generate_key, make_token
from relay.connstr import ConnectionString, ConnectionStringError, parse_connection_string
from relay.entities import EntityNameError, split_name
from relay.state import (
    DEVELOPMENT_KEY_NAME,
    ENDPOINT_FILE,
    default_state_dir,
    read_development_key,
    read_endpoint,
)

MAX_TTL = 36525 * 86400
"""The longest token lifetime C{relay token} signs: 100 years (the gateway reads at most 12 digits of expiry)."""


class CommandError(Exception):
    """A failure to report on stderr with exit status 1 (with no message: it was reported already)."""


class UsageError(CommandError):
    """A mistake in the command line that the parser could not see alone: usage on stderr, exit status 2."""


def _entity_named(name: str | None, connection_string: str) -> None:
    """
    Refuse a command line that names no entity: neither C{--name} nor C{EntityPath} in the string.

    @raise UsageError: when neither is there (a string that does not parse is the command's to report).
    """
    if name:
        return
    try:
        entity = parse_connection_string(connection_string).entity_path
    except ConnectionStringError:
        return
    if not entity:
        raise UsageError("give --name, or EntityPath in the connection string")


def _listener_connection_string(args: argparse.Namespace) -> str:
    """
    A listening command's C{--connection-string}, else C{$RELAY_CONNECTION_STRING}, naming an entity.

    @raise UsageError: when there is none, or neither it nor C{--name} names the entity.
    """
    connection_string: str | None = args.connection_string or os.environ.get("RELAY_CONNECTION_STRING")
    if not connection_string:
        raise UsageError("a connection string is needed: --connection-string or RELAY_CONNECTION_STRING")
    _entity_named(args.name, connection_string)
    return connection_string


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _seconds(text: str) -> float:
    """A duration option: a number of seconds, zero or more (a usage error otherwise)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more seconds: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    """A duration option that must be more than zero seconds."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than zero seconds: {text!r}")
    return value


def _ttl(text: str) -> float:
    """A token lifetime: more than zero seconds, at most L{MAX_TTL}."""
    value = _positive_seconds(text)
    if value > MAX_TTL:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TTL} seconds (100 years): {text!r}")
    return value


def _resource_uri(text: str) -> str:
    """A token's resource: a URI with a host name (C{http://HOST/NAME}, C{sb://HOST/}) or C{HOST/NAME}."""
    try:
        host = urlsplit(text if "://" in text else f"sb://{text}").hostname
    except ValueError:
        host = None
    if not host or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"not a resource URI such as http://HOST/NAME: {text!r}")
    return text


def _reply_bytes(text: str) -> int:
    """A request/reply message size: 1 byte to the kind's hard cap (64 MiB)."""
    from bindings.settings import MESSAGE_BYTES, REQUEST_REPLY

    cap = MESSAGE_BYTES[REQUEST_REPLY][1]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= cap:
        raise argparse.ArgumentTypeError(f"must be a number of bytes from 1 to {cap}: {text!r}")
    return value


def _http_url(text: str) -> str:
    """An absolute C{http://} or C{https://} URL with a host, and no user name or password."""
    try:
        parts = urlsplit(text)
        if "@" in parts.netloc:  # refused before any message quotes the URL, and its password, back
            raise argparse.ArgumentTypeError(
                "must not carry a user name or password: no credentials are sent to the service (a caller's "
                "own Authorization header is)"
            )
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def _endpoint(text: str) -> str:
    """
    A connection string's C{Endpoint}: an absolute URI such as C{sb://relay.example.org/}.

    Errors do not quote the value: it may be a whole connection string, key included.
    """
    if ";" in text:
        raise argparse.ArgumentTypeError("must be the endpoint alone, without ';' (such as sb://HOST/)")
    try:
        parse_connection_string(f"Endpoint={text};SharedAccessSignature=x")
    except ConnectionStringError:
        raise argparse.ArgumentTypeError("not an absolute URI such as sb://HOST/") from None
    return text


def _entity(text: str) -> str:
    """A hybrid connection name (C{EntityPath}): segments of letters, digits, '.', '_' and '-'."""
    try:
        return "/".join(split_name(text))
    except EntityNameError as e:
        raise argparse.ArgumentTypeError(f"{e}: {text!r}") from None


def cmd_token(args: argparse.Namespace) -> str:
    """Sign a SAS token."""
    key_name, key = args.key_name, args.key
    if args.connection_string:
        try:
            cs = parse_connection_string(args.connection_string)
        except ConnectionStringError as e:
            raise CommandError(str(e)) from None
        key_name, key = key_name or cs.key_name, key or cs.key
    if not key_name or not key:
        raise UsageError("a key is needed: give --key-name and --key, or --connection-string")
    return make_token(args.uri, key_name, key, ttl=args.ttl)


def cmd_connection_string(args: argparse.Namespace) -> str:
    """Print the development namespace's connection string."""
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        key = read_development_key(state_dir)
    except OSError as e:
        raise CommandError(f"cannot read the development key in {state_dir}: {e.strerror or e}") from None
    if key is None:
        raise CommandError(
            f"no development key in {state_dir}: start the gateway once with 'twistd -n relay'"
        )
    endpoint, plain = args.endpoint, not args.tls
    if endpoint is None:
        try:
            recorded = read_endpoint(state_dir)
        except OSError as e:
            raise CommandError(
                f"cannot read the recorded endpoint {state_dir / ENDPOINT_FILE}: {e.strerror or e}; "
                "give --endpoint"
            ) from None
        if recorded is None:
            raise CommandError(
                f"no endpoint recorded in {state_dir / ENDPOINT_FILE} (the gateway writes it once it "
                "listens); give --endpoint"
            )
        endpoint, plain = recorded
    cs = ConnectionString(
        endpoint=endpoint, key_name=DEVELOPMENT_KEY_NAME, key=key, entity_path=args.entity, plain=plain
    )
    return cs.format()


def cmd_key(args: argparse.Namespace) -> str:
    """Make a new random key."""
    return generate_key()


def cmd_cert(args: argparse.Namespace) -> str:
    """Write a development CA and a server certificate."""
    from relay.certs import CertificateError, issue_server_certificate

    try:
        issued = issue_server_certificate(Path(args.dir), list(args.host))
    except CertificateError as e:
        raise CommandError(str(e)) from None
    for warning in issued.warnings:
        sys.stderr.write(f"relay cert: warning: {warning}\n")
    return "\n".join(
        [
            f"CA certificate:     {issued.ca_path}",
            f"server certificate: {issued.cert_path}",
            f"server key:         {issued.key_path}",
            "",
            "Serve TLS with:",
            f"  twistd -n relay --listen {shlex.quote(issued.endpoint_description(443))} "
            f"--public-url {shlex.quote(public_url_for_hosts(issued.hosts))}",
            "Trust it from Node clients with:",
            f"  export NODE_EXTRA_CA_CERTS={shlex.quote(str(issued.ca_path))}",
        ]
    )


def public_url_for_hosts(hosts: Sequence[str]) -> str:
    """
    The C{https} URL of the certificate's host that listeners are likeliest to dial, for C{--public-url}.

    A DNS name before an IP address, a wildcard name last; an IPv6 address in brackets, without which
    the URL is not one (C{https://::1}).
    """
    host = min(hosts, key=_host_rank)  # the first of the best rank
    return f"https://[{host}]" if ":" in host else f"https://{host}"


def _host_rank(host: str) -> int:
    if host.startswith("*."):
        return 2
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return 0
    return 1


def cmd_expose(args: argparse.Namespace) -> None:
    """Forward relayed HTTP requests and WebSocket senders to a local URL until interrupted."""
    from relay.exposeaddress import ExposeError
    from relay.exposerun import run_expose

    connection_string = _listener_connection_string(args)
    try:
        status = run_expose(
            args.url,
            connection_string,
            args.name,
            ca_file=args.ca,
            verbose=args.verbose,
            quiet=args.quiet,
            local_timeout=args.timeout or None,
        )
    except ExposeError as e:
        raise CommandError(str(e)) from None
    if status:
        raise CommandError("")  # why (refused, given up) is already on stderr, in one line


def cmd_soap_bridge(args: argparse.Namespace) -> None:
    """Expose an existing HTTP SOAP service on a request/reply name (runs until interrupted)."""
    from bindings.bridge import BridgeError, SoapBridge, run_bridge
    from bindings.credentials import from_connection_string
    from bindings.settings import ClientAuth, Discovery
    from bindings.soap import SoapVersion
    from relay.exposeaddress import ExposeError
    from relay.exposerun import load_ca

    connection_string = _listener_connection_string(args)
    try:
        address, credentials = from_connection_string(connection_string, args.name)
        trust_root = load_ca(args.ca) if args.ca is not None else None
        backend_trust_root = load_ca(args.backend_ca, "--backend-ca") if args.backend_ca is not None else None
    except (ValueError, ExposeError) as e:
        raise CommandError(str(e)) from None
    bridge = SoapBridge(
        args.url,
        address,
        credentials,
        wsdl_url=args.wsdl_url,
        soap_version=SoapVersion(args.soap_version) if args.soap_version else None,
        client_auth=ClientAuth(args.client_auth),
        discovery=Discovery(args.discovery),
        display_name=args.display_name,
        request_timeout=args.request_timeout,
        max_message_bytes=args.max_message_bytes,
        close_timeout=args.close_timeout,
        trust_root=trust_root,
        backend_trust_root=backend_trust_root,
    )
    try:
        run_bridge(bridge)
    except BridgeError as e:
        raise CommandError(str(e)) from None
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="relay",
        description="Tools for the relay gateway (run the gateway itself with 'twistd -n relay').",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    token = commands.add_parser("token", help="sign a shared access signature token")
    token.add_argument(
        "--uri", required=True, type=_resource_uri, help="resource the token is for, e.g. http://host/hyco"
    )
    token.add_argument("--key-name", help="shared access rule name (skn)")
    token.add_argument("--key", help="the rule's key")
    token.add_argument("--connection-string", help="take key name and key from a connection string")
    token.add_argument(
        "--ttl", type=_ttl, default=3600.0, metavar="SECONDS", help="lifetime in seconds (default 3600)"
    )
    token.set_defaults(run=cmd_token, parser=token)

    cs = commands.add_parser("connection-string", help="print the development namespace's connection string")
    cs.add_argument("--state-dir", help="the gateway's state directory (default $XDG_STATE_HOME/relay)")
    cs.add_argument(
        "--endpoint",
        type=_endpoint,
        help="endpoint to put in the string, e.g. sb://relay.example.org/ (default: where the gateway last "
        "listened, recorded in the state directory)",
    )
    cs.add_argument("--tls", action="store_true", help="with --endpoint: the endpoint serves TLS")
    cs.add_argument("--entity", type=_entity, metavar="NAME", help="add EntityPath=NAME")
    cs.set_defaults(run=cmd_connection_string, parser=cs)

    key = commands.add_parser("key", help="print a new random key for a shared access rule")
    key.set_defaults(run=cmd_key)

    cert = commands.add_parser("cert", help="write a development CA and a server certificate (like mkcert)")
    cert.add_argument("--host", action="append", required=True, help="DNS name or IP address (repeatable)")
    cert.add_argument("--dir", default="relay-certs", help="output directory (default ./relay-certs)")
    cert.set_defaults(run=cmd_cert)

    expose = commands.add_parser(
        "expose",
        help="serve a local web server through a hybrid connection",
        description="Register as a listener on a hybrid connection and forward every relayed HTTP request "
        "and WebSocket connection to URL (the path below the hybrid connection is appended). Logs one line "
        "per request on stdout; reconnects on its own; stops on SIGINT/SIGTERM.",
    )
    expose.add_argument("url", help="the local base URL, e.g. http://127.0.0.1:8000")
    expose.add_argument("--name", help="the hybrid connection (unless the connection string has EntityPath)")
    expose.add_argument(
        "--connection-string",
        help="Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=... "
        "(default: $RELAY_CONNECTION_STRING)",
    )
    expose.add_argument("--ca", help="trust this CA certificate (PEM) for a wss:// relay")
    expose.add_argument("-v", "--verbose", action="store_true", help="log connection events on stderr")
    expose.add_argument("-q", "--quiet", action="store_true", help="no access log on stdout")
    expose.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long the local server has to start each answer once the request is sent, before the "
        "sender gets 504 (default 60, the relay's default request timeout; 0: no limit)",
    )
    expose.set_defaults(run=cmd_expose, parser=expose)

    bridge = commands.add_parser(
        "soap-bridge", help="expose an existing HTTP SOAP service on a request/reply relay name"
    )
    bridge.add_argument(
        "--url",
        required=True,
        type=_http_url,
        help="the service's SOAP endpoint, e.g. http://127.0.0.1:8000/",
    )
    bridge.add_argument("--name", help="the relay name (default: EntityPath of the connection string)")
    bridge.add_argument(
        "--connection-string",
        help="gateway endpoint and a key with Listen (default: $RELAY_CONNECTION_STRING, which keeps the key "
        "out of the process list)",
    )
    bridge.add_argument("--wsdl-url", type=_http_url, help="where the service's WSDL is (default: URL?wsdl)")
    bridge.add_argument(
        "--soap-version", choices=["1.1", "1.2"], help="default: what the WSDL offers, 1.1 first"
    )
    bridge.add_argument(
        "--client-auth",
        choices=["token", "anonymous"],
        default="token",
        help="senders need a token? (default token)",
    )
    bridge.add_argument(
        "--discovery",
        choices=["private", "public"],
        default="private",
        help="list in the registry? (default private)",
    )
    bridge.add_argument("--display-name", help="registry title (default: the last segment of the name)")
    bridge.add_argument(
        "--request-timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for the service's whole answer (default 60)",
    )
    bridge.add_argument(
        "--close-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="once stopped, how long to wait for the calls in progress; a second signal stops at once "
        "(default 60)",
    )
    bridge.add_argument(
        "--max-message-bytes",
        type=_reply_bytes,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="the largest answer taken from the service; give the name's max_message_bytes when it is "
        "more than the default (default 4194304)",
    )
    bridge.add_argument("--ca", help="trust this CA certificate (PEM) for a wss:// relay")
    bridge.add_argument(
        "--backend-ca", help="trust this CA certificate (PEM) for an https:// service (--url, --wsdl-url)"
    )
    bridge.set_defaults(run=cmd_soap_bridge, parser=bridge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the C{relay} command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "connection-string" and args.tls and args.endpoint is None:
        args.parser.error("--tls needs --endpoint (the recorded endpoint says whether it serves TLS)")
    run: Callable[[argparse.Namespace], str | None] = args.run
    try:
        output = run(args)
    except UsageError as e:
        args.parser.error(str(e))
    except CommandError as e:
        if str(e):
            print(f"relay {args.command}: {e}", file=sys.stderr)
        return 1
    if output is not None:
        print(output)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
