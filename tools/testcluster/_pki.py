"""Certificates and keys for one throw-away control plane, made with ``cryptography``.

Everything is ECDSA P-256: generating it takes milliseconds, where RSA keys would add seconds
to every test session, and every component accepts it (service-account tokens become ES256).
:func:`loopback_server` is the same for a test's own HTTPS server on 127.0.0.1 (the feed,
the report collector). The CA signs the API server's serving certificate and the client
certificates of the controller manager and scheduler; their common names are the users the
default RBAC roles (``system:kube-controller-manager``, ``system:kube-scheduler``) are bound
to, so both run with the permissions they have on a real cluster rather than as
cluster-admin.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=30)
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
"""First address of the service range the API server is given (the ``kubernetes`` Service)."""


@dataclass(frozen=True)
class Pki:
    """Paths of the files :func:`generate` wrote."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    clients: dict[str, tuple[Path, Path]]
    """Client name → (certificate, key)."""


@dataclass(frozen=True)
class Ca:
    """A certificate authority in memory: signs the leaves :func:`issue` makes."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    now: dt.datetime

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


def make_ca(common_name: str, validity: dt.timedelta = VALIDITY) -> Ca:
    """A self-signed CA valid from five minutes ago (clocks of other processes may lag)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(key, cert, now)


def issue(
    ca: Ca,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    validity: dt.timedelta = VALIDITY,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf key and certificate ``ca`` signs, for ``usage`` (server or client auth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.now)
        .not_valid_after(ca.now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca.key, hashes.SHA256())


LOOPBACK = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]


def loopback_server(directory: Path, name: str = "test") -> tuple[Path, Path, Path]:
    """A CA of its own and a serving certificate for 127.0.0.1 and localhost, for a test's
    HTTPS server: (``<name>-ca.pem``, ``<name>.pem``, ``<name>.key``)."""
    return serving_pair(directory, name, "127.0.0.1", LOOPBACK)


def serving_pair(
    directory: Path, name: str, common_name: str, sans: list[x509.GeneralName]
) -> tuple[Path, Path, Path]:
    """A CA of its own and a serving certificate for ``sans`` (only those names), for a
    test's HTTPS server: (``<name>-ca.pem``, ``<name>.pem``, ``<name>.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(f"{name} CA", dt.timedelta(days=1))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    key, cert = issue(ca, subject, ExtendedKeyUsageOID.SERVER_AUTH, sans, dt.timedelta(days=1))
    return (
        _write(directory / f"{name}-ca.pem", _cert_pem(ca.cert)),
        _write(directory / f"{name}.pem", _cert_pem(cert)),
        _write(directory / f"{name}.key", _private_pem(key)),
    )


def generate(directory: Path, clients: dict[str, tuple[str, tuple[str, ...]]]) -> Pki:
    """Write a CA, an API server serving pair, a service-account key pair and client pairs.

    ``clients`` maps a file stem to (user name, groups); groups become the subject's O fields,
    which is how the API server reads group membership from client certificates.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("outpost-testcluster-ca")

    def leaf(
        stem: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[Path, Path]:
        key, cert = issue(ca, subject, usage, sans)
        return (
            _write(directory / f"{stem}.crt", _cert_pem(cert)),
            _write(directory / f"{stem}.key", _private_pem(key)),
        )

    serving_cert, serving_key = leaf(
        "apiserver",
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
        ],
    )
    client_files = {}
    for stem, (user, groups) in clients.items():
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        client_files[stem] = leaf(stem, x509.Name(attributes), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    sa_key = ec.generate_private_key(ec.SECP256R1())
    return Pki(
        ca_cert=_write(directory / "ca.crt", _cert_pem(ca.cert)),
        ca_key=_write(directory / "ca.key", _private_pem(ca.key)),
        serving_cert=serving_cert,
        serving_key=serving_key,
        sa_key=_write(directory / "sa.key", _private_pem(sa_key)),
        sa_pub=_write(
            directory / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        clients=client_files,
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> Path:
    """Write with mode 0600: private keys of a throw-away cluster are still private keys."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path
