"""Tests for L{relay.certs}: the development CA and the server certificates it issues."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from OpenSSL import SSL
from twisted.internet import defer, protocol
from twisted.internet.endpoints import SSL4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from typing_extensions import override

from relay.certs import (
    CA_CERT_NAME,
    CA_KEY_NAME,
    MAX_SERVER_DAYS,
    CertificateError,
    ServerCertificate,
    ensure_ca,
    issue_server_certificate,
)


def scratch(testcase: SynchronousTestCase) -> Path:
    """
    A fresh path that does not exist yet, inside a temporary directory removed at cleanup.

    Unlike C{TestCase.mktemp}, which is relative to the working directory (the repository root
    under pytest), this never leaves files behind in the checkout.
    """
    base = Path(tempfile.mkdtemp(prefix="relay-test-"))
    testcase.addCleanup(shutil.rmtree, base, True)
    return base / "scratch"


def load_cert(path: Path) -> x509.Certificate:
    """Read the first certificate of a PEM file."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode_of(path: Path) -> int:
    """The permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


def verify_server(cert: ServerCertificate, name: x509.DNSName | x509.IPAddress) -> None:
    """Verify the leaf for C{name} with a store holding only the CA (raises L{VerificationError})."""
    ca = load_cert(cert.ca_path)
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)
    verifier.verify(load_cert(cert.cert_path), [])


class EnsureCATests(SynchronousTestCase):
    """L{ensure_ca} creates a CA once and reuses it afterwards."""

    def setUp(self) -> None:
        self.directory = scratch(self) / "certs"

    def test_creates_ca_certificate(self) -> None:
        """The CA is self-signed, a critical CA:TRUE, may sign certificates and CRLs, and has a key id."""
        cert_path, key_path = ensure_ca(self.directory)
        self.assertEqual((cert_path.name, key_path.name), (CA_CERT_NAME, CA_KEY_NAME))
        ca = load_cert(cert_path)
        ca.verify_directly_issued_by(ca)
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertTrue(constraints.value.ca)
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.key_cert_sign)
        self.assertTrue(usage.crl_sign)
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self.assertEqual(ski, x509.SubjectKeyIdentifier.from_public_key(ca.public_key()))
        lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
        self.assertGreaterEqual(lifetime, datetime.timedelta(days=3650))
        self.assertLess(lifetime, datetime.timedelta(days=3652))

    def test_key_matches_certificate(self) -> None:
        """The key file holds the private half of the CA certificate's public key."""
        cert_path, key_path = ensure_ca(self.directory)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
        self.assertEqual(load_cert(cert_path).public_key(), key.public_key())

    def test_file_modes(self) -> None:
        """The CA key is private to its owner, whatever the umask; the certificate is world-readable."""
        previous = os.umask(0)
        try:
            cert_path, key_path = ensure_ca(self.directory)
        finally:
            os.umask(previous)
        self.assertEqual(mode_of(key_path), 0o600)
        self.assertEqual(mode_of(cert_path), 0o644)
        self.assertEqual(mode_of(self.directory), 0o700)

    def test_exposed_ca_key_is_warned_about(self) -> None:
        """
        A CA key other users can read (it was made 0600, so someone loosened it) gets a warning.

        Anyone who reads it can issue certificates the clients trust; it used to be reused silently.
        """
        self.assertEqual(issue_server_certificate(self.directory, ["localhost"]).warnings, ())
        _, key_path = ensure_ca(self.directory)
        os.chmod(key_path, 0o644)
        issued = issue_server_certificate(self.directory, ["localhost"])
        self.assertEqual(len(issued.warnings), 1)
        self.assertIn(f"{key_path} can be read or written by other users (mode 0644)", issued.warnings[0])
        self.assertIn(f"chmod 600 {key_path}", issued.warnings[0])

    def test_reuses_existing_ca(self) -> None:
        """A second call returns the same files, unchanged."""
        cert_path, key_path = ensure_ca(self.directory)
        before = (cert_path.read_bytes(), key_path.read_bytes())
        self.assertEqual(ensure_ca(self.directory), (cert_path, key_path))
        self.assertEqual((cert_path.read_bytes(), key_path.read_bytes()), before)

    def test_server_certificates_share_the_ca(self) -> None:
        """Issuing server certificates reuses the CA made earlier instead of replacing it."""
        cert_path, _ = ensure_ca(self.directory)
        before = cert_path.read_bytes()
        first = issue_server_certificate(self.directory, ["localhost"])
        second = issue_server_certificate(self.directory, ["example.org"])
        self.assertEqual(cert_path.read_bytes(), before)
        self.assertEqual(first.ca_path, cert_path)
        self.assertEqual(second.ca_path, cert_path)

    def test_missing_key_is_an_error(self) -> None:
        """A certificate without its key is reported instead of being silently replaced."""
        cert_path, key_path = ensure_ca(self.directory)
        key_path.unlink()
        with self.assertRaises(CertificateError) as caught:
            ensure_ca(self.directory)
        self.assertIn(str(key_path), str(caught.exception))
        self.assertTrue(cert_path.exists())

    def test_missing_certificate_is_an_error(self) -> None:
        """A key without its certificate is reported too."""
        cert_path, _ = ensure_ca(self.directory)
        cert_path.unlink()
        with self.assertRaises(CertificateError) as caught:
            ensure_ca(self.directory)
        self.assertIn(str(cert_path), str(caught.exception))

    def test_foreign_key_is_an_error(self) -> None:
        """A key that does not belong to the certificate is refused."""
        _, key_path = ensure_ca(self.directory)
        other = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        with self.assertRaises(CertificateError) as caught:
            ensure_ca(self.directory)
        self.assertIn("does not belong", str(caught.exception))

    def test_garbage_is_an_error(self) -> None:
        """Unparsable CA files give a CertificateError naming the files, not a cryptography exception."""
        cert_path, _ = ensure_ca(self.directory)
        cert_path.write_text("not a certificate")
        with self.assertRaises(CertificateError) as caught:
            ensure_ca(self.directory)
        self.assertIn(str(cert_path), str(caught.exception))

    def test_unwritable_directory(self) -> None:
        """A directory that cannot be created is reported with its path (a file is in the way)."""
        blocker = scratch(self)
        blocker.write_text("a file, not a directory")
        target = blocker / "certs"
        with self.assertRaises(CertificateError) as caught:
            ensure_ca(target)
        self.assertIn(str(target), str(caught.exception))
        with self.assertRaises(CertificateError):
            issue_server_certificate(target, ["localhost"])

    def test_directory_is_a_file(self) -> None:
        """Passing an existing file as the directory is refused."""
        blocker = scratch(self)
        blocker.write_text("a file")
        with self.assertRaises(CertificateError) as caught:
            ensure_ca(blocker)
        self.assertIn(str(blocker), str(caught.exception))


class IssueServerCertificateTests(SynchronousTestCase):
    """L{issue_server_certificate} signs TLS server certificates that clients trusting the CA accept."""

    def setUp(self) -> None:
        self.directory = scratch(self)
        self.cert = issue_server_certificate(self.directory, ["localhost", "127.0.0.1", "::1"])

    def test_verifies_for_every_host(self) -> None:
        """A verifier that trusts only the CA accepts the leaf for each DNS name and IP address in it."""
        verify_server(self.cert, x509.DNSName("localhost"))
        verify_server(self.cert, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        verify_server(self.cert, x509.IPAddress(ipaddress.ip_address("::1")))

    def test_does_not_verify_for_other_hosts(self) -> None:
        """The leaf is not valid for names it does not list."""
        with self.assertRaises(VerificationError):
            verify_server(self.cert, x509.DNSName("example.org"))
        with self.assertRaises(VerificationError):
            verify_server(self.cert, x509.IPAddress(ipaddress.ip_address("127.0.0.2")))

    def test_does_not_verify_with_another_ca(self) -> None:
        """A client trusting a different development CA rejects the leaf."""
        other_ca, _ = ensure_ca(scratch(self))
        verifier = (
            PolicyBuilder()
            .store(Store([load_cert(other_ca)]))
            .build_server_verifier(x509.DNSName("localhost"))
        )
        with self.assertRaises(VerificationError):
            verifier.verify(load_cert(self.cert.cert_path), [])

    def test_openssl_verify(self) -> None:
        """C{openssl verify} with the CA file accepts the leaf for localhost and 127.0.0.1."""
        openssl = shutil.which("openssl")
        if openssl is None:
            self.skipTest("openssl command not installed; the cryptography verifier tests cover this")
        for check in (["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"]):
            result = subprocess.run(
                [
                    openssl,
                    "verify",
                    "-purpose",
                    "sslserver",
                    *check,
                    "-CAfile",
                    str(self.cert.ca_path),
                    str(self.cert.cert_path),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn(": OK", result.stdout)

    def test_subject_alternative_names(self) -> None:
        """Host names become DNS entries and addresses become IP entries, in the order given."""
        leaf = load_cert(self.cert.cert_path)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )
        self.assertEqual(self.cert.hosts, ("localhost", "127.0.0.1", "::1"))

    def test_host_normalisation(self) -> None:
        """Case, a trailing dot, brackets around IPv6, duplicates and non-ASCII names are normalised."""
        cert = issue_server_certificate(
            self.directory,
            ["Relay.Example.ORG.", "[::1]", "relay.example.org", "*.example.org", "bücher.example"],
        )
        self.assertEqual(cert.hosts, ("relay.example.org", "::1", "*.example.org", "xn--bcher-kva.example"))
        san = load_cert(cert.cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            san.value.get_values_for_type(x509.DNSName),
            ["relay.example.org", "*.example.org", "xn--bcher-kva.example"],
        )
        verify_server(cert, x509.DNSName("any.example.org"))

    def test_extensions(self) -> None:
        """The leaf is an end entity for serverAuth whose authority key id is the CA's subject key id."""
        leaf = load_cert(self.cert.cert_path)
        ca = load_cert(self.cert.ca_path)
        leaf.verify_directly_issued_by(ca)
        self.assertFalse(leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self.assertEqual(aki.key_identifier, ski.digest)
        self.assertTrue(leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature)

    def test_validity(self) -> None:
        """By default the leaf lives at most 825 days; C{days} shortens it."""
        leaf = load_cert(self.cert.cert_path)
        self.assertLessEqual(
            leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC),
            datetime.timedelta(days=MAX_SERVER_DAYS),
        )
        self.assertEqual(leaf.not_valid_after_utc, self.cert.not_after.replace(microsecond=0))
        short = issue_server_certificate(self.directory, ["localhost"], days=1)
        lifetime = load_cert(short.cert_path).not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        self.assertLessEqual(lifetime, datetime.timedelta(days=1))

    def test_lifetime_bounds(self) -> None:
        """Lifetimes above 825 days or below one day are refused."""
        for days in (0, MAX_SERVER_DAYS + 1):
            with self.assertRaises(CertificateError) as caught:
                issue_server_certificate(self.directory, ["localhost"], days=days)
            self.assertIn(str(days), str(caught.exception))

    def test_never_outlives_the_ca(self) -> None:
        """A certificate issued shortly before the CA expires ends with the CA."""
        ca = load_cert(self.cert.ca_path)
        late = ca.not_valid_after_utc - datetime.timedelta(days=10)
        cert = issue_server_certificate(self.directory, ["localhost"], now=late)
        self.assertEqual(load_cert(cert.cert_path).not_valid_after_utc, ca.not_valid_after_utc)

    def test_expired_ca_is_an_error(self) -> None:
        """
        Issuing after the CA's end is a L{CertificateError} naming it, and no file is replaced.

        It was a bare C{ValueError} from the certificate builder (C{relay cert} showed a traceback), and
        less than an hour after the end an already expired certificate was written.
        """
        ca = load_cert(self.cert.ca_path)
        before = self.cert.cert_path.read_bytes()
        for late in (ca.not_valid_after_utc + datetime.timedelta(days=1), ca.not_valid_after_utc):
            with self.assertRaises(CertificateError) as caught:
                issue_server_certificate(self.directory, ["localhost"], now=late)
            self.assertIn("expired", str(caught.exception))
            self.assertIn(str(self.cert.ca_path), str(caught.exception))
        self.assertEqual(self.cert.cert_path.read_bytes(), before)

    def test_file_modes(self) -> None:
        """Files holding a private key are mode 0600 whatever the umask; certificates are 0644."""
        previous = os.umask(0)
        try:
            cert = issue_server_certificate(self.directory, ["localhost"])
        finally:
            os.umask(previous)
        self.assertEqual(mode_of(cert.key_path), 0o600)
        self.assertEqual(mode_of(cert.combined_path), 0o600)
        self.assertEqual(mode_of(cert.cert_path), 0o644)
        self.assertEqual(mode_of(cert.chain_path), 0o644)
        self.assertEqual(list(self.directory.glob("*.tmp")), [])

    def test_chain_and_combined_files(self) -> None:
        """The chain file is leaf then CA; the combined file is key, leaf, CA, with the key matching."""
        leaf_pem = self.cert.cert_path.read_bytes()
        ca_pem = self.cert.ca_path.read_bytes()
        key_pem = self.cert.key_path.read_bytes()
        self.assertEqual(self.cert.chain_path.read_bytes(), leaf_pem + ca_pem)
        self.assertEqual(self.cert.combined_path.read_bytes(), key_pem + leaf_pem + ca_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        self.assertEqual(load_cert(self.cert.cert_path).public_key(), key.public_key())

    def test_default_file_names(self) -> None:
        """Files are named after the first host and the number of others, like mkcert; C{name} overrides."""
        self.assertEqual(self.cert.cert_path.name, "localhost+2.pem")
        self.assertEqual(self.cert.key_path.name, "localhost+2-key.pem")
        single = issue_server_certificate(self.directory, ["*.example.org"])
        self.assertEqual(single.cert_path.name, "_wildcard.example.org.pem")
        ipv6 = issue_server_certificate(self.directory, ["::1"])
        self.assertEqual(ipv6.cert_path.name, "__1.pem")
        named = issue_server_certificate(self.directory, ["localhost"], name="gateway")
        self.assertEqual((named.cert_path.name, named.key_path.name), ("gateway.pem", "gateway-key.pem"))

    def test_reissue_replaces_files(self) -> None:
        """Issuing again for the same name writes a new key and certificate."""
        old_serial = load_cert(self.cert.cert_path).serial_number
        old_key = self.cert.key_path.read_bytes()
        again = issue_server_certificate(self.directory, ["localhost", "127.0.0.1", "::1"])
        self.assertEqual((again.cert_path, again.key_path), (self.cert.cert_path, self.cert.key_path))
        self.assertNotEqual(load_cert(again.cert_path).serial_number, old_serial)
        self.assertNotEqual(again.key_path.read_bytes(), old_key)
        verify_server(again, x509.DNSName("localhost"))

    def test_bad_hosts(self) -> None:
        """Malformed host names are refused with a message quoting the host."""
        for host in [
            "",
            "   ",
            "exa mple.org",
            "-bad.org",
            "bad-.org",
            "a..b",
            "*.org",
            "*",
            "foo_bar.org",
            "x" * 64 + ".org",
            "ex*ample.org",
            "a.*.org",
            "http://localhost",
            "a" * 250 + ".org",
            "a\n.example.org",  # a line break ending a label (a regex "$" would accept it)
        ]:
            with self.assertRaises(CertificateError, msg=host) as caught:
                issue_server_certificate(self.directory, [host])
            self.assertIn(repr(host), str(caught.exception))

    def test_no_hosts(self) -> None:
        """An empty host list is refused."""
        with self.assertRaises(CertificateError):
            issue_server_certificate(self.directory, [])

    def test_bad_file_names(self) -> None:
        """A name that is a path, hidden, or the CA's own name is refused."""
        for name in ["../escape", "a/b", ".hidden", "", "ca", "ca-key", "with space"]:
            with self.assertRaises(CertificateError, msg=name):
                issue_server_certificate(self.directory, ["localhost"], name=name)

    def test_endpoint_description_parses(self) -> None:
        """Twisted's C{ssl:} parser accepts the description, even for a path with colons in it."""
        directory = scratch(self) / "odd:dir\\name"
        cert = issue_server_certificate(directory, ["localhost"])
        reactor = MemoryReactor()
        endpoint = serverFromString(reactor, cert.endpoint_description(8443, interface="127.0.0.1"))
        endpoint.listen(protocol.Factory.forProtocol(protocol.Protocol))
        port, _, context_factory, _, interface = reactor.sslServers[0]
        self.assertEqual((port, interface), (8443, "127.0.0.1"))
        self.assertEqual(context_factory.certificate.to_cryptography(), load_cert(cert.cert_path))
        chain = [c.to_cryptography() for c in context_factory.extraCertChain]
        self.assertEqual(chain, [load_cert(cert.ca_path)])

    def test_combined_file_alone_parses(self) -> None:
        """C{ssl:PORT:privateKey=combined.pem} loads the leaf and its key from the combined file."""
        reactor = MemoryReactor()
        endpoint = serverFromString(reactor, f"ssl:8443:privateKey={self.cert.combined_path}")
        endpoint.listen(protocol.Factory.forProtocol(protocol.Protocol))
        context_factory = reactor.sslServers[0][2]
        self.assertEqual(context_factory.certificate.to_cryptography(), load_cert(self.cert.cert_path))


class Greeter(protocol.Protocol):
    """Server side of the loopback test: send a greeting and close."""

    @override
    def connectionMade(self) -> None:
        self.transport.write(b"hello over TLS\n")
        self.transport.loseConnection()


class Collector(protocol.Protocol):
    """Client side of the loopback test: keep the bytes, the peer chain, and how the connection ended."""

    def __init__(self) -> None:
        self.data = b""
        self.chain: list[x509.Certificate] = []
        self.reason: Failure | None = None
        self.done: defer.Deferred[None] = defer.Deferred()

    @override
    def dataReceived(self, data: bytes) -> None:
        if not self.chain:
            handle = self.transport.getHandle()  # type: ignore[attr-defined]
            self.chain = [c.to_cryptography() for c in handle.get_peer_cert_chain() or []]
        self.data += data

    @override
    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.reason = reason
        self.done.callback(None)


class TwistedLoopbackTests(TestCase):
    """A Twisted C{ssl:} endpoint with the generated files serves TLS that CA-trusting clients accept."""

    def setUp(self) -> None:
        self.cert = issue_server_certificate(scratch(self), ["localhost", "127.0.0.1"])

    async def serve(self) -> int:
        """Listen on a free loopback port with the certificate; stop listening at cleanup."""
        from twisted.internet import reactor

        factory = protocol.Factory.forProtocol(Greeter)
        endpoint = serverFromString(reactor, self.cert.endpoint_description(0, interface="127.0.0.1"))
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def connect(self, port: int, trust: Path, hostname: str = "localhost") -> Collector:
        """Connect as a TLS client that trusts only C{trust} and wait until the connection ends."""
        from twisted.internet import reactor

        options = optionsForClientTLS(hostname, trustRoot=Certificate.loadPEM(trust.read_bytes()))
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, options)
        client = Collector()
        await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        await client.done
        return client

    async def test_client_trusting_ca_accepts(self) -> None:
        """A client that trusts only the CA completes the handshake for localhost and gets the chain."""
        port = await self.serve()
        client = await self.connect(port, self.cert.ca_path)
        self.assertEqual(client.data, b"hello over TLS\n")
        self.assertEqual(client.chain, [load_cert(self.cert.cert_path), load_cert(self.cert.ca_path)])
        assert client.reason is not None
        self.assertTrue(client.reason.check(ConnectionDone), client.reason)

    async def test_client_trusting_other_ca_refuses(self) -> None:
        """A client that trusts a different CA aborts the handshake and receives nothing."""
        port = await self.serve()
        other_ca, _ = ensure_ca(scratch(self))
        client = await self.connect(port, other_ca)
        self.assertEqual(client.data, b"")
        self.assertIsNotNone(client.reason)
        assert client.reason is not None
        self.assertTrue(client.reason.check(SSL.Error), client.reason)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])


def signed(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """A certificate as public CAs issue them (root, intermediate, leaf): a CA unless it is for localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca = subject != "localhost"
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class IntermediateChainTests(TestCase):
    """A certificate from a public CA: root, intermediate, leaf (certbot's cert.pem, chain.pem, fullchain.pem)."""

    def setUp(self) -> None:
        base = scratch(self)
        base.mkdir()
        root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = signed("test root", root_key, "test root", root_key)
        inter = signed("test intermediate", inter_key, "test root", root_key)
        leaf = signed("localhost", leaf_key, "test intermediate", inter_key)
        pem = serialization.Encoding.PEM
        self.root, self.leaf, self.inter = base / "root.pem", base / "cert.pem", base / "chain.pem"
        self.full, self.key = base / "fullchain.pem", base / "privkey.pem"
        self.root.write_bytes(root.public_bytes(pem))
        self.leaf.write_bytes(leaf.public_bytes(pem))
        self.inter.write_bytes(inter.public_bytes(pem))
        self.full.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
        self.key.write_bytes(
            leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.state = str(scratch(self))

    def test_full_chain_in_cert_key_is_refused(self) -> None:
        """C{certKey=fullchain.pem} stops the start (status 1), naming the file and pointing at extraCertChain."""
        from relay.tap import FileProblem, Options

        endpoint = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.full}"
        with self.assertRaises(FileProblem) as ctx:
            Options().parseOptions(["--state-dir", self.state, "--listen", endpoint])
        self.assertIn(f"certKey {self.full}: holds a certificate chain", str(ctx.exception))
        self.assertIn("extraCertChain", str(ctx.exception))

    async def test_intermediate_in_extra_cert_chain_is_served(self) -> None:
        """What the refusal advises works: a client that trusts only the root verifies leaf and intermediate."""
        from twisted.internet import reactor

        from relay.tap import Options

        endpoint = (
            f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.leaf}:extraCertChain={self.inter}"
        )
        Options().parseOptions(["--state-dir", self.state, "--listen", endpoint])
        port = await serverFromString(reactor, endpoint).listen(protocol.Factory.forProtocol(Greeter))
        self.addCleanup(port.stopListening)
        options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(self.root.read_bytes()))
        client = Collector()
        await SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, options).connect(
            protocol.Factory.forProtocol(lambda: client)
        )
        await client.done
        self.assertEqual(client.data, b"hello over TLS\n", client.reason)
        self.assertEqual(client.chain, [load_cert(self.leaf), load_cert(self.inter)])
