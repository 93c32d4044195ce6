"""The embedded stack's S3 key pair: generated once per stack folder, kept in a 0600 file.

There is no built-in key: `clipline up` gives SeaweedFS and the services this pair. It is kept
apart from stack.json (which `clipline down` removes), so a stack started again, and any tool
configured with the key, keep working against the same stored assets.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipline.private import private_dir, write_private
from clipline.servers import new_s3_key

FILE = "s3-key.json"


def read(home: Path) -> tuple[str, str] | None:
    """The kept (access key, secret key), or None when this stack folder has none (or an
    unreadable one, which is then replaced)."""
    path = home / FILE
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        data = json.loads(path.read_text())
        access, secret = data["access_key"], data["secret_key"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(access, str) and isinstance(secret, str) and access and secret):
        return None
    return access, secret


def for_stack(home: Path) -> tuple[str, str]:
    """The stack's key pair: the kept one, else a new random one, kept (0600)."""
    kept = read(home)
    if kept is not None:
        return kept
    access, secret = new_s3_key()
    private_dir(home)
    write_private(home / FILE, json.dumps({"access_key": access, "secret_key": secret}))
    return access, secret
