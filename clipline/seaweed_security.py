"""The embedded SeaweedFS's secrets, written into its 0700 data folder before each start.

- `s3.json` (`-s3.config`): the one S3 identity its gateway accepts, the stack's key.
- `security.toml` (read from the working directory): JWT signing keys, so its volume server's
  HTTP port reads and writes only with a token its master signs (the filer's and master's
  HTTP APIs are closed by `-disableHttp`); and mutual TLS on every gRPC port (master, volume,
  filer, S3, admin), so only a client holding the certificate below speaks to them.
- `tls/`: a CA made for this start, and one certificate and key signed by it that every
  component presents and accepts (SeaweedFS checks the CA, not host names). The CA's key is
  deleted once it has signed: no other certificate can be made.

Every file is 0600. A restart of the process (`clipline restart s3`) reuses them as they are.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from clipline.private import FILE_MODE, private_dir, write_private

SECURITY_FILE = "security.toml"
S3_CONFIG_FILE = "s3.json"
TLS_DIR = "tls"
CA_CERT, CERT, KEY = "ca.crt", "node.crt", "node.key"
# Every gRPC role SeaweedFS has in `weed mini`; each serves and dials with the one certificate.
GRPC_ROLES = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent")
_JWT = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")


def write(data_dir: Path, access_key: str, secret_key: str, openssl: str) -> None:
    """Write the S3 identity, fresh JWT keys and a fresh TLS set into `data_dir` (absolute)."""
    private_dir(data_dir)
    identity = {
        "name": "clipline",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    write_private(data_dir / S3_CONFIG_FILE, json.dumps({"identities": [identity]}, indent=2))
    tls = make_tls(data_dir / TLS_DIR, openssl)
    write_private(data_dir / SECURITY_FILE, security_toml(tls))


def security_toml(tls: Path) -> str:
    lines = ["# Written by clipline at each start of the embedded SeaweedFS; do not edit."]
    for section in _JWT:
        key = secrets.token_urlsafe(32)
        lines += [f"[{section}]", f'key = "{key}"', "expires_after_seconds = 10"]
    lines += ["[access]", "ui = false", "[filer.expose_directory_metadata]", "enabled = false"]
    lines += ["[grpc]", f"ca = {json.dumps(str(tls / CA_CERT))}"]
    pair = [f"cert = {json.dumps(str(tls / CERT))}", f"key = {json.dumps(str(tls / KEY))}"]
    for role in (*GRPC_ROLES, "client"):
        lines += [f"[grpc.{role}]", *pair]
    return "\n".join(lines) + "\n"


def make_tls(folder: Path, openssl: str) -> Path:
    """A new CA and one certificate (server and client use) signed by it, in `folder` (0700,
    files 0600); the CA's key is removed at the end."""
    private_dir(folder)
    for old in folder.iterdir():
        old.unlink()
    ca_key = folder / "ca.key"
    ext = folder / "ext.cnf"
    write_private(ext, "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(folder / CA_CERT),
         "-days", "3650", "-subj", "/CN=clipline embedded SeaweedFS CA"],
        [openssl, "req", *ec, "-keyout", str(folder / KEY), "-out", str(folder / "node.csr"),
         "-subj", "/CN=clipline-seaweedfs"],
        [openssl, "x509", "-req", "-in", str(folder / "node.csr"), "-CA", str(folder / CA_CERT),
         "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(folder / CERT), "-days", "3650",
         "-extfile", str(ext)],
    ]  # fmt: skip
    try:
        for argv in run:
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
    finally:
        for leftover in (ca_key, ext, folder / "node.csr", folder / "ca.srl"):
            leftover.unlink(missing_ok=True)
    for file in folder.iterdir():
        file.chmod(FILE_MODE)
    return folder
