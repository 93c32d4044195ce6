"""Settings common to every service, read from CLIPLINE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class CommonSettings(BaseSettings):
    """Connection details every service needs. OTEL_* variables are read by OpenTelemetry itself."""

    model_config = SettingsConfigDict(env_prefix="CLIPLINE_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    """CLIPLINE_NATS_URL: one server, or a cluster's servers separated by commas
    (`nats://a:4222,nats://b:4222,nats://c:4222`): the connection goes to any that answers and
    fails over to the others (`nats_servers`)."""
    nats_creds: Path | None = None
    """CLIPLINE_NATS_CREDS: the service's own NATS credentials file (`.creds`: its user JWT and
    nkey seed, mode 0600). `clipline up` and compose's init give each service its own; without
    one the service connects anonymously, which a clipline-started NATS refuses."""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object a line, with trace_id, span_id and job_id."""
    provider: str = "simulator"
    """Which provider of the registry this deployment sends its jobs to (its models, prices,
    limits and lifecycle); the services that read the registry check it when they start."""
    registry_path: Path | None = None
    """A registry file of one's own instead of the built-in shared/registry/providers.toml."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def nats_servers(url: str) -> list[str]:
    """The servers of a CLIPLINE_NATS_URL: one URL, or several separated by commas (as the
    `nats` CLI takes them). nats-py and FastStream want the list."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    return servers


class MetricsSettings(BaseSettings):
    """Where a process (every service, the simulator) serves its metrics for Prometheus:
    CLIPLINE_METRICS_HOST and CLIPLINE_METRICS_PORT, a listener of its own, apart from the
    service's API (the metrics name tenants and spend: they are for operators, never published).
    No port: no /metrics, and the instruments record nothing (shared/metrics.py)."""

    model_config = SettingsConfigDict(
        env_prefix="CLIPLINE_METRICS_", extra="ignore", env_ignore_empty=True
    )

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)


class S3Settings(BaseSettings):
    """Where finished assets are stored (SeaweedFS locally, MinIO in compose, any S3)."""

    model_config = SettingsConfigDict(env_prefix="CLIPLINE_S3_", extra="ignore")

    endpoint: str = "127.0.0.1:9000"
    access_key: str = Field(min_length=1)
    """CLIPLINE_S3_ACCESS_KEY: required, no built-in default (`clipline up` generates one per
    stack; compose gives a MinIO user that is not root)."""
    secret_key: SecretStr = Field(min_length=1)
    """CLIPLINE_S3_SECRET_KEY: required, no built-in default."""
    secure: bool = False
    public_url: str | None = None
    """CLIPLINE_S3_PUBLIC_URL: where callers outside reach S3 (`scheme://host[:port]`), the
    address presigned URLs given to them name (`GET /v1/jobs/{id}/assets`, completion events);
    in compose MinIO's published address. Unset: the endpoint the services use."""
    bucket: str = "clipline-assets"
    region: str = "us-east-1"
    presign_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    """Lifetime of the presigned GET URLs in a completion event (S3 allows at most 7 days)."""
    retention_days: int = Field(default=0, ge=0)
    """CLIPLINE_S3_RETENTION_DAYS: delete stored assets this many whole days after the UTC day
    their job was accepted (0: keep forever). storage writes an S3 lifecycle rule
    (`clipline-retention`) where the server applies one, else it sweeps the bucket itself."""
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)
    """CLIPLINE_S3_RETENTION_SWEEP_SECONDS: how often storage looks at retention (each replica,
    jittered): writes the rule when it could not yet, or sweeps where S3 does not expire."""

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http(s)://host[:port]")
        if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
            raise ValueError("must be http(s)://host[:port], without a path, query or user")
        return f"{parts.scheme}://{parts.netloc}"


class UpstreamSettings(BaseSettings):
    """The OpenAI-videos-compatible upstream: the simulator, a gateway, or the real API."""

    model_config = SettingsConfigDict(env_prefix="CLIPLINE_UPSTREAM_", extra="ignore")

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr = SecretStr("sk-clipline-local")
    timeout_seconds: float = 30.0


class ConfigError(SystemExit):
    """Invalid configuration: the process exits with one clear message per bad variable."""


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment, turning validation errors into a ConfigError."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{prefix}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else err["msg"]  # a check across variables names them in its message
            for err in exc.errors()
        )
        raise ConfigError(f"configuration error: {problems}") from None
