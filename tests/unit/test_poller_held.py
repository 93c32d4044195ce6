"""The poller's held deliveries (services/poller/held.py): bounded, forgotten when their message
comes back, acked only when a look that took one moved its job on, never a stale one."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.poller.adapters import NatsTimerAcks
from services.poller.follow import Followed
from services.poller.held import Held, HeldTimers
from shared.contracts import JobStatus
from tests.component.harness import job_record


@dataclass
class RecordingAcks:
    acked: list[str] = field(default_factory=list)

    async def ack(self, reply: str) -> None:
        self.acked.append(reply)


def held(n: int, delivery: int = 1) -> Held:
    """Job `job_<n>` (video `video_<n>`) held in its `delivery`th delayed nak."""
    record = job_record(f"job_{n}", JobStatus.SUBMITTED, upstream_id=f"video_{n}")
    job = Followed.of_record(record)
    assert job is not None
    return Held(f"$JS.ACK.CLIPLINE_JOBS.poller.{delivery}.{n}.{n}.0.0", job, record)


async def test_a_look_that_moved_the_job_on_acks_its_delivery_once() -> None:
    acks = RecordingAcks()
    timers = HeldTimers(acks)
    first = held(1)
    timers.hold(first)

    taken = timers.take("video_1")
    assert taken is first
    assert timers.take("video_1") is None  # out to one look at a time
    await timers.settle(taken, moved_on=True)
    await timers.settle(taken, moved_on=True)

    assert acks.acked == [first.reply]
    assert len(timers) == 0


async def test_a_look_that_left_the_job_followed_holds_it_again() -> None:
    acks = RecordingAcks()
    timers = HeldTimers(acks)
    timers.hold(held(1))

    await timers.settle(timers.take("video_1"), moved_on=False, record=None)

    again = timers.take("video_1")
    assert again is not None
    assert (again.reply, again.record) == (held(1).reply, None)  # the record is not known now
    assert acks.acked == []


async def test_a_delivery_that_came_back_while_out_is_not_acked() -> None:
    """Its timer came due during the look: the redelivery's handling decides, and a newer
    delivery held since is neither acked nor replaced by the old one."""
    acks = RecordingAcks()
    timers = HeldTimers(acks)
    timers.hold(held(1))
    taken = timers.take("video_1")
    timers.arrived("acme", "job_1")
    await timers.settle(taken, moved_on=True)
    assert acks.acked == []

    timers.hold(held(2))
    taken = timers.take("video_2")
    timers.hold(held(2, delivery=2))  # came back and waits again
    await timers.settle(taken, moved_on=False)
    newer = timers.take("video_2")
    assert newer is not None
    assert newer.reply == held(2, delivery=2).reply


def test_the_map_is_bounded_the_oldest_forgotten() -> None:
    timers = HeldTimers(RecordingAcks(), limit=2)
    for n in (1, 2, 3):
        timers.hold(held(n))

    assert len(timers) == 2
    assert timers.take("video_1") is None  # its timer comes due and is polled, as before
    assert timers.take("video_3") is not None


def test_records_are_kept_for_a_bounded_number_of_entries() -> None:
    """Past `records` entries with a record, the next are held without one (a webhook reads
    the record then); one dropped frees its room."""
    timers = HeldTimers(RecordingAcks(), records=2)
    for n in (1, 2, 3):
        timers.hold(held(n))

    assert len(timers) == 3
    kept = [timers.take(f"video_{n}") for n in (1, 2, 3)]
    assert [h is not None and h.record is not None for h in kept] == [True, True, False]
    timers.arrived(*held(4).key)  # nothing held for it: changes nothing
    timers.hold(held(4))  # 1-3 are out with looks: their room is free again
    again = timers.take("video_4")
    assert again is not None
    assert again.record is not None


def test_nothing_is_held_with_no_room() -> None:
    timers = HeldTimers(RecordingAcks(), limit=0)
    timers.hold(held(1))
    assert timers.take("video_1") is None


async def test_the_adapter_acks_only_jetstream_ack_subjects() -> None:
    def no_connection():  # type: ignore[no-untyped-def]
        raise AssertionError("never connected")

    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        await NatsTimerAcks(no_connection).ack("clipline.job.submitted.v1.acme.job_1")


async def test_a_job_moved_on_while_its_delivery_is_handled_is_not_held() -> None:
    timers = HeldTimers(RecordingAcks())
    await timers.moved_on(("acme", "job_1"))

    assert timers.hold(held(1)) is False  # acked instead of waiting
    assert timers.take("video_1") is None
    assert timers.hold(held(1)) is True  # the mark is spent: a later delivery waits


async def test_a_mark_is_forgotten_when_a_delivery_arrives() -> None:
    """The handling reads the record after its delivery arrived: it sees the move itself."""
    timers = HeldTimers(RecordingAcks())
    await timers.moved_on(("acme", "job_1"))
    timers.arrived("acme", "job_1")

    assert timers.hold(held(1)) is True


async def test_a_delivery_held_while_a_look_ran_is_acked_when_it_moves_the_job_on() -> None:
    """The look began before the delivery was held (it took nothing) and ended after."""
    acks = RecordingAcks()
    timers = HeldTimers(acks)
    assert timers.take("video_1") is None  # the look begins
    first = held(1)
    assert timers.hold(first) is True  # the handling naks meanwhile

    await timers.moved_on(("acme", "job_1"))  # the look moved the job on

    assert acks.acked == [first.reply]
    assert len(timers) == 0
