"""A throwaway certificate authority for tests: CA, broker and client certificates (PEM).

Generated with the ``openssl`` command line into a directory the caller owns (a pytest
temporary directory). Nothing here is meant to be trusted outside one test session: the
keys are unencrypted and the certificates expire after two days.

Kafka reads the broker's key and chain straight from PEM (``ssl.keystore.type=PEM``,
``ssl.keystore.location`` = :attr:`TestPki.broker_keystore`, which holds the PKCS#8 private
key followed by the certificate chain), and the CA from ``ssl.truststore.type=PEM``.
Python clients use :attr:`TestPki.ca_cert` as ``cafile`` and, for mutual TLS,
:attr:`TestPki.client_cert` / :attr:`TestPki.client_key`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestPki", "make_test_pki"]

_DAYS = "2"
_KEY = "rsa:2048"


@dataclass(frozen=True)
class TestPki:
    """Paths of the generated PEM files."""

    __test__ = False  # not a pytest test class, despite its name

    directory: Path
    ca_cert: Path
    broker_cert: Path
    broker_key: Path
    broker_keystore: Path  # broker key + broker cert + CA cert, for ssl.keystore.type=PEM
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH; it is needed to make test certificates")
    result = subprocess.run(
        [openssl, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({result.returncode}): {result.stderr}")


def _issue(directory: Path, name: str, subject: str, extensions: list[str]) -> tuple[Path, Path]:
    """A key and a certificate for ``subject``, signed by the CA in ``directory``."""
    key, csr, cert, ext = (directory / f"{name}{s}" for s in (".key", ".csr", ".pem", ".ext"))
    ext.write_text("\n".join(extensions) + "\n", encoding="utf-8")
    _openssl(
        "req", "-new", "-newkey", _KEY, "-nodes", "-keyout", key.name, "-out", csr.name,
        "-subj", subject, cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", _DAYS, "-sha256", "-extfile", ext.name, "-out", cert.name,
        cwd=directory,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return key, cert


def make_test_pki(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1",)) -> TestPki:
    """Create a CA, a broker certificate valid for ``hosts`` and a client certificate.

    ``hosts`` are IP addresses or DNS names; ``localhost`` is always added.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", _KEY, "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", _DAYS, "-sha256", "-subj", "/CN=assessment-connector test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    names = [*hosts, "localhost"]
    alt_names = ",".join(
        f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}"
        for h in dict.fromkeys(names)
    )
    broker_key, broker_cert = _issue(
        directory,
        "broker",
        "/CN=local-kafka-broker",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth,clientAuth",
            f"subjectAltName={alt_names}",
        ],
    )
    client_key, client_cert = _issue(
        directory,
        "client",
        "/CN=connector",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ],
    )
    ca_cert = directory / "ca.pem"
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(
        "".join(p.read_text(encoding="utf-8") for p in (broker_key, broker_cert, ca_cert)),
        encoding="utf-8",
    )
    for private in (directory / "ca.key", broker_key, client_key, keystore):
        private.chmod(0o600)
    return TestPki(
        directory=directory,
        ca_cert=ca_cert,
        broker_cert=broker_cert,
        broker_key=broker_key,
        broker_keystore=keystore,
        client_cert=client_cert,
        client_key=client_key,
    )
