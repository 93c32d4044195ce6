"""Which clipline a job command talks to (flags, environment, a profile, the local stack), and
the HTTP calls to its intake API with errors that say what failed and the CLI's exit codes."""

from __future__ import annotations

import asyncio
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from clipline import local_keys
from clipline.budget_cli import endpoint
from clipline.servers import ServerError
from clipline.stack import require

OK, REFUSED, UNREACHABLE, USAGE = 0, 1, 2, 3
"""Exit codes: done; refused (a 4xx) or the job failed; the API cannot be reached (connection,
DNS, timeout, 5xx after retries); bad usage (arguments, local files, missing URL or key)."""

URL_ENV, KEY_ENV, PROFILE_ENV, CONFIG_ENV = (
    "CLIPLINE_URL",
    local_keys.ENV,
    "CLIPLINE_PROFILE",
    "CLIPLINE_CONFIG",
)
RETRIED_STATUSES = frozenset({502, 503, 504})
RETRY_DELAYS = (0.25, 1.0, 2.0)
"""Pauses before each retry of a 502/503/504 (a POST is safe to repeat: it carries an
Idempotency-Key); a refused connection is tried twice more, briefly."""
CONNECT_DELAYS = (0.1, 0.3)


class CliError(Exception):
    """An expected failure: one line on stderr and an exit code, never a traceback."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Target:
    """Where job commands go: intake's base URL and the API key sent there. `source` says how
    it was chosen (for messages; never the key); `local` is the embedded stack's folder when the
    target is that stack (then its S3 can be read directly)."""

    url: str
    api_key: str
    source: str
    local: Path | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """What the command line and the environment ask for (before any file is read)."""

    url: str | None = None
    api_key: str | None = None
    profile: str | None = None
    env: Mapping[str, str] | None = None


def config_path(env: Mapping[str, str]) -> Path:
    """The profile file: $CLIPLINE_CONFIG, else $XDG_CONFIG_HOME/clipline/profiles.toml,
    else ~/.config/clipline/profiles.toml."""
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "clipline" / "profiles.toml"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    url: str | None
    api_key: str | None


def load_profile(path: Path, name: str, env: Mapping[str, str]) -> Profile:
    """Profile `name` of the file: `[profiles.NAME]` with `url` and `api_key` (or `api_key_env`,
    the name of a variable holding it). CliError(USAGE) when the file or profile is missing or
    malformed; the message never quotes the file's values."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(USAGE, f"profile {name!r} asked for, but {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(USAGE, f"cannot read profiles from {path}: {exc}") from None
    profiles = data.get("profiles")
    table = profiles.get(name) if isinstance(profiles, dict) else None
    if not isinstance(table, dict):
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else "none"
        raise CliError(USAGE, f"no profile {name!r} in {path} (profiles: {known})")
    unknown = sorted(set(table) - {"url", "api_key", "api_key_env"})
    if unknown:
        raise CliError(USAGE, f"profile {name!r} in {path}: unknown keys {', '.join(unknown)}")
    url, key, key_env = table.get("url"), table.get("api_key"), table.get("api_key_env")
    if not all(v is None or isinstance(v, str) for v in (url, key, key_env)):
        raise CliError(USAGE, f"profile {name!r} in {path}: url and api_key must be strings")
    if key is not None and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(USAGE, f"{path} holds an API key and others may read it: chmod 600 {path}")
    if key is None and key_env:
        key = env.get(key_env) or None
    return Profile(name, url.rstrip("/") if url else None, key)


def resolve(choice: Choice, home: Path) -> tuple[str | None, str | None, str]:
    """(url, key, source) by precedence: `--url`/`--api-key`, then the profile of `--profile`,
    then CLIPLINE_URL/CLIPLINE_API_KEY, then the profile of CLIPLINE_PROFILE. A None url means
    the local stack under `home` (which may then supply the key too)."""
    env = os.environ if choice.env is None else choice.env
    levels: list[tuple[str | None, str | None, str]] = [
        (choice.url, choice.api_key, "--url"),
    ]
    if choice.profile:
        found = load_profile(config_path(env), choice.profile, env)
        levels.append((found.url, found.api_key, f"profile {found.name}"))
    levels.append((env.get(URL_ENV) or None, env.get(KEY_ENV) or None, URL_ENV))
    if not choice.profile and env.get(PROFILE_ENV):
        found = load_profile(config_path(env), env[PROFILE_ENV], env)
        levels.append((found.url, found.api_key, f"profile {found.name} ({PROFILE_ENV})"))
    url = next((u for u, _, _ in levels if u), None)
    key = next((k for _, k, _ in levels if k), None)
    source = next((s for u, _, s in levels if u), f"the local stack under {home}")
    return (url.rstrip("/") if url else None), key, source


def target(choice: Choice, home: Path, tenant: str) -> Target:
    """The Target of a job command; CliError(USAGE) when a remote URL has no key, (UNREACHABLE)
    when no URL is set and no local stack runs."""
    url, key, source = resolve(choice, home)
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise CliError(USAGE, f"{source}: {url!r} is not an http(s) URL")
        if key is None:
            raise CliError(
                USAGE,
                f"no API key for {url} ({source}): set {KEY_ENV}, --api-key or a profile's api_key",
            )
        return Target(url, key, source)
    try:
        state = require(home)
        key = key or local_keys.ensure(home, tenant, *endpoint(home))
    except ServerError as exc:
        raise CliError(
            UNREACHABLE, f"{exc} (or set {URL_ENV} and {KEY_ENV} for a remote clipline)"
        ) from None
    return Target(state.intake_url, key, source, local=home)


def problem_line(body: Any, fallback: str) -> str:
    """`reason: detail (field)` from RFC 9457 problem details or the older
    `{"error": {reason, detail, field}}` envelope; `fallback` for anything else."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return fallback
    reason = body.get("reason") or body.get("title") or body.get("code")
    detail = body.get("detail") or body.get("message")
    if not reason and not detail:
        return fallback
    line = f"{reason}: {detail}" if reason and detail else str(reason or detail)
    field = body.get("field") or body.get("param")
    return f"{line} ({field})" if field else line


def answer_line(response: httpx.Response) -> str:
    """What an error answer says, in one line."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    text = " ".join(response.text.split())[:200]
    return problem_line(body, f"HTTP {response.status_code}" + (f": {text}" if text else ""))


def refusal(what: str, response: httpx.Response) -> CliError:
    """The CliError of a non-2xx answer: 401 asks for another key (USAGE), 5xx is UNREACHABLE,
    any other 4xx REFUSED."""
    code = response.status_code
    line = answer_line(response)
    if code == 401:
        return CliError(USAGE, f"{what}: the API key was not accepted ({line})")
    if code >= 500:
        return CliError(UNREACHABLE, f"{what}: the server failed ({code}): {line}")
    return CliError(REFUSED, f"{what}: refused ({code}): {line}")


def unreachable(url: str, exc: httpx.HTTPError) -> CliError:
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.ConnectError: "cannot connect",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    detail = str(exc) or type(exc).__name__
    return CliError(UNREACHABLE, f"cannot reach clipline at {url}: {kind} ({detail})")


class Api:
    """intake's HTTP API for one Target (an httpx.AsyncClient; the key only in its headers)."""

    def __init__(self, target: Target, *, timeout: float = 30.0) -> None:
        self.target = target
        self.http = httpx.AsyncClient(
            base_url=target.url,
            headers={"Authorization": f"Bearer {target.api_key}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, repeated on a refused connection or a 502/503/504 a few times; the
        last answer (any status), or CliError(UNREACHABLE) when none came."""
        connect_left, delays = list(CONNECT_DELAYS), list(RETRY_DELAYS)
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                if not connect_left:
                    raise unreachable(self.target.url, exc) from None
                await asyncio.sleep(connect_left.pop(0))  # a backoff, not a synchronisation
                continue
            except httpx.HTTPError as exc:
                raise unreachable(self.target.url, exc) from None
            if response.status_code in RETRIED_STATUSES and delays:
                await asyncio.sleep(delays.pop(0))
                continue
            return response

    async def json(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer; CliError for any other answer."""
        response = await self.call(method, path, **kwargs)
        if not response.is_success:
            raise refusal(what, response)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                UNREACHABLE, f"{what}: the answer of {self.target.url} is not JSON"
            ) from None

    async def record(self, job_id: str) -> dict[str, Any]:
        """The job's record (a JSON object); CliError(REFUSED) when there is no such job."""
        response = await self.call("GET", f"/v1/jobs/{quote(job_id, safe='')}")
        if response.status_code == 404:
            raise CliError(REFUSED, f"no job {job_id} for this API key ({self.target.source})")
        if not response.is_success:
            raise refusal(f"job {job_id}", response)
        try:
            record = response.json()
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise CliError(UNREACHABLE, f"job {job_id}: the server's answer is not a job record")
        return record
