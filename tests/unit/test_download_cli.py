"""`clipline download`: file names, which assets, and the verified save (temp name, rename)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipline.download import DownloadMismatch, file_name, gone, problem, save, wanted
from shared.contracts import AssetRef, JobRecordV1

JOB = "job_" + "a" * 32
DATA = b"an mp4, say" * 1000


def asset(
    variant: str = "video", data: bytes = DATA, key: str = "t/2026/12/02/j/video.mp4"
) -> AssetRef:
    return AssetRef(
        variant=variant,
        bucket="clipline",
        key=key,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="video/mp4",
    )


def chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize(
    ("variant", "key", "name"),
    [
        ("video", "acme/2026/12/02/job_x/video.mp4", f"{JOB}-video.mp4"),
        ("thumbnail", "acme/2026/12/02/job_x/thumbnail.webp", f"{JOB}-thumbnail.webp"),
        ("spritesheet", "acme/2026/12/02/job_x/spritesheet.jpg", f"{JOB}-spritesheet.jpg"),
    ],
)
def test_file_name_is_job_variant_and_the_objects_extension(
    variant: str, key: str, name: str
) -> None:
    assert file_name(JOB, variant, key) == name


def test_problem_names_a_size_or_a_sha256_mismatch() -> None:
    ref = asset()
    assert problem(ref, ref.size_bytes, ref.sha256) is None
    assert "the record says" in (problem(ref, ref.size_bytes - 1, ref.sha256) or "")
    assert "sha256" in (problem(ref, ref.size_bytes, "0" * 64) or "")


def test_wanted_keeps_the_asked_order_and_names_what_is_missing() -> None:
    record = JobRecordV1.model_validate(
        {
            "job_id": JOB, "tenant": "acme", "status": "completed",
            "spec": {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "p"},
            "idempotency_key": "k", "request_hash": "h",
            "assets": [a.model_dump() for a in (asset(), asset("thumbnail", b"w", "k/t.webp"))],
        }
    )  # fmt: skip
    assert [a.variant for a in wanted(record, [])[0]] == ["video", "thumbnail"]
    got, missing = wanted(record, ["thumbnail", "spritesheet", "thumbnail"])
    assert [a.variant for a in got] == ["thumbnail"]
    assert missing == ["spritesheet"]


def test_save_renames_a_verified_download_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / f"{JOB}-video.mp4"
    saved = save(chunks(DATA), target, asset())
    assert target.read_bytes() == DATA
    assert saved.sha256 == hashlib.sha256(DATA).hexdigest()
    assert saved.size_bytes == len(DATA)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("got", [DATA[:-1], DATA[:-1] + b"X"], ids=["short", "corrupt"])
def test_save_deletes_a_mismatch_and_keeps_an_older_file(tmp_path: Path, got: bytes) -> None:
    target = tmp_path / f"{JOB}-video.mp4"
    target.write_bytes(b"from before")
    with pytest.raises(DownloadMismatch):
        save(chunks(got), target, asset())
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"from before"  # never replaced by unverified bytes


def test_save_leaves_nothing_when_the_stream_breaks(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield DATA[:10]
        raise ConnectionResetError("cut")

    with pytest.raises(ConnectionResetError):
        save(broken(), tmp_path / "x.mp4", asset())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchBucket"])
def test_an_object_s3_no_longer_has_is_said_gone_naming_retention(code: str) -> None:
    why = gone(asset(), code)
    assert why is not None
    assert why.startswith(f"s3://clipline/t/2026/12/02/j/video.mp4 is no longer in S3 ({code})")
    assert "CLIPLINE_S3_RETENTION_DAYS" in why


@pytest.mark.parametrize("code", ["AccessDenied", "InternalError", None])
def test_other_s3_errors_are_not_gone(code: str | None) -> None:
    assert gone(asset(), code) is None
