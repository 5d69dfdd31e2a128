"""
A development certificate authority and server certificates for TLS on loopback and private networks.

Like mkcert: L{ensure_ca} creates a long-lived CA once per directory and reuses it afterwards;
L{issue_server_certificate} signs short-lived server certificates for a list of host names and IP
addresses. The files are plain PEM and fit the consumers the relay meets:

  - Twisted's C{ssl:} endpoint string (L{ServerCertificate.endpoint_description}): C{privateKey} and
    C{certKey} point at the key and the leaf certificate, C{extraCertChain} at the CA certificate, so the
    server sends the whole chain;
  - Node.js clients (C{hyco-ws}, C{hyco-https}, plain C{https}): C{NODE_EXTRA_CA_CERTS=ca.pem};
  - Python clients: C{optionsForClientTLS(host, trustRoot=Certificate.loadPEM(ca_pem))}, C{ssl.SSLContext
    (cafile=...)}, C{requests(verify=...)}.

Keys are ECDSA P-256, private key files are created with mode C{0600}, and every file is written to a
temporary name and renamed into place, so a reader never sees half a file. Concurrent callers on one
directory are serialised with a lock file. This is for development and tests: the CA key sits unencrypted
next to its certificate, which is exactly what a production CA must never do.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.state import readable_by_others

__all__ = [
    "CA_CERT_NAME",
    "CA_KEY_NAME",
    "MAX_SERVER_DAYS",
    "CertificateError",
    "ServerCertificate",
    "ensure_ca",
    "issue_server_certificate",
]

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
CA_DAYS = 3650
MAX_SERVER_DAYS = 825
"""The longest server certificate lifetime Apple platforms accept from a private CA (and Node accepts)."""

_LOCK_NAME = ".certs.lock"
_BACKDATE = datetime.timedelta(hours=1)
_ORGANIZATION = "relay development CA"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # fullmatch: "$" would let a final "\n" through
_FILE_NAME = re.compile(r"[^A-Za-z0-9._+-]")

Host = x509.DNSName | x509.IPAddress


class CertificateError(Exception):
    """A certificate or key cannot be created, read or written; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """
    The files of one issued server certificate.

    @ivar cert_path: the leaf certificate alone (what Twisted's C{certKey} reads).
    @ivar key_path: the leaf's private key (mode C{0600}).
    @ivar ca_path: the issuing CA's certificate: the trust anchor for clients and the C{extraCertChain}
        for Twisted.
    @ivar chain_path: leaf followed by the CA certificate (a "full chain" for servers that take one file).
    @ivar combined_path: key, leaf and CA certificate in one file (mode C{0600}); C{ssl:PORT:privateKey=
        combined.pem} alone works, because Twisted reads the first key and the first certificate of it.
    @ivar hosts: the subject alternative names, in the order given, normalised (lower-case, IDNA).
    @ivar not_after: end of validity (UTC).
    @ivar warnings: what the caller should tell the user (a CA key other users can read).
    """

    cert_path: Path
    key_path: Path
    ca_path: Path
    chain_path: Path
    combined_path: Path
    hosts: tuple[str, ...]
    not_after: datetime.datetime
    warnings: tuple[str, ...] = ()

    def endpoint_description(self, port: int | str = 443, interface: str | None = None) -> str:
        """
        Describe a Twisted TLS server endpoint serving this certificate with its chain.

        @param port: the TCP port; C{0} picks a free one.
        @param interface: the address to bind, or L{None} for all IPv4 interfaces.
        @return: a string for C{twisted.internet.endpoints.serverFromString}, with every path quoted.
        """
        parts = [
            f"ssl:{port}",
            f"privateKey={_quote_endpoint_argument(str(self.key_path))}",
            f"certKey={_quote_endpoint_argument(str(self.cert_path))}",
            f"extraCertChain={_quote_endpoint_argument(str(self.ca_path))}",
        ]
        if interface is not None:
            parts.append(f"interface={_quote_endpoint_argument(interface)}")
        return ":".join(parts)


def ensure_ca(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """
    Return the development CA in C{directory}, creating it the first time.

    An existing pair is reused after checking that the certificate is a CA certificate and belongs to the
    key. The directory is created (mode C{0700}) if needed.

    @param directory: where C{ca.pem} and C{ca-key.pem} live.
    @return: C{(ca_cert_path, ca_key_path)}.
    @raise CertificateError: if the directory cannot be written, or only one of the two files exists, or
        they are unreadable or do not belong together.
    """
    base = _prepare_directory(directory)
    with _locked(base):
        return _ensure_ca_locked(base)


def issue_server_certificate(
    directory: str | os.PathLike[str],
    hosts: Sequence[str],
    *,
    days: int = MAX_SERVER_DAYS,
    name: str | None = None,
    now: datetime.datetime | None = None,
) -> ServerCertificate:
    """
    Issue a server certificate for C{hosts}, signed by the development CA of C{directory}.

    Host names become DNS names and IP addresses (C{127.0.0.1}, C{::1}, also C{[::1]}) become IP address
    entries of the subject alternative name; the first host is also the subject's common name. The CA is
    created if it does not exist yet. Each call issues a new key and certificate and replaces the files of
    the same C{name}.

    @param directory: the CA directory; the server files are written next to the CA.
    @param hosts: DNS names (a leftmost C{*} label is allowed) and IP addresses; at least one.
    @param days: lifetime, at most L{MAX_SERVER_DAYS} and never beyond the CA's own expiry.
    @param name: base file name; by default derived from the hosts like mkcert does
        (C{localhost+2.pem}, C{localhost+2-key.pem}, ...).
    @param now: the issuing time (for tests); defaults to the current time.
    @return: the paths of the written files.
    @raise CertificateError: for an empty host list, a malformed host, a bad lifetime or file name, an
        unwritable directory, or a CA that has expired by C{now}.
    """
    names = [_parse_host(host) for host in hosts]
    if not names:
        raise CertificateError("at least one host name or IP address is required")
    names = list(dict.fromkeys(names))
    if not 1 <= days <= MAX_SERVER_DAYS:
        raise CertificateError(f"server certificate lifetime must be 1..{MAX_SERVER_DAYS} days, not {days}")
    labels = tuple(_host_text(entry) for entry in names)
    stem = _file_stem(name if name is not None else _default_stem(labels))

    base = _prepare_directory(directory)
    with _locked(base):
        ca_cert_path, ca_key_path = _ensure_ca_locked(base)
        ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
        issued = now if now is not None else datetime.datetime.now(datetime.UTC)
        _check_ca_validity(ca_cert, ca_cert_path, issued)
        not_before = issued - _BACKDATE
        not_after = min(issued + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _build_server_certificate(key, names, labels[0], ca_cert, ca_key, not_before, not_after)

        key_pem = _key_pem(key)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        paths = ServerCertificate(
            cert_path=base / f"{stem}.pem",
            key_path=base / f"{stem}-key.pem",
            ca_path=ca_cert_path,
            chain_path=base / f"{stem}-chain.pem",
            combined_path=base / f"{stem}-combined.pem",
            hosts=labels,
            not_after=not_after,
            warnings=_exposure_warnings(ca_key_path),
        )
        _write(paths.key_path, key_pem, secret=True)
        _write(paths.cert_path, cert_pem)
        _write(paths.chain_path, cert_pem + ca_pem)
        _write(paths.combined_path, key_pem + cert_pem + ca_pem, secret=True)
        return paths


def _ensure_ca_locked(base: Path) -> tuple[Path, Path]:
    """Create or validate the CA pair in C{base}; the caller holds the directory lock."""
    cert_path = base / CA_CERT_NAME
    key_path = base / CA_KEY_NAME
    cert_exists, key_exists = cert_path.exists(), key_path.exists()
    if cert_exists and key_exists:
        _load_ca(cert_path, key_path)
        return cert_path, key_path
    if cert_exists or key_exists:
        present, missing = (cert_path, key_path) if cert_exists else (key_path, cert_path)
        raise CertificateError(
            f"incomplete development CA: {present} exists but {missing} does not; "
            "restore the missing file or remove both to create a new CA"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = _build_ca_certificate(key, now - _BACKDATE, now + datetime.timedelta(days=CA_DAYS))
    # Key first: a certificate without its key is the state that cannot be repaired.
    _write(key_path, _key_pem(key), secret=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _build_ca_certificate(
    key: ec.EllipticCurvePrivateKey, not_before: datetime.datetime, not_after: datetime.datetime
) -> x509.Certificate:
    """Self-sign a CA certificate that may sign end-entity certificates only (path length 0)."""
    serial = x509.random_serial_number()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"relay development CA {serial:x}"[:64]),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_server_certificate(
    key: ec.EllipticCurvePrivateKey,
    names: list[Host],
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    """Sign an end-entity TLS server certificate for C{names}."""
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "relay development certificate"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Read a CA pair and check that it is usable for signing: a CA certificate matching its EC key."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as e:
        raise CertificateError(f"cannot read the development CA in {cert_path.parent}: {e}") from e
    except (ValueError, TypeError) as e:
        raise CertificateError(
            f"unreadable development CA ({cert_path}, {key_path}): {e}; remove both files to start over"
        ) from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path} is not an EC private key; remove both CA files to start over")
    if cert.public_key() != key.public_key():
        raise CertificateError(f"{cert_path} does not belong to {key_path}; remove both to start over")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound as e:
        raise CertificateError(f"{cert_path} lacks a required CA extension: {e}") from e
    if not constraints.ca:
        raise CertificateError(f"{cert_path} is not a CA certificate (basicConstraints CA:FALSE)")
    return cert, key


def _exposure_warnings(ca_key_path: Path) -> tuple[str, ...]:
    """A warning when other users can read the CA key: they could issue certificates the clients trust."""
    exposed = readable_by_others(ca_key_path)
    if exposed is None:
        return ()
    return (
        f"the development CA key {ca_key_path} can be read or written by other users ({exposed}): "
        f"anyone who reads it can issue certificates your clients trust; run 'chmod 600 {ca_key_path}'",
    )


def _check_ca_validity(cert: x509.Certificate, path: Path, issued: datetime.datetime) -> None:
    """
    Refuse to issue with a CA that has expired at the issuing time.

    Past the CA's end, every certificate it signs is useless; the builder refused with a bare C{ValueError}
    ("not valid after ... before ...") or, within the back-dating hour, wrote an already expired one.
    """
    if issued >= cert.not_valid_after_utc:
        raise CertificateError(
            f"the development CA {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "remove it and its key to create a new one (clients must then trust the new CA)"
        )


def _parse_host(host: str) -> Host:
    """
    Turn one host string into a subject alternative name entry.

    @raise CertificateError: if the string is neither an IP address nor a valid DNS name.
    """
    if not isinstance(host, str):
        raise CertificateError(f"host must be a string, not {type(host).__name__}")
    text = host.strip()
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return x509.IPAddress(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise CertificateError(f"empty host name: {host!r}")
    try:
        ascii_name = text.encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise CertificateError(f"bad host name {host!r}: {e}") from e
    labels = ascii_name.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        labels = labels[1:]
        if len(labels) < 2:
            raise CertificateError(f"bad host name {host!r}: a wildcard needs at least two labels after '*'")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise CertificateError(
            f"bad host name {host!r}: expected an IP address or a DNS name of letters, digits and "
            "hyphens (a leftmost '*' label is allowed)"
        )
    return x509.DNSName(ascii_name)


def _host_text(entry: Host) -> str:
    """Render a SAN entry as the host string it came from (normalised)."""
    return str(entry.value)


def _default_stem(labels: tuple[str, ...]) -> str:
    """Name files like mkcert: the first host, C{*} spelled C{_wildcard}, plus the number of other hosts."""
    first = labels[0].replace("*", "_wildcard").replace(":", "_")
    return first if len(labels) == 1 else f"{first}+{len(labels) - 1}"


def _file_stem(stem: str) -> str:
    """Check that a base file name is a plain name, not a path or something a shell would mangle."""
    if not stem or stem.startswith(".") or _FILE_NAME.search(stem):
        raise CertificateError(
            f"bad certificate file name {stem!r}: use letters, digits, '.', '_', '+', '-' (no leading dot)"
        )
    if stem in ("ca", "ca-key"):
        raise CertificateError(f"certificate file name {stem!r} would overwrite the CA")
    return stem


def _prepare_directory(directory: str | os.PathLike[str]) -> Path:
    """Create C{directory} if needed and check that files can be created in it."""
    base = Path(directory)
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CertificateError(f"cannot create certificate directory {base}: {e.strerror or e}") from e
    if not base.is_dir():
        raise CertificateError(f"certificate directory {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise CertificateError(f"certificate directory {base} is not writable")
    return base


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    """Hold an exclusive lock on C{base} so concurrent callers create one CA, not two halves of two."""
    try:
        fd = os.open(base / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise CertificateError(f"cannot write to certificate directory {base}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM, which Twisted, OpenSSL and Node all read."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """
    Write C{data} to C{path} atomically (temporary file, then rename).

    @param secret: create the file with mode C{0600} instead of C{0644}.
    @raise CertificateError: if the file cannot be written.
    """
    temporary = path.with_name(path.name + ".tmp")
    mode = 0o600 if secret else 0o644
    try:
        if temporary.exists():
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(fd, mode)  # the umask must not loosen (or tighten) what we ask for
            stream.write(data)
            stream.flush()
            os.fsync(fd)
        os.replace(temporary, path)
    except OSError as e:
        raise CertificateError(f"cannot write {path}: {e.strerror or e}") from e


def _quote_endpoint_argument(argument: str) -> str:
    """Escape backslashes and colons for Twisted endpoint strings (like C{quoteStringArgument})."""
    return argument.replace("\\", "\\\\").replace(":", "\\:")
