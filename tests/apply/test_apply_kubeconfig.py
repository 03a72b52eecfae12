"""Reading kubeconfigs without the kubernetes package: what is read, what falls back, what fails."""

from __future__ import annotations

import base64
import datetime
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.core.errors import ConfigError
from reconciler.node.apply import kubeconfig


def certificate(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None, **extra: Any
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "edge", "cluster": cluster or {"server": "https://10.0.0.1:6443/"}},
            {"name": "other", "cluster": {"server": "https://10.9.9.9:6443"}},
        ],
        "users": [{"name": "agent", "user": user}, {"name": "nobody", "user": {}}],
        "contexts": [
            {"name": "site", "context": {"cluster": "edge", "user": "agent"}},
            {"name": "elsewhere", "context": {"cluster": "other", "user": "nobody"}},
        ],
        "current-context": "site",
        **extra,
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_token_and_ca_file_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"token": "abc"},
        {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"},
    )
    endpoint = kubeconfig.read(path)
    assert endpoint is not None
    assert endpoint.server == "https://10.0.0.1:6443"
    assert endpoint.ca_file == str(tmp_path.resolve() / "ca.crt")
    assert endpoint.auth_headers() == {"Authorization": "Bearer abc"}


def test_context_choice(tmp_path: Path) -> None:
    path = write(tmp_path, {"token": "abc"})
    other = kubeconfig.read(path, context="elsewhere")
    assert other is not None and other.server == "https://10.9.9.9:6443"
    assert other.auth_headers() == {}
    with pytest.raises(ConfigError, match="no context named 'nowhere'"):
        kubeconfig.read(path, context="nowhere")


def test_token_file_is_read_on_every_request(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    endpoint = kubeconfig.read(write(tmp_path, {"tokenFile": "token"}))
    assert endpoint is not None
    assert endpoint.auth_headers() == {"Authorization": "Bearer first"}
    (tmp_path / "token").write_text("rotated\n")
    assert endpoint.auth_headers() == {"Authorization": "Bearer rotated"}
    (tmp_path / "token").unlink()
    with pytest.raises(ConfigError, match="cannot read tokenFile"):
        endpoint.auth_headers()


def test_basic_auth(tmp_path: Path) -> None:
    endpoint = kubeconfig.read(write(tmp_path, {"username": "admin", "password": "pw"}))
    assert endpoint is not None
    assert endpoint.auth_headers() == {"Authorization": "Basic " + b64(b"admin:pw")}


def test_inline_certificates_load_into_a_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, _ = certificate("edge-ca")
    client, key = certificate("agent")
    path = write(
        tmp_path,
        {"client-certificate-data": b64(client), "client-key-data": b64(key)},
        {"server": "https://10.0.0.1:6443", "certificate-authority-data": b64(ca)},
    )
    endpoint = kubeconfig.read(path)
    assert endpoint is not None and endpoint.ca_data == ca and endpoint.key_data == key
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    context = endpoint.ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1
    assert list(scratch.iterdir()) == [], "no key material left on disk"


def test_certificate_files(tmp_path: Path) -> None:
    ca, _ = certificate("edge-ca")
    client, key = certificate("agent")
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "agent.crt").write_bytes(client)
    (tmp_path / "agent.key").write_bytes(key)
    path = write(
        tmp_path,
        {"client-certificate": "agent.crt", "client-key": "agent.key"},
        {"server": "https://10.0.0.1:6443", "certificate-authority": "ca.crt"},
    )
    endpoint = kubeconfig.read(path)
    assert endpoint is not None
    assert len(endpoint.ssl_context().get_ca_certs()) == 1


def test_insecure_skips_verification(tmp_path: Path) -> None:
    endpoint = kubeconfig.read(
        write(
            tmp_path, {"token": "t"}, {"server": "https://x:6443", "insecure-skip-tls-verify": True}
        )
    )
    assert endpoint is not None
    context = endpoint.ssl_context()
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname


@pytest.mark.parametrize(
    ("user", "cluster"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}}, None),
        ({"auth-provider": {"name": "oidc"}}, None),
        ({"token": "t"}, {"server": "https://x:6443", "proxy-url": "http://proxy:3128"}),
    ],
    ids=["exec plugin", "auth-provider", "proxy"],
)
def test_what_needs_the_kubernetes_library(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None
) -> None:
    assert kubeconfig.read(write(tmp_path, user, cluster)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read the kubeconfig"),
        ("a: [", "not YAML"),
        ("- a list", "not a mapping"),
        ("clusters: []", "no context given and no current-context"),
        ("current-context: site\ncontexts: []", "no context named 'site'"),
        (
            "current-context: s\ncontexts: [{name: s, context: {cluster: c, user: u}}]\n"
            "clusters: [{name: c, cluster: {}}]\nusers: [{name: u, user: {}}]",
            "has no https:// server",
        ),
        (
            "current-context: s\ncontexts: [{name: s, context: {cluster: c, user: u}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://x', certificate-authority-data: '%%%'}}]\n"
            "users: [{name: u, user: {}}]",
            "certificate-authority-data is not base64",
        ),
    ],
)
def test_broken_kubeconfigs_are_config_errors(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "kubeconfig"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        kubeconfig.read(path)
    assert str(path) in str(caught.value)


def test_unusable_certificate_is_a_config_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"token": "t"},
        {"server": "https://x:6443", "certificate-authority-data": b64(b"not a certificate")},
    )
    endpoint = kubeconfig.read(path)
    assert endpoint is not None
    with pytest.raises(ConfigError, match="cannot set up TLS"):
        endpoint.ssl_context()
