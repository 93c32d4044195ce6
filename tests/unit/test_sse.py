"""SSE framing of a job's events: the message format, Last-Event-ID, the kind of a subject."""

from __future__ import annotations

import pytest

from services.intake.domain import Invalid
from services.intake.sse import kind_of, message, resume_after


def test_a_message_names_its_sequence_kind_and_data() -> None:
    assert message(7, "progress", '{"progress": 40}') == (
        b'id: 7\nevent: progress\ndata: {"progress": 40}\n\n'
    )


def test_data_of_several_lines_is_several_data_fields() -> None:
    assert message(1, "accepted", "{\n}") == b"id: 1\nevent: accepted\ndata: {\ndata: }\n\n"


@pytest.mark.parametrize(("given", "after"), [(None, 0), ("", 0), (" 42 ", 42), ("0", 0)])
def test_last_event_id(given: str | None, after: int) -> None:
    assert resume_after(given) == after


@pytest.mark.parametrize("given", ["-1", "x", "1.5", "\u0661", "9" * 21])
def test_a_last_event_id_not_ours_is_refused(given: str) -> None:
    refused = resume_after(given)
    assert isinstance(refused, Invalid)
    assert refused.field == "Last-Event-ID"


def test_kind_of() -> None:
    assert kind_of("clipline.job.timed_out.v1.acme.job_1") == "timed_out"
    assert kind_of("nope") == ""
