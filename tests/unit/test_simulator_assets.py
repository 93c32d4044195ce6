"""Asset rendering: small-asset mode, and the input_reference image as the first frame."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from services.simulator.assets import (
    PAD_SLICE,
    AssetCache,
    AssetKey,
    Padded,
    free_box_header,
    render,
)
from services.simulator.settings import SimulatorSettings

RED = (220, 20, 30)


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def decode(data: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        return [frame.to_image() for frame in container.decode(stream)]  # type: ignore[no-untyped-call]


def mean(image: Image.Image) -> tuple[float, ...]:
    small = image.convert("RGB").resize((1, 1), Image.Resampling.BOX)
    pixel = small.getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return tuple(float(channel) for channel in pixel)


def close_to(found: tuple[float, ...], colour: tuple[int, int, int], slack: float = 25) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(found, colour, strict=True))


@pytest.mark.parametrize(
    ("size", "frame"), [((1280, 720), (64, 36)), ((720, 1280), (36, 64)), ((1024, 1792), (36, 64))]
)
def test_small_mode_keeps_the_aspect_at_a_tiny_size(
    size: tuple[int, int], frame: tuple[int, int]
) -> None:
    assert AssetKey("video", *size, 4, 12, small=True).frame_size == frame
    assert AssetKey("video", *size, 4, 12).frame_size == size


def test_small_video_is_a_few_kilobytes_and_plays() -> None:
    data = render(AssetKey("video", 1280, 720, 8, 12, small=True))
    assert len(data) < 20_000
    frames = decode(data)
    assert len(frames) == 8  # 1 fps
    assert {frame.size for frame in frames} == {(64, 36)}
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(8, abs=1)
    full = render(AssetKey("video", 1280, 720, 8, 12))
    assert len(full) > 20 * len(data)


@pytest.mark.parametrize(
    ("size", "thumbnail", "spritesheet"),
    [((1280, 720), (64, 36), (320, 72)), ((720, 1280), (36, 64), (180, 128))],
)
def test_small_thumbnail_and_spritesheet_are_tiny(
    size: tuple[int, int], thumbnail: tuple[int, int], spritesheet: tuple[int, int]
) -> None:
    """The thumbnail is one tiny frame; the spritesheet 5 x 2 tiny frames."""
    for variant, image_format, expected in (
        ("thumbnail", "WEBP", thumbnail),
        ("spritesheet", "JPEG", spritesheet),
    ):
        data = render(AssetKey(variant, *size, 4, 12, small=True))  # type: ignore[arg-type]
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a whole, decodable image
            assert image.format == image_format
            assert image.size == expected
        assert len(data) < 10_000


def test_input_reference_becomes_the_first_frame() -> None:
    image = png(1280, 720, RED)
    key = AssetKey("video", 1280, 720, 4, 12, small=True, first_frame=image)
    frames = decode(render(key))
    assert close_to(mean(frames[0]), RED)
    assert not close_to(mean(frames[1]), RED)
    plain = decode(render(AssetKey("video", 1280, 720, 4, 12, small=True)))
    assert not close_to(mean(plain[0]), RED)
    with Image.open(
        io.BytesIO(render(AssetKey("thumbnail", 1280, 720, 4, 12, first_frame=image)))
    ) as thumb:
        assert thumb.size == (1280, 720)
        assert close_to(mean(thumb), RED)


def test_the_mode_is_part_of_the_key_and_the_file_name() -> None:
    small = AssetKey("video", 1280, 720, 4, 12, small=True)
    full = AssetKey("video", 1280, 720, 4, 12)
    assert small != full
    assert small.filename != full.filename
    assert "-small" in small.filename
    assert "-small" not in full.filename


async def test_cache_keys_separate_modes_and_first_frames() -> None:
    rendered: list[AssetKey] = []

    def renderer(key: AssetKey) -> bytes:
        rendered.append(key)
        return key.filename.encode()

    cache = AssetCache(fps=12, renderer=renderer, small=True)
    plain = await cache.get("video", 1280, 720, 4)
    red = await cache.get("video", 1280, 720, 4, png(1280, 720, RED))
    again = await cache.get("video", 1280, 720, 4, png(1280, 720, RED))
    plain_again = await cache.get("video", 1280, 720, 4)
    assert plain.data != red.data
    assert again.data == red.data
    assert plain_again is plain
    assert len(rendered) == 2  # once per distinct asset, reused after
    assert all(key.small for key in rendered)
    assert b"-small" in plain.data


async def test_small_and_full_caches_never_share_files_in_an_asset_dir(tmp_path: Path) -> None:
    rendered: list[AssetKey] = []

    def renderer(key: AssetKey) -> bytes:
        rendered.append(key)
        return b"small" if key.small else b"full"

    small = await AssetCache(fps=12, asset_dir=tmp_path, renderer=renderer, small=True).get(
        "video", 1280, 720, 4
    )
    full = await AssetCache(fps=12, asset_dir=tmp_path, renderer=renderer).get(
        "video", 1280, 720, 4
    )
    assert (small.data, full.data) == (b"small", b"full")
    assert len(rendered) == 2
    assert len(list(tmp_path.iterdir())) == 2

    def must_not_render(key: AssetKey) -> bytes:
        raise AssertionError(f"rendered {key} again")

    restarted = AssetCache(fps=12, asset_dir=tmp_path, renderer=must_not_render, small=True)
    assert (await restarted.get("video", 1280, 720, 4)).data == b"small"


# --- large-asset mode: padding by a `free` box ------------------------------------------------


def test_free_box_header_is_32_bit_up_to_4_gib_and_64_bit_beyond() -> None:
    assert free_box_header(8) == b"\x00\x00\x00\x08free"
    assert free_box_header(2**32 - 1) == b"\xff\xff\xff\xfffree"
    assert free_box_header(2**32) == b"\x00\x00\x00\x01free" + (2**32).to_bytes(8, "big")
    with pytest.raises(ValueError, match="at least 8"):
        free_box_header(7)


def test_padded_reads_the_head_then_zeros_and_stops_at_the_total() -> None:
    body = Padded.of(b"MP4!", 4 + 8 + 5)
    assert body.padded
    assert body.total == 17
    whole = b"".join(body.read(offset, 3) for offset in range(0, 17, 3))
    assert whole == b"MP4!" + b"\x00\x00\x00\x0dfree" + bytes(5)
    assert body.read(17, 10) == b""
    assert body.read(15, 10) == bytes(2)


@pytest.mark.parametrize("total", [0, 3, 4, 11])
def test_no_room_for_a_box_leaves_the_asset_as_it_is(total: int) -> None:
    body = Padded.of(b"MP4!", total)
    assert (body.head, body.total, body.padded) == (b"MP4!", 4, False)


def test_beyond_4_gib_the_padding_is_one_largesize_box_made_slice_by_slice() -> None:
    total = 5 * 2**30
    body = Padded.of(b"MP4!", total)
    assert body.head == b"MP4!" + free_box_header(total - 4)
    assert len(body.head) == 4 + 16
    assert body.read(total - 10, 1 << 30) == bytes(10)
    assert len(body.read(1000, 1 << 30)) == PAD_SLICE  # never more zeros than a slice at once


@pytest.mark.parametrize(("raw", "expected"), [("", 0), ("1073741824", 1 << 30), ("0", 0)])
def test_video_bytes_setting(monkeypatch: pytest.MonkeyPatch, raw: str, expected: int) -> None:
    monkeypatch.setenv("CLIPLINE_SIM_VIDEO_BYTES", raw)
    assert SimulatorSettings().video_bytes == expected
