"""Self-signed certificates made with the machine's openssl, for TLS tests on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_self_signed_cert(directory: Path, name: str = "memhp-test") -> tuple[Path, Path]:
    """(cert, key) PEM files valid for 127.0.0.1, ::1 and localhost; the cert is its own CA."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key.chmod(0o600)
    return cert, key
