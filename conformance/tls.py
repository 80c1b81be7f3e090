"""A certificate authority generated per run, and leaf certificates for the loopback servers.

Clients trust the run's CA through ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE`` (Python) or
``NODE_EXTRA_CA_CERTS`` (Node). Keys are ECDSA P-256: cheap handshakes, accepted by every TLS stack.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conformance.processes import hold, sweep_owned

TLS_PREFIX = "bc-conformance-tls-"


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bc-oauth-conformance (test only)")])


def _remove(directory: Path, lock: int) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    os.close(lock)


class RunCA:
    """A throw-away CA; ``issue`` writes a leaf certificate for the given hosts and returns the files."""

    def __init__(self, directory: Path | None = None):
        self._remove: weakref.finalize | None = None
        if directory is None:
            # The directory holds private keys: 0700 (mkdtemp), named after this process and locked while it lives,
            # removed on close() or at exit (Ctrl-C, SIGTERM and exceptions included); a SIGKILLed run's is swept by
            # the next RunCA.
            sweep_owned(tempfile.gettempdir(), TLS_PREFIX)
            self.directory = Path(tempfile.mkdtemp(prefix=f"{TLS_PREFIX}{os.getpid()}-"))
            self.directory.chmod(0o700)
            lock = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            hold(lock)
            self._remove = weakref.finalize(self, _remove, self.directory, lock)
        else:
            self.directory = Path(directory)
            self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name("bc-oauth-conformance run CA")
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def close(self) -> None:
        """Delete the certificate files if this CA created their directory (clients must be done with them)."""
        if self._remove is not None:
            self._remove()

    def issue(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), name: str = "server") -> TlsFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.unlink(missing_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, even briefly
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return TlsFiles(self.ca_file, cert_file, key_file)
