"""Asset production (H.264 MP4, WebP thumbnail, JPEG spritesheet) and their shared cache."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import av
from PIL import Image, UnidentifiedImageError

from services.simulator.domain import Upload, Variant

log = logging.getLogger(__name__)

MEDIA_TYPES: Final[dict[Variant, str]] = {
    "video": "video/mp4",
    "thumbnail": "image/webp",
    "spritesheet": "image/jpeg",
}
EXTENSIONS: Final[dict[Variant, str]] = {"video": "mp4", "thumbnail": "webp", "spritesheet": "jpg"}
PATTERN_VERSION = "p1"  # bump when the picture changes, so stale files in asset_dir are ignored
SPRITE_TILES, SPRITE_COLUMNS, SPRITE_LONG_SIDE = 10, 5, 256
SMALL_LONG_SIDE, SMALL_FPS = 64, 1  # small-asset mode: a few KB per asset, for throughput runs
FREE_BOX_HEADER, FREE_LARGE_HEADER = 8, 16  # a box header: 32-bit size; with a 64-bit largesize
MAX_BOX32 = 0xFFFFFFFF  # 4 GiB - 1: the largest box a 32-bit size can state
PAD_SLICE = 256 * 1024  # the padding's zeros are produced at most this many at a time
STRIPE_PERIOD = 128
STRIPE_SPEED = 8  # pixels per frame
BAND_FRACTION = 8  # the sweeping band is 1/8 of the height


@dataclass(frozen=True, slots=True)
class AssetKey:
    """One asset: `width`x`height` is the requested size; small mode renders less of it."""

    variant: Variant
    width: int
    height: int
    seconds: int
    fps: int
    small: bool = False
    first_frame: bytes | None = field(default=None, repr=False)  # an input_reference image

    @property
    def filename(self) -> str:
        mode = "-small" if self.small else ""
        frame = ""
        if self.first_frame is not None:
            frame = "-f" + hashlib.sha256(self.first_frame).hexdigest()[:16]
        return (
            f"{PATTERN_VERSION}-{self.variant}-{self.width}x{self.height}-{self.seconds}s-"
            f"{self.fps}fps{mode}{frame}.{EXTENSIONS[self.variant]}"
        )

    @property
    def frame_size(self) -> tuple[int, int]:
        """The rendered frame size: the requested one, or at most SMALL_LONG_SIDE in small mode
        (same aspect, even sides, as H.264 4:2:0 needs)."""
        if not self.small:
            return self.width, self.height
        scale = SMALL_LONG_SIDE / max(self.width, self.height)
        return _even(self.width * scale), _even(self.height * scale)

    @property
    def frame_rate(self) -> int:
        return SMALL_FPS if self.small else self.fps


@dataclass(frozen=True, slots=True)
class Asset:
    data: bytes
    media_type: str


Renderer = Callable[[AssetKey], bytes]

_ZEROS = bytes(PAD_SLICE)


def free_box_header(size: int) -> bytes:
    """The header of a top-level `free` box of `size` bytes in all (ISO/IEC 14496-12, 4.2): a
    32-bit size up to 4 GiB - 1, beyond it size 1 and a 64-bit `largesize`."""
    if size <= MAX_BOX32:
        if size < FREE_BOX_HEADER:
            raise ValueError(f"a box takes at least {FREE_BOX_HEADER} bytes, not {size}")
        return struct.pack(">I4s", size, b"free")
    return struct.pack(">I4sQ", 1, b"free", size)


@dataclass(frozen=True, slots=True)
class Padded:
    """A file `total` bytes long: `head` (the asset, then a `free` box's header), then the box's
    zeros, which are never held whole: `read` makes each slice when it is asked for."""

    head: bytes
    total: int

    @classmethod
    def of(cls, data: bytes, total: int = 0) -> Padded:
        """`data` padded to `total` bytes by one `free` box appended at the top level (players
        skip it); as it is when `total` leaves no room for a box's header (0: never padded)."""
        room = total - len(data)
        if room < FREE_BOX_HEADER:
            return cls(data, len(data))
        return cls(data + free_box_header(room), total)

    @property
    def padded(self) -> bool:
        return self.total > len(self.head)

    def read(self, offset: int, size: int) -> bytes:
        """Bytes [offset, offset + size) of the file, cut at its end; padding at most PAD_SLICE
        bytes a call."""
        end = min(offset + size, self.total)
        if offset >= end:
            return b""
        if offset < len(self.head):
            return self.head[offset : min(end, len(self.head))]
        count = min(end - offset, PAD_SLICE)
        return _ZEROS if count == PAD_SLICE else bytes(count)


def sniff_image(data: bytes) -> Upload:
    """Format and size of an uploaded image; format None if it is not a whole, decodable image.

    The image is decoded in full (it may become a first frame later), and Pillow's
    decompression-bomb guard refuses absurd sizes before any pixel is allocated.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            # Pillow names camera JPEGs with extra frames "MPO"; on the wire they are image/jpeg.
            image_format = "JPEG" if image.format == "MPO" else image.format
            return Upload(image_format, image.width, image.height, data)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return Upload(None, data=data)


def render(key: AssetKey) -> bytes:
    """Produce one asset's bytes. CPU-bound: call it from a worker thread."""
    width, height = key.frame_size
    fps = key.frame_rate
    first = _first_frame(key.first_frame, width, height)
    if key.variant == "video":
        return render_video(width, height, key.seconds, fps, first)
    if key.variant == "thumbnail":
        return render_thumbnail(width, height, fps, first)
    return render_spritesheet(width, height, key.seconds, fps, first)


def render_video(
    width: int, height: int, seconds: int, fps: int, first: Image.Image | None = None
) -> bytes:
    """A playable H.264/yuv420p MP4 of exactly width x height and seconds * fps frames; `first`,
    when given, is frame 0 (the input_reference image)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for index in range(seconds * fps):
            frame = av.VideoFrame(width, height, "yuv420p")
            if index == 0 and first is not None:
                planes = _image_planes(first)
            else:
                planes = _planes(width, height, index, fps)
            for plane, data in zip(frame.planes, planes, strict=True):
                plane.update(_pad(data, plane.width, plane.line_size, plane.height))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def render_thumbnail(width: int, height: int, fps: int, first: Image.Image | None = None) -> bytes:
    """The first frame as WebP, at the video's size."""
    out = io.BytesIO()
    (first or _picture(width, height, 0, fps)).save(out, format="WEBP", quality=80)
    return out.getvalue()


def render_spritesheet(
    width: int, height: int, seconds: int, fps: int, first: Image.Image | None = None
) -> bytes:
    """SPRITE_TILES frames spread over the clip, scaled down, in a JPEG grid."""
    scale = min(1.0, SPRITE_LONG_SIDE / max(width, height))
    tile_w, tile_h = max(1, round(width * scale)), max(1, round(height * scale))
    rows = math.ceil(SPRITE_TILES / SPRITE_COLUMNS)
    sheet = Image.new("RGB", (tile_w * SPRITE_COLUMNS, tile_h * rows))
    frames = seconds * fps
    for tile in range(SPRITE_TILES):
        index = tile * frames // SPRITE_TILES
        picture = first if index == 0 and first is not None else _picture(width, height, index, fps)
        thumb = picture.resize((tile_w, tile_h), Image.Resampling.BILINEAR)
        sheet.paste(thumb, ((tile % SPRITE_COLUMNS) * tile_w, (tile // SPRITE_COLUMNS) * tile_h))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80)
    return out.getvalue()


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _first_frame(data: bytes | None, width: int, height: int) -> Image.Image | None:
    """The input_reference image as RGB at the frame size (it already matches the requested size;
    small mode scales it down)."""
    if data is None:
        return None
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    return rgb if rgb.size == (width, height) else rgb.resize((width, height))


def _image_planes(image: Image.Image) -> tuple[bytes, bytes, bytes]:
    """Unpadded Y, U, V (4:2:0) planes of an RGB image."""
    luma, cb, cr = image.convert("YCbCr").split()
    half = (image.width // 2, image.height // 2)
    return luma.tobytes(), cb.resize(half).tobytes(), cr.resize(half).tobytes()


def _planes(width: int, height: int, index: int, fps: int) -> tuple[bytes, bytes, bytes]:
    """Unpadded Y, U, V planes of frame `index`: moving stripes, a sweeping band, drifting hue."""
    period = STRIPE_PERIOD
    ramp = bytes(16 + (x % period) * 219 // period for x in range(width + period))
    offset = (index * STRIPE_SPEED) % period
    row = ramp[offset : offset + width]
    bright = bytes(235 - (x % period) * 100 // period for x in range(offset, offset + width))
    band = max(1, height // BAND_FRACTION)
    top = (index * max(1, height // (2 * fps))) % height
    lit = {(top + y) % height for y in range(band)}
    luma = b"".join(bright if y in lit else row for y in range(height))
    phase = 2 * math.pi * index / (4 * fps)
    cb, cr = 128 + round(70 * math.sin(phase)), 128 + round(70 * math.cos(phase))
    chroma = (width // 2) * (height // 2)
    return luma, bytes([cb]) * chroma, bytes([cr]) * chroma


def _pad(data: bytes, width: int, line_size: int, height: int) -> bytes:
    if line_size == width:
        return data
    filler = bytes(line_size - width)
    return b"".join(data[y * width : (y + 1) * width] + filler for y in range(height))


def _picture(width: int, height: int, index: int, fps: int) -> Image.Image:
    luma, cb, cr = _planes(width, height, index, fps)
    half = (width // 2, height // 2)
    return Image.merge(
        "YCbCr",
        (
            Image.frombytes("L", (width, height), luma),
            Image.frombytes("L", half, cb).resize((width, height)),
            Image.frombytes("L", half, cr).resize((width, height)),
        ),
    ).convert("RGB")


class AssetCache:
    """Each asset is produced once per key, in a worker thread; concurrent askers share the work.

    Kept in memory always, and as files in `asset_dir` when one is given (survives restarts).
    """

    def __init__(
        self,
        *,
        fps: int,
        asset_dir: Path | None = None,
        renderer: Renderer = render,
        small: bool = False,
    ) -> None:
        self._fps = fps
        self._small = small
        self._dir = asset_dir
        self._render = renderer
        self._ready: dict[AssetKey, Asset] = {}
        self._pending: dict[AssetKey, asyncio.Task[Asset]] = {}

    async def get(
        self,
        variant: Variant,
        width: int,
        height: int,
        seconds: int,
        first_frame: bytes | None = None,
    ) -> Asset:
        key = AssetKey(variant, width, height, seconds, self._fps, self._small, first_frame)
        ready = self._ready.get(key)
        if ready is not None:
            return ready
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._produce(key), name=f"asset {key.filename}")
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        # shield: one caller giving up (client disconnect) must not cancel the others' work.
        return await asyncio.shield(task)

    async def _produce(self, key: AssetKey) -> Asset:
        data = await asyncio.to_thread(self._load_or_render, key)
        asset = Asset(data, MEDIA_TYPES[key.variant])
        self._ready[key] = asset
        return asset

    def _load_or_render(self, key: AssetKey) -> bytes:
        path = self._dir / key.filename if self._dir is not None else None
        if path is not None and path.is_file():
            return path.read_bytes()
        data = self._render(key)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_suffix(f".{os.getpid()}.tmp")
                temporary.write_bytes(data)
                temporary.replace(path)  # atomic: a concurrent reader never sees half a file
            except OSError:
                log.warning("could not write %s to the asset cache", path, exc_info=True)
        return data
