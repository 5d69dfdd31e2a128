"""
Endpoint strings checked before anything starts: syntax, port, and the files an C{ssl:} endpoint names.

Twisted parses an endpoint string only when it listens, and a missing, mismatched, encrypted or expired
certificate then ends in a traceback (or, if expired, is served). L{check_endpoint} finds those mistakes
first, with a message that names the option and the file, so C{twistd relay} can refuse to start cleanly.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from twisted.internet.endpoints import _parse


class EndpointProblem(Exception):
    """
    An endpoint string that cannot be served.

    @ivar files: the string is fine but a file it names (certificate, key) is not.
    """

    def __init__(self, problem: str, *, files: bool = False) -> None:
        super().__init__(problem)
        self.files = files


_PORT_TYPES = frozenset({"tcp", "tcp6", "ssl"})
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
# How Twisted's ssl: endpoint parser finds the certificates of extraCertChain (twisted.internet.endpoints).
_TWISTED_CHAIN_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----", re.DOTALL)


# An interface value cut short at its first unescaped ':', as Twisted splits "interface=::1".
_UNESCAPED_IPV6 = re.compile(r"(?:^|:)interface=[0-9A-Fa-f]*(?<!\\):")
_IPV6_HINT = " (escape each ':' of an IPv6 address with a backslash: interface=\\:\\:1)"


def split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword arguments of an endpoint string, by Twisted's own parser.

    C{serverFromString} splits with it too, so the check reads the string exactly as the gateway will.

    @raise EndpointProblem: for a string that parser cannot read (a trailing backslash).
    """
    try:
        args, kw = _parse(description)
    except RuntimeError:  # a backslash with nothing after it ends Twisted's tokenizer
        raise EndpointProblem("ends with a lone backslash") from None
    return [str(a) for a in args], {str(k): str(v) for k, v in kw.items()}


def serves_on_a_port(description: str) -> bool:
    """Whether an endpoint listens on a host and a port (tcp, tcp6, ssl), so a URL can be derived from it."""
    try:
        args, _ = split_endpoint(description)
    except EndpointProblem:
        return False
    return bool(args) and args[0] in _PORT_TYPES


def _read(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise EndpointProblem(f"{option} {path}: cannot read it: {e.strerror or e}", files=True) from None


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _public_key_bytes(key: Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _is_root(pem: bytes) -> bool:
    """Whether a PEM certificate is self-signed: a root, which clients bring themselves."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return False
    return certificate.issuer == certificate.subject


def _check_no_chain(cert_pem: bytes, cert_option: str, cert_path: str) -> None:
    """
    Refuse intermediate certificates after the first one of the certificate file (certbot's fullchain.pem).

    Twisted serves the first certificate alone and drops the rest without a word, so clients that need
    the intermediates fail to verify the server. A root after it (as in L{relay.certs}' combined file)
    loses nothing: clients trust it already, and a server need not send it.
    """
    certificates = [block for label, block in _pem_blocks(cert_pem) if label == b"CERTIFICATE"]
    if not all(_is_root(pem) for pem in certificates[1:]):
        raise EndpointProblem(
            f"{cert_option} {cert_path}: holds a certificate chain, of which Twisted would send only the "
            "first certificate; put the intermediate certificates in extraCertChain, e.g. "
            "certKey=cert.pem:extraCertChain=chain.pem",
            files=True,
        )


def _check_chain(chain: str) -> None:
    """
    Check an C{extraCertChain} file: PEM certificates, each of which Twisted's own reading finds.

    Twisted reads the file as ASCII and finds its certificates with a pattern that wants LF line ends: a
    file saved with CRLF ends failed in Twisted's parser (reported as a mistake on the command line), and
    a bundle with a few CRLF certificates among LF ones lost those without a word.
    """
    data = _read(chain, "extraCertChain")
    certificates = [block for label, block in _pem_blocks(data) if label == b"CERTIFICATE"]
    try:
        if not certificates:
            raise ValueError
        for pem in certificates:
            x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise EndpointProblem(
            f"extraCertChain {chain}: no readable PEM certificate in it", files=True
        ) from None
    problem = _unread_by_twisted(data, len(certificates))
    if problem is not None:
        raise EndpointProblem(f"extraCertChain {chain}: {problem}", files=True)


def _unread_by_twisted(data: bytes, count: int) -> str | None:
    """What keeps Twisted from reading all C{count} certificates of a chain file, or C{None}."""
    if not data.isascii():
        return (
            "holds characters that are not ASCII, which Twisted cannot read; keep only the PEM certificates"
        )
    found = len(_TWISTED_CHAIN_BLOCK.findall(data))
    if found >= count:
        return None
    if b"\r" in data:
        return (
            "has CRLF line ends, which Twisted cannot read; convert it to LF line ends (e.g. with dos2unix)"
        )
    return (
        f"Twisted finds {found} of its {count} certificates; put each BEGIN and END line on a line of its own"
    )


def check_tls_files(kw: dict[str, str], now: datetime.datetime) -> None:
    """
    Check the files of an C{ssl:} endpoint as Twisted will read them, with a message for each mistake.

    Twisted reads the first certificate and the first private key of C{certKey} followed by
    C{privateKey} (C{certKey} defaults to C{privateKey}, which defaults to C{server.pem}).

    @raise EndpointProblem: a file is missing or unreadable, holds no PEM certificate or key, the key is
        encrypted or is not the certificate's, the certificate is expired or not yet valid, or
        intermediate certificates follow it (they belong in C{extraCertChain}).
    """
    key_path = kw.get("privateKey", "server.pem")
    cert_path = kw.get("certKey") or key_path
    cert_option = "certKey" if kw.get("certKey") else "privateKey"
    key_pem = _read(key_path, "privateKey")
    cert_pem = key_pem if cert_path == key_path else _read(cert_path, "certKey")
    blocks = _pem_blocks(cert_pem + b"\n" + key_pem)
    certificates = [block for label, block in blocks if label == b"CERTIFICATE"]
    keys = [(label, block) for label, block in blocks if label.endswith(b"PRIVATE KEY")]
    if not certificates:
        raise EndpointProblem(f"{cert_option} {cert_path}: no PEM certificate in it", files=True)
    try:
        certificate = x509.load_pem_x509_certificate(certificates[0])
    except ValueError:
        raise EndpointProblem(
            f"{cert_option} {cert_path}: its certificate cannot be read", files=True
        ) from None
    if not keys:
        raise EndpointProblem(f"privateKey {key_path}: no PEM private key in it", files=True)
    label, block = keys[0]
    if label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block:
        raise EndpointProblem(
            f"privateKey {key_path}: the key is encrypted; the ssl: endpoint needs it without a passphrase",
            files=True,
        )
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise EndpointProblem(f"privateKey {key_path}: its private key cannot be read", files=True) from None
    if _public_key_bytes(certificate.public_key()) != _public_key_bytes(key.public_key()):
        raise EndpointProblem(
            f"{cert_option} {cert_path} and privateKey {key_path} do not belong together "
            "(the certificate is for another key)",
            files=True,
        )
    if certificate.not_valid_after_utc < now:
        raise EndpointProblem(
            f"{cert_option} {cert_path}: the certificate expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            files=True,
        )
    if certificate.not_valid_before_utc > now:
        raise EndpointProblem(
            f"{cert_option} {cert_path}: the certificate is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            files=True,
        )
    _check_no_chain(cert_pem, cert_option, cert_path)
    chain = kw.get("extraCertChain")
    if chain:
        _check_chain(chain)
    if kw.get("dhParameters"):
        _read(kw["dhParameters"], "dhParameters")


def check_endpoint(description: str, reactor: Any, now: datetime.datetime) -> None:
    """
    Check that an endpoint string can be served, before anything starts.

    @raise EndpointProblem: the string does not parse (unknown type, bad port, unknown argument) or, for
        C{ssl:}, a file it names cannot be used, by this check or by OpenSSL.
    """
    from twisted.internet.endpoints import serverFromString

    args, kw = split_endpoint(description)
    if not args or not args[0].strip():
        raise EndpointProblem("has no endpoint type; an endpoint looks like tcp:9080:interface=127.0.0.1")
    kind = args[0]
    if kind in _PORT_TYPES:
        port = kw.get("port", args[1] if len(args) > 1 else None)
        if port is None:
            raise EndpointProblem(f"{kind}: needs a port number, e.g. {kind}:9080")
        if not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise EndpointProblem(f"port {port!r} is not a number from 0 to 65535")
    if kind == "ssl":
        check_tls_files(kw, now)
    try:
        endpoint = serverFromString(reactor, description)
    except OSError as e:
        raise EndpointProblem(f"{e.filename}: {e.strerror}", files=True) from None
    except Exception as e:  # each endpoint parser (plugins too) complains in its own way
        hint = _IPV6_HINT if len(args) > 2 and _UNESCAPED_IPV6.search(description) else ""
        raise EndpointProblem(f"cannot be used: {e}{hint}") from None
    if kind == "ssl":
        check_tls_context(endpoint, kw)


def check_tls_context(endpoint: Any, kw: dict[str, str]) -> None:
    """
    Build an C{ssl:} endpoint's OpenSSL context now, as its first connection would.

    Twisted builds it only then: a C{dhParameters} file that holds no DH parameters, or anything else
    OpenSSL refuses, made every handshake fail with a traceback in the log while the gateway ran on.

    @raise EndpointProblem: OpenSSL refuses the context, naming the file it refused.
    """
    from OpenSSL import SSL

    factory = getattr(endpoint, "_sslContextFactory", None)  # SSL4ServerEndpoint keeps it there
    if factory is None:
        return
    try:
        factory.getContext()
    except SSL.Error as e:
        raise EndpointProblem(
            f"{_refused_file(kw)}: OpenSSL cannot use it: {_ssl_reason(e)}", files=True
        ) from None


def _refused_file(kw: dict[str, str]) -> str:
    """The C{dhParameters} file if OpenSSL refuses it alone, else the certificate and key files."""
    from OpenSSL import SSL

    dh = kw.get("dhParameters")
    if dh:
        try:
            SSL.Context(SSL.TLS_SERVER_METHOD).load_tmp_dh(dh)
        except SSL.Error:
            return f"dhParameters {dh}"
    files = [f"{name} {kw[name]}" for name in ("certKey", "privateKey", "extraCertChain") if kw.get(name)]
    return " or ".join(files) or "privateKey server.pem"


def _ssl_reason(error: Exception) -> str:
    """OpenSSL's reasons, without its library and function names: C{no start line}."""
    entries = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [str(entry[-1]) for entry in entries if isinstance(entry, tuple) and entry and entry[-1]]
    return ", ".join(reasons) or str(error)
