"""Asset rendering: small-asset mode, and the input_reference image as the first frame."""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image

from services.simulator.assets import AssetCache, AssetKey, render

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
    assert frames[0].size == (64, 36)
    full = render(AssetKey("video", 1280, 720, 8, 12))
    assert len(full) > 20 * len(data)


def test_small_thumbnail_and_spritesheet() -> None:
    for variant, image_format in (("thumbnail", "WEBP"), ("spritesheet", "JPEG")):
        data = render(AssetKey(variant, 1280, 720, 4, 12, small=True))  # type: ignore[arg-type]
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == image_format
            assert max(image.size) <= 64 * 5
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


async def test_cache_keys_separate_modes_and_first_frames(tmp_path: object) -> None:
    rendered: list[AssetKey] = []

    def renderer(key: AssetKey) -> bytes:
        rendered.append(key)
        return key.filename.encode()

    cache = AssetCache(fps=12, renderer=renderer, small=True)
    plain = await cache.get("video", 1280, 720, 4)
    red = await cache.get("video", 1280, 720, 4, png(1280, 720, RED))
    again = await cache.get("video", 1280, 720, 4, png(1280, 720, RED))
    assert plain.data != red.data
    assert again.data == red.data
    assert len(rendered) == 2
    assert all(key.small for key in rendered)
    assert b"-small" in plain.data
