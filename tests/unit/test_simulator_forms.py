"""The multipart fast path agrees with Starlette's parser, and steps aside for anything unusual."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message

from services.simulator.forms import MAX_FAST_BYTES, boundary_of, text_fields


def encoded(files: dict[str, Any]) -> tuple[bytes, str]:
    """What httpx (the openai SDK's transport) puts on the wire for these parts."""
    request = httpx.Request("POST", "http://simulator/v1/videos", files=files)
    return request.read(), request.headers["content-type"]


async def starlette_fields(body: bytes, content_type: str) -> list[tuple[str, str]]:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", content_type.encode())],
    }
    async with Request(scope, receive).form() as form:
        return [(name, str(value)) for name, value in form.multi_items()]


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "a paper boat", "model": "sora-2", "seconds": "8", "size": "1280x720"},
        {"prompt": "multi\r\nline\r\n\r\nprompt with ünïcödé ✓", "seconds": ""},
        {"prompt": "p", "input_reference[image_url]": "https://x.test/a.png"},
        {"prompt": "p", "characters[][id]": "char_1", "video[id]": "video_1"},
    ],
)
async def test_agrees_with_starlette_on_text_forms(fields: dict[str, str]) -> None:
    body, content_type = encoded({name: (None, value) for name, value in fields.items()})
    boundary = boundary_of(content_type)
    assert boundary is not None
    fast = text_fields(body, boundary)
    assert fast is not None
    assert fast == await starlette_fields(body, content_type)
    assert dict(fast) == fields


def test_files_and_part_headers_go_to_the_general_parser() -> None:
    body, content_type = encoded(
        {"prompt": (None, "p"), "input_reference": ("a.png", b"\x89PNG", "image/png")}
    )
    boundary = boundary_of(content_type)
    assert boundary is not None
    assert text_fields(body, boundary) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n',  # no closing
        b'junk--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n--B--\r\n',
        b'--B\r\nContent-Disposition: form-data; name="a%22b"\r\n\r\np\r\n--B--\r\n',
        b'--B\r\nContent-Disposition: attachment; name="prompt"\r\n\r\np\r\n--B--\r\n',
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\xff\r\n--B--\r\n',
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
        + b"x" * MAX_FAST_BYTES
        + b"\r\n--B--\r\n",
    ],
)
def test_anything_unusual_is_left_to_the_general_parser(body: bytes) -> None:
    assert text_fields(body, b"B") is None


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc123", b"abc123"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("multipart/form-data; charset=utf-8; boundary=xyz", b"xyz"),
        ("multipart/form-data", None),
        ("multipart/form-data; boundary=", None),
        ("multipart/form-data; boundary=" + "x" * 71, None),
    ],
)
def test_boundary_parameter(content_type: str, boundary: bytes | None) -> None:
    assert boundary_of(content_type) == boundary
