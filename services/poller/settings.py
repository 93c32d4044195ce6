"""poller settings (CLIPLINE_* environment variables; upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from standardwebhooks import Webhook

from services.poller.observe import OVERDUE_GRACE_SECONDS
from services.poller.signing import RotatingWebhook
from shared.config import CommonSettings


class PollerSettings(CommonSettings):
    http_port: int = 8083
    poll_default_seconds: float = 5.0
    """The longest first wait after a look past a job's expected completion (the wait is a
    tenth of the expected duration, at most this); later waits double, up to the max."""
    poll_min_seconds: float = 0.2
    poll_max_seconds: float = 30.0
    """The longest wait between two looks at a job overdue (polling alone)."""
    poll_look_tries: int = Field(default=3, ge=1, le=10)
    """CLIPLINE_POLL_LOOK_TRIES: retrieves one look may make when the upstream answers a 5xx, a
    429 asking for at most 2 s, or no answer (domain.look_again); 1: a failed look ends."""
    deadline_seconds: float = 3 * 3600.0
    """A job still not finished this long after it was created upstream (else submitted) ends
    `timed_out` (reason upstream_timeout)."""
    webhook_secret: SecretStr | None = None
    """CLIPLINE_WEBHOOK_SECRET (`whsec_` + base64): turns POST /webhooks/videos on (unset: 503,
    and polling alone follows jobs). Several, space-separated, during a rotation: a webhook
    signed by any of them is taken."""
    poll_webhook_safety_seconds: float = Field(default=60.0, gt=0)
    """With webhooks on, polls are only their safety net: the first this long past a job's
    expected completion, then at this interval."""
    poll_overdue_grace_seconds: float = Field(default=OVERDUE_GRACE_SECONDS, ge=0)
    """CLIPLINE_POLL_OVERDUE_GRACE_SECONDS: a followed job counts as overdue (the gauge
    clipline_poller_overdue, which the stuck-job alert watches) this long past its model's
    expected generation time."""

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_secret")
    @classmethod
    def _usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                RotatingWebhook(value.get_secret_value().split())
            except Exception:  # the library raises several kinds; the message must not echo it
                raise ValueError(
                    "must be 'whsec_' followed by base64 of a key (several: space-separated)"
                ) from None
        return value

    def webhook(self) -> Webhook | None:
        """The verifier of CLIPLINE_WEBHOOK_SECRET (any of its secrets), or None when webhooks
        are off."""
        if self.webhook_secret is None:
            return None
        return RotatingWebhook(self.webhook_secret.get_secret_value().split())
