"""storage's SigV4 gives byte for byte what minio's signer (a reference implementation) gives
for the same request, key and time; S3 accepting it is tests/integration/test_s3_store.py."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
from minio.credentials.credentials import Credentials
from minio.signer import presign_v4, sign_v4_s3

from services.storage.s3http import S3Endpoint, S3Puts
from services.storage.sigv4 import UNSIGNED, presign_get, sign_headers, signing_key, uri_path

NOW = datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC)
HOST = "127.0.0.1:9000"
ACCESS, SECRET = "clipline", "clipline-secret/with+odd=chars"
KEYS = [
    "acme/2026/12/03/job_1/video.mp4",
    "acme/2026/12/03/job 2/thumbnail.webp",  # a space
    "acme/été/a+b=c&d/~x_y-z.jpg",  # unicode and reserved characters
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3"])
def test_signed_headers_match_minios(key: str, region: str) -> None:
    headers = {
        "Content-Type": "video/mp4",
        "Content-Length": "12345",
        "x-amz-meta-job-id": "job_1",
        "x-amz-meta-prompt-sha256": "ab" * 32,
        "x-amz-meta-spaced": "  two   spaces  ",
    }
    path = uri_path("clipline-assets", key)
    ours = sign_headers(
        method="PUT", host=HOST, path=path, headers=headers, access_key=ACCESS,
        secret_key=SECRET, region=region, now=NOW,
    )  # fmt: skip
    theirs = sign_v4_s3(
        method="PUT", url=urlsplit(f"http://{HOST}{path}"), region=region,
        headers={**headers, "Host": HOST, "x-amz-content-sha256": UNSIGNED,
                 "x-amz-date": "20261203T040506Z"},
        credentials=Credentials(ACCESS, SECRET), content_sha256=UNSIGNED, date=NOW,
    )  # fmt: skip
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["x-amz-date"] == "20261203T040506Z"


@pytest.mark.parametrize("key", KEYS)
def test_presigned_url_matches_minios(key: str) -> None:
    path = uri_path("clipline-assets", key)
    ours = presign_get(
        base=f"http://{HOST}", host=HOST, path=path, access_key=ACCESS, secret_key=SECRET,
        region="us-east-1", now=NOW, expires_seconds=3600,
    )  # fmt: skip
    theirs = presign_v4(
        method="GET", url=urlsplit(f"http://{HOST}{path}"), region="us-east-1",
        credentials=Credentials(ACCESS, SECRET), date=NOW, expires=3600,
    )  # fmt: skip
    mine = urlsplit(ours)
    assert (mine.netloc, mine.path) == (theirs.netloc, theirs.path)
    assert dict(parse_qsl(mine.query)) == dict(parse_qsl(theirs.query))
    assert dict(parse_qsl(mine.query))["X-Amz-Expires"] == "3600"


def test_the_signing_key_depends_on_day_region_and_secret() -> None:
    key = signing_key(SECRET, "20261203", "us-east-1")
    assert key == signing_key(SECRET, "20261203", "us-east-1")  # cached, the same
    others = {
        signing_key(SECRET, "20261204", "us-east-1"),
        signing_key(SECRET, "20261203", "eu-west-3"),
        signing_key("another", "20261203", "us-east-1"),
    }
    assert key not in others
    assert len(others) == 3


@pytest.mark.parametrize(
    ("public", "host"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("https://s3.example.com", "s3.example.com"),
        ("http://localhost:80", "localhost"),  # a client sends no default port in Host
    ],
)
def test_a_public_url_is_signed_for_its_own_host(public: str, host: str) -> None:
    puts = S3Puts(S3Endpoint("minio:9000", ACCESS, SECRET, public_url=public))
    path = uri_path("clipline-assets", "acme/x.mp4")
    url = puts.presign("clipline-assets", "acme/x.mp4", 3600, NOW)
    assert url.startswith(f"{public}{path}?")
    theirs = presign_v4(
        method="GET", url=urlsplit(f"http://{host}{path}"), region="us-east-1",
        credentials=Credentials(ACCESS, SECRET), date=NOW, expires=3600,
    )  # fmt: skip
    assert dict(parse_qsl(urlsplit(url).query)) == dict(parse_qsl(theirs.query))
    inside = puts.presign("clipline-assets", "acme/x.mp4", 3600, NOW, internal=True)
    assert inside.startswith(f"http://minio:9000{path}?")


def test_without_a_public_url_both_audiences_get_the_services_endpoint() -> None:
    puts = S3Puts(S3Endpoint(HOST, ACCESS, SECRET))
    outside = puts.presign("b", "k", 60, NOW)
    assert outside == puts.presign("b", "k", 60, NOW, internal=True)
    assert outside.startswith(f"http://{HOST}/b/k?")
