"""Certificates made with the machine's openssl, for TLS tests on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

LOOPBACK_SANS = "IP:127.0.0.1,IP:::1,DNS:localhost"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_self_signed_cert(directory: Path, name: str = "memhp-test", sans: str = LOOPBACK_SANS) -> tuple[Path, Path]:
    """(cert, key) PEM files valid for ``sans`` (127.0.0.1, ::1 and localhost); the cert is its own CA."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName={sans}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def make_ca(directory: Path, name: str = "memhp-test-ca") -> tuple[Path, Path]:
    """(cert, key) of a CA that signs leaf certificates (make_signed_cert)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def make_signed_cert(directory: Path, ca: tuple[Path, Path], name: str, sans: str) -> tuple[Path, Path]:
    """(cert, key) of a leaf certificate for ``sans`` (e.g. ``IP:127.0.0.3``) signed by ``ca``."""
    cert, key, csr = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-new", *_EC, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key
