"""Upstream ids per provider contract: the pattern an id must match, and its URL path segment."""

from __future__ import annotations

import re
from urllib.parse import quote

from shared.provider.errors import ProviderInvalidId

OPENAI_VIDEO_ID_RE = re.compile(r"video_[A-Za-z0-9_-]{1,200}")
"""OpenAI Videos API video ids (the only contract clipline speaks; the simulator makes the
same): `video_` and 48 lowercase hex in every example, a format the reference (§2) calls
UNCONFIRMED, so any ASCII letters, digits, `_` and `-` after the prefix. Nothing that means
something in a URL (`/`, `.`, `%`, `?`, `#`), a KV key or a NATS subject, and no unicode."""
MAX_SHOWN = 80


def is_valid_video_id(video_id: object) -> bool:
    """Does `video_id` match the contract's pattern?"""
    return isinstance(video_id, str) and OPENAI_VIDEO_ID_RE.fullmatch(video_id) is not None


def checked_video_id(video_id: str, where: str) -> str:
    """`video_id`, or ProviderInvalidId saying `where` it came from (never sent anywhere)."""
    if not is_valid_video_id(video_id):
        shown = repr(video_id[:MAX_SHOWN])
        raise ProviderInvalidId(f"{where}: {shown} is not a video id (video_ + [A-Za-z0-9_-])")
    return video_id


def video_path(video_id: str, *rest: str) -> str:
    """`videos/<id>[/<rest>...]` relative to the API's base URL: the id checked against the
    pattern and path-escaped besides (a second guard: nothing in it may leave its segment)."""
    segment = quote(checked_video_id(video_id, "request"), safe="")
    return "/".join(["videos", segment, *rest])
