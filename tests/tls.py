"""TLS material made in the test (cryptography): a CA, certificates it signs, PEM text.

The certificates name 127.0.0.1 and localhost; Dask checks the chain, not the host name
(distributed.security: `check_hostname = False`), as a cluster's own CA is meant to be used.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM text."""

    cert: str
    key: str
    _key: ec.EllipticCurvePrivateKey
    _cert: x509.Certificate

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_text(self.cert)
        key.write_text(self.key)
        key.chmod(0o600)
        return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def authority(common: str = "mlgate test CA") -> Pair:
    """A self-signed CA (P-256: fast to make)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
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
        .sign(key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key), key, cert)


def issue(ca: Pair, common: str, *, expired: bool = False) -> Pair:
    """A certificate signed by `ca` for both TLS roles (Dask's scheduler, workers and clients
    each serve and connect), valid for 127.0.0.1 and localhost; `expired`: ended yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (
        (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
        if expired
        else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca._cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca._key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key), key, cert)


@dataclass(frozen=True)
class TlsCluster:
    """A running `dask scheduler --protocol tls` and its workers, and the client material a
    team's workflow would hold as the secrets DASK_TLS_CA / DASK_TLS_CERT / DASK_TLS_KEY."""

    address: str
    ca: Pair
    client: Pair

    def secrets(self) -> dict[str, str]:
        return {
            "DASK_TLS_CA": self.ca.cert,
            "DASK_TLS_CERT": self.client.cert,
            "DASK_TLS_KEY": self.client.key,
        }


@contextmanager
def tls_cluster(root: Path, workers: int = 1) -> Iterator[TlsCluster]:
    """A real scheduler (`--protocol tls`, with the CA, its certificate and key) and `workers`
    `dask worker` processes (1 thread, 600 MB, TLS with their own certificate) on a free
    loopback port; the client's certificate is issued by the same CA, as dask-gateway does."""
    from distributed import Client
    from distributed.security import Security

    from tests.conftest import free_port
    from tests.daskprocs import dask_processes

    ca = authority("mlgate test cluster CA")
    ca_file = root / "ca.pem"
    root.mkdir(parents=True, exist_ok=True)
    ca_file.write_text(ca.cert)
    node_cert, node_key = issue(ca, "dask node").write(root, "node")
    tls = ["--tls-ca-file", str(ca_file), "--tls-cert", str(node_cert), "--tls-key", str(node_key)]
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    client = issue(ca, "mlgate runner")
    with dask_processes() as processes:
        processes.scheduler(port, root / "scheduler.log", "--protocol", "tls", *tls)
        for n in range(workers):
            processes.worker(address, root / f"worker{n}.log", *tls)
        security = Security(
            tls_ca_file=ca.cert,
            tls_client_cert=client.cert,
            tls_client_key=client.key,
            require_encryption=True,
        )
        with Client(address, timeout=60, security=security) as c:
            try:
                c.wait_for_workers(workers, timeout=90)
            except TimeoutError as exc:
                logs = "".join(p.read_text()[-2000:] for p in sorted(root.glob("*.log")))
                raise RuntimeError(f"the TLS cluster did not start:\n{logs}") from exc
        yield TlsCluster(address, ca, client)
