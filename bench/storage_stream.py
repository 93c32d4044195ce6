"""P6, storage in constant memory: one large video (1 GiB by default) from the simulator through
storage into S3. Prints storage's peak RSS growth (goal <= 64 MB) and its throughput as a ratio
to a plain minio-SDK upload of the same bytes from the same simulator in the same run (goal
>= 0.7).

Run: python -m bench.storage_stream [bytes]   (or BENCH_STORAGE_BYTES; default 1 GiB, about a
     minute; make bench runs it)

A fresh embedded stack (bench/pipeline.py) whose simulator is in large-asset mode
(CLIPLINE_SIM_VIDEO_BYTES: the MP4 padded to `bytes` by a `free` box, streamed; small assets, so
rendering costs nothing) gets one job over NATS. A thread reads storage's VmRSS from /proc every
50 ms from submission until the job's `completed` event; the growth is the peak minus the last
value before the `generated` event arrived. Storage's time is the job's `storage_seconds`
(generated -> completed, from its record, in the completion event; the thumbnail and the
spritesheet, a few KB each, included), its throughput `bytes` over that.

The baseline, on the same stack once the job is stored: this process streams the same video
from the simulator (httpx, the stack's API key) straight into the minio SDK's
`put_object(length=-1, part_size=...)` with storage's part size, to the same S3 under another
key, with nothing else (no hashing, no queue, no event loop). MB are 10^6 bytes. A missed goal
prints FAIL; the run still finishes (exit status 0). A stored object of the wrong size, or a job
that does not complete, fails the run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
from minio import Minio
from nats.aio.msg import Msg

from bench.pipeline import NO_RATE_LIMITS, TERMINAL, env_number, new_tenant, stack, submit
from bench.pipeline import verdict as pass_fail
from clipline.stack import LOCAL_API_KEY, StackOptions, StackState
from services.storage.settings import StorageSettings

DEFAULT_BYTES = 1 << 30
GOAL_RSS_MB = 64.0
GOAL_RATIO = 0.7
MB = 1_000_000
SAMPLE_SECONDS = 0.05
READ_BYTES = 1024 * 1024  # the baseline's download chunk, as storage's provider adapter reads
PART_BYTES: int = StorageSettings.model_fields["part_size_bytes"].default
MIN_RATE = 5 * MB  # bytes/s below which the run is called stuck (the deadline)


class RssSampler(threading.Thread):
    """VmRSS of one process every SAMPLE_SECONDS, with monotonic timestamps, until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"rss {pid}", daemon=True)
        self._path = f"/proc/{pid}/status"
        self._stop_event = threading.Event()
        self.samples: list[tuple[float, int]] = []  # (monotonic, bytes)

    def read(self) -> int:
        with open(self._path) as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS in {self._path}")

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), self.read()))
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def before(self, moment: float) -> int:
        earlier = [rss for at, rss in self.samples if at <= moment]
        if not earlier:
            raise RuntimeError("no RSS sample before the moment asked for")
        return earlier[-1]

    def peak(self, start: float, end: float) -> int:
        return max(rss for at, rss in self.samples if start <= at <= end)

    def course(self, start: float, end: float, points: int = 4) -> list[int]:
        """The RSS at `points` even steps from `start` to `end`: a plateau is a fixed cost, a
        climb memory that grows with the bytes stored."""
        return [self.before(start + (end - start) * step / points) for step in range(1, points + 1)]


@dataclass
class JobEvents:
    """The first event of each kind of one tenant's job: when it arrived here, and its body."""

    seen: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        kind = msg.subject.split(".")[2]
        self.seen.setdefault(kind, (time.monotonic(), json.loads(msg.data)))
        self.changed.set()

    async def until_ended(self, deadline: float) -> str | None:
        while not TERMINAL & self.seen.keys():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
        return next(iter(TERMINAL & self.seen.keys()))


@dataclass(frozen=True)
class Stored:
    upstream_id: str
    seconds: float
    rss_before: int
    rss_peak: int
    samples: int
    course: list[int]  # RSS at 25, 50, 75 and 100% of the time from `generated` to `completed`

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_before


async def through_storage(state: StackState, pid: int, size: int) -> Stored:
    """One job end to end, storage's RSS sampled throughout; its storing time from its record."""
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    tenant = new_tenant("large")
    events = JobEvents()
    sampler = RssSampler(pid)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=events.on_event)
        sampler.start()
        await asyncio.sleep(4 * SAMPLE_SECONDS)  # a few samples of storage at rest
        submitted = time.monotonic()
        await submit(nc.jetstream(), tenant, ["large-1"])
        ended = await events.until_ended(submitted + 120 + size / MIN_RATE)
    finally:
        sampler.stop()
        await nc.close()
    if ended != "completed":
        detail = events.seen[ended][1] if ended else "no end before the deadline"
        raise SystemExit(f"the job did not complete: {ended} {detail}")
    generated_at, generated = events.seen["generated"]
    completed_at, completed = events.seen["completed"]
    video = next(asset for asset in completed["assets"] if asset["variant"] == "video")
    if video["size_bytes"] != size:
        raise SystemExit(f"storage stored {video['size_bytes']} bytes of a {size}-byte video")
    return Stored(
        upstream_id=generated["upstream_id"],
        seconds=float(completed["timings"]["storage_seconds"]),
        rss_before=sampler.before(generated_at),
        rss_peak=sampler.peak(submitted, completed_at),
        samples=len(sampler.samples),
        course=sampler.course(generated_at, completed_at),
    )


class StreamReader:
    """A file-like `read(n)` over a download's chunks: n bytes, fewer only at the end."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


def plain_upload(state: StackState, upstream_id: str, size: int) -> float:
    """Seconds to stream the video from the simulator into S3 with the minio SDK alone."""
    client = Minio(
        state.s3_endpoint,
        access_key=state.s3_access_key,
        secret_key=state.s3_secret_key,
        secure=False,
    )
    key = f"bench/plain-{uuid.uuid4().hex}.mp4"
    url = f"{state.simulator_url}/v1/videos/{upstream_id}/content"
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}", "Accept": "application/binary"}
    started = time.perf_counter()
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        response.raise_for_status()
        client.put_object(
            state.bucket,
            key,
            StreamReader(response.iter_bytes(READ_BYTES)),  # type: ignore[arg-type]
            length=-1,
            part_size=PART_BYTES,
            content_type="video/mp4",
        )
    seconds = time.perf_counter() - started
    stored = client.stat_object(state.bucket, key).size
    if stored != size:
        raise SystemExit(f"the plain upload stored {stored} bytes of a {size}-byte video")
    client.remove_object(state.bucket, key)
    return seconds


def main(size: int) -> None:
    print(
        f"P6 storage streaming: one {size / MB:.0f} MB video ({size} bytes), simulator "
        f"-> storage -> S3 (SeaweedFS), part size {PART_BYTES // (1024 * 1024)} MiB"
    )
    env = {
        **NO_RATE_LIMITS,
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_SIM_VIDEO_BYTES": str(size),
    }
    options = StackOptions(generation_seconds=1.0, queue_seconds=0.0, env=env)
    with stack("storage-stream", options) as state:
        pid = next(p.pid for p in state.processes if p.name == "storage")
        stored = asyncio.run(through_storage(state, pid, size))
        plain_seconds = plain_upload(state, stored.upstream_id, size)
    storage_rate = size / stored.seconds / MB
    plain_rate = size / plain_seconds / MB
    ratio = storage_rate / plain_rate
    growth = stored.growth / MB
    print(
        f"  storage:      {stored.seconds:7.2f} s  {storage_rate:7.1f} MB/s   "
        f"(generated -> completed, all three variants)"
    )
    print(f"  plain minio:  {plain_seconds:7.2f} s  {plain_rate:7.1f} MB/s   (baseline)")
    print(f"  ratio:        {ratio:.2f}   goal >= {GOAL_RATIO}  {pass_fail(ratio >= GOAL_RATIO)}")
    print(
        f"  storage RSS:  {stored.rss_before / MB:.1f} MB before generated, peak "
        f"{stored.rss_peak / MB:.1f} MB ({stored.samples} samples every "
        f"{SAMPLE_SECONDS * 1000:.0f} ms)"
    )
    course = "  ".join(f"{rss / MB:.1f}" for rss in stored.course)
    print(f"  storage RSS at 25/50/75/100% of the store: {course} MB")
    print(
        f"  RSS growth:   {growth:.1f} MB   goal <= {GOAL_RSS_MB:.0f} MB  "
        f"{pass_fail(growth <= GOAL_RSS_MB)}"
    )


if __name__ == "__main__":
    main(
        int(sys.argv[1])
        if len(sys.argv) > 1
        else int(env_number("BENCH_STORAGE_BYTES", DEFAULT_BYTES))
    )
