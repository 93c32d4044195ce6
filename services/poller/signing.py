"""Webhook signatures checked against one secret or, during a rotation, any of several."""

from __future__ import annotations

from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


class RotatingWebhook(Webhook):
    """A Standard Webhooks verifier that accepts a signature by any of its secrets, so a secret
    is rotated without refusing webhooks: add the new one beside the old, switch the sender,
    drop the old. (A sender signing with both puts two signatures in one header; the library
    already accepts either.)"""

    def __init__(self, secrets: list[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret")
        super().__init__(secrets[0])
        self._others = [Webhook(secret) for secret in secrets[1:]]

    def verify(self, data: bytes | str, headers: dict[str, str], *, json_parse: bool = True) -> Any:
        try:
            return super().verify(data, headers, json_parse=json_parse)
        except WebhookVerificationError as first:
            for other in self._others:
                try:
                    return other.verify(data, headers, json_parse=json_parse)
                except WebhookVerificationError:
                    continue
            raise first from None
