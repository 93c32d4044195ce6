"""The embedded stack's webhook secret: the simulator signs with it, the poller verifies.

Kept like the admin token (clipline/admin_token.py): one per stack folder, in a 0600 file that
`clipline down` leaves in place, given to the processes that need it and never recorded in
stack.json, shown by `status` or logged.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from pathlib import Path

from clipline import admin_token

ENV = "CLIPLINE_WEBHOOK_SECRET"
"""What the poller reads."""
SIM_ENV = "CLIPLINE_SIM_WEBHOOK_SECRET"
"""What the simulator reads."""
NAMES = (ENV, SIM_ENV)
FILE = "webhook-secret"


def new() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def read(home: Path) -> str | None:
    return admin_token.read(home, FILE)


def for_fresh_start(home: Path, environ: Mapping[str, str]) -> str:
    """The secret a stack starting afresh uses: the user's exported CLIPLINE_WEBHOOK_SECRET,
    else the one kept from an earlier start, else a new one. Kept."""
    secret = environ.get(ENV) or read(home) or new()
    if secret != read(home):
        admin_token.write(home, secret, FILE)
    return secret


def for_poller(secret: str) -> dict[str, str]:
    return {ENV: secret}


def for_simulator(secret: str) -> dict[str, str]:
    return {SIM_ENV: secret}
