"""A fast path for the multipart bodies SDKs send most: a few small text fields, no files.

openai-python >= 2.27 sends every create as multipart (reference §3.2), and a general multipart
parser costs several times the rest of a create. `text_fields` handles exactly the plain shape
(one `Content-Disposition: form-data; name="…"` header per part, UTF-8 values) and returns None
for anything else (files, part headers, quoting, odd framing), which then goes to Starlette's
parser. Pure: bytes in, fields out.
"""

from __future__ import annotations

import re

MAX_FAST_BYTES = 64 * 1024
_DISPOSITION = re.compile(
    rb'content-disposition: *form-data; *name="([^"\\\r\n%]*)"', re.IGNORECASE
)
_BOUNDARY = re.compile(r'boundary="?([0-9A-Za-z\'()+_,\-./:=? ]{1,70})"?(?:;|$)')


def boundary_of(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart/form-data Content-Type (RFC 2046 characters)."""
    _, _, params = content_type.partition(";")
    found = _BOUNDARY.search(params.strip())
    if found is None or found.group(1).endswith(" "):
        return None
    return found.group(1).encode("ascii")


def text_fields(body: bytes, boundary: bytes) -> list[tuple[str, str]] | None:
    """The (name, value) pairs of a plain text-only form, or None to use the general parser."""
    if len(body) > MAX_FAST_BYTES:
        return None
    delimiter = b"--" + boundary
    chunks = body.split(delimiter)
    # preamble (empty), one chunk per part, then the closing "--" (and an optional CRLF).
    if len(chunks) < 2 or chunks[0] != b"" or chunks[-1] not in (b"--", b"--\r\n"):
        return None
    fields: list[tuple[str, str]] = []
    for chunk in chunks[1:-1]:
        if not (chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")):
            return None
        head, separator, value = chunk[2:-2].partition(b"\r\n\r\n")
        if not separator or b"\r\n" in head:
            return None  # a part with more than one header (a file, a content type): general
        match = _DISPOSITION.fullmatch(head)
        if match is None:
            return None
        try:
            fields.append((match.group(1).decode("utf-8"), value.decode("utf-8")))
        except UnicodeDecodeError:
            return None
    return fields
