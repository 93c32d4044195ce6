"""Job kinds remix, edit and extend: the contracts, intake's decisions, pricing and settlement
of an extension, the upstream call of each kind and the reconcile match of each kind."""

from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.intake.domain import (
    Derived,
    Invalid,
    Source,
    Valid,
    derive,
    validate,
)
from services.intake.facade_map import Problem, derived_request, video_object
from services.pricing_guard.budgets import Charge
from services.pricing_guard.domain import Admitted, Ending, bill, price
from services.submitter.domain import (
    Candidate,
    Wanted,
    matching,
    rejection,
    source_problem,
)
from shared.contracts import JobRecordV1, JobSpec, JobStatus
from shared.contracts.requests import JobRequestV1, parse_request
from shared.provider.errors import ProviderInvalidId
from shared.provider.openai_videos import derived_call
from shared.provider.port import CreateVideo
from shared.registry import load_registry

REG = load_registry().provider("simulator")
SRC = "job_" + "a" * 32
TODAY = date(2026, 12, 7)


def body(kind: str, **over: Any) -> dict[str, Any]:
    return {"kind": kind, "source_job_id": SRC, "prompt": "now at night", **over}


def source(**over: Any) -> Source:
    facts: dict[str, Any] = {
        "job_id": SRC, "status": "completed", "model": "sora-2", "size": "1280x720",
        "video_seconds": 8, "extensions": 0,
    }  # fmt: skip
    return Source(**(facts | over))


def derived(kind: str, **over: Any) -> Derived:
    d = validate(body(kind, **over), "acme", REG)
    assert isinstance(d, Derived), d
    return d


# -- contracts -----------------------------------------------------------------------------------


def test_records_and_requests_of_before_kinds_read_as_generate() -> None:
    spec = JobSpec.model_validate(
        {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "x"}
    )
    assert (spec.kind, spec.source_job_id, spec.total_seconds, spec.extensions) == (
        "generate", None, None, 0,
    )  # fmt: skip
    assert spec.video_seconds == 4
    request = JobRequestV1.model_validate({"prompt": "x"})
    assert (request.kind, request.source_job_id) == ("generate", None)


def test_an_extension_spec_is_priced_by_seconds_and_long_its_total() -> None:
    spec = JobSpec(
        model="sora-2", size="1280x720", seconds=8, prompt="x", kind="extend",
        source_job_id=SRC, total_seconds=12, extensions=1,
    )  # fmt: skip
    assert spec.video_seconds == 12
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_an_unknown_kind_is_refused_by_the_contract() -> None:
    assert parse_request({"prompt": "x", "kind": "upscale"}) == {"kind": "literal_error"}


# -- intake: what can be decided without the source ----------------------------------------------


@pytest.mark.parametrize(
    ("sent", "reason", "field"),
    [
        ({"prompt": "x", "source_job_id": SRC}, "invalid_request", "source_job_id"),
        ({"prompt": "x", "kind": "remix"}, "invalid_request", "source_job_id"),
        ({"prompt": "x", "kind": "upscale", "source_job_id": SRC}, "invalid_request", "kind"),
        ({"prompt": "x", "kind": "remix", "source_job_id": 7}, "invalid_request", "source_job_id"),
        (body("extend"), "invalid_seconds", "seconds"),
        (body("remix", input_reference="data:image/png;base64,AA=="), "invalid_request",
         "input_reference"),
        (body("edit", priority="urgent"), "invalid_priority", "priority"),
        (body("remix", prompt=" "), "invalid_request", "prompt"),
    ],
)  # fmt: skip
def test_refusals_before_the_source_is_read(sent: dict[str, Any], reason: str, field: str) -> None:
    d = validate(sent, "acme", REG)
    assert isinstance(d, Invalid), d
    assert (d.reason, d.field) == (reason, field)


def test_a_derived_request_keeps_what_it_named() -> None:
    d = derived("extend", seconds="8", priority="high")
    assert (d.kind, d.source_job_id, d.prompt, d.priority) == (
        "extend",
        SRC,
        "now at night",
        "high",
    )
    assert d.named == {"seconds": 8}
    assert derived("remix").named == {}


# -- intake: the source decides ------------------------------------------------------------------


def test_remix_and_edit_inherit_model_size_and_length() -> None:
    for kind in ("remix", "edit"):
        v = derive(derived(kind), source(video_seconds=12, extensions=2))
        assert isinstance(v, Valid), v
        s = v.spec
        assert (s.kind, s.source_job_id, s.model, s.size, s.seconds) == (
            kind, SRC, "sora-2", "1280x720", 12,
        )  # fmt: skip
        assert (s.total_seconds, s.extensions) == (None, 2)


def test_naming_the_sources_own_values_is_fine_and_others_refused() -> None:
    same = derived("remix", model="sora-2", size="1280x720", seconds=8)
    assert isinstance(derive(same, source()), Valid)
    for name, value in (("model", "sora-2-pro"), ("size", "720x1280"), ("seconds", 4)):
        refused = derive(derived("edit", **{name: value}), source())
        assert isinstance(refused, Invalid)
        assert (refused.reason, refused.field) == ("invalid_request", name)


def test_the_source_must_exist_for_this_tenant_and_be_completed() -> None:
    missing = derive(derived("remix"), None)
    assert isinstance(missing, Invalid)
    assert missing.reason == "source_not_found"
    for status in ("accepted", "generating", "failed", "cancelled"):
        d = derive(derived("extend", seconds=4), source(status=status))
        assert isinstance(d, Invalid)
        assert (d.reason, d.field) == ("source_not_completed", "source_job_id")
        assert status in d.detail


def test_an_extension_adds_its_seconds_to_the_stitched_total() -> None:
    v = derive(derived("extend", seconds=8), source(video_seconds=12, extensions=1))
    assert isinstance(v, Valid), v
    assert (v.spec.seconds, v.spec.total_seconds, v.spec.extensions) == (8, 20, 2)


@pytest.mark.parametrize("added", [0, 2, 6, 24])
def test_an_extension_adds_4_to_20_seconds_in_steps_of_4(added: int) -> None:
    d = derive(derived("extend", seconds=added), source())
    assert isinstance(d, Invalid)
    assert (d.reason, d.field) == ("invalid_seconds", "seconds")


def test_at_most_six_extensions_and_120_seconds() -> None:
    sixth = derive(derived("extend", seconds=4), source(video_seconds=40, extensions=5))
    assert isinstance(sixth, Valid)
    assert sixth.spec.extensions == 6
    seventh = derive(derived("extend", seconds=4), source(video_seconds=44, extensions=6))
    assert isinstance(seventh, Invalid)
    assert seventh.reason == "extension_limit"
    full = derive(derived("extend", seconds=20), source(video_seconds=100, extensions=2))
    assert isinstance(full, Valid)
    assert full.spec.total_seconds == 120
    over = derive(derived("extend", seconds=20), source(video_seconds=104, extensions=2))
    assert isinstance(over, Invalid)
    assert (over.reason, over.field) == ("extension_limit", "seconds")


def test_the_fingerprint_holds_kind_and_source_and_old_ones_hold() -> None:
    generate = validate({"prompt": "now at night"}, "acme", REG)
    assert isinstance(generate, Valid)
    assert "kind" not in generate.fingerprint  # a generate's fingerprint is as before kinds
    remix = derive(derived("remix"), source())
    edit = derive(derived("edit"), source())
    other = derive(derived("remix"), source(job_id="job_" + "b" * 32))
    assert isinstance(remix, Valid)
    assert isinstance(edit, Valid)
    assert isinstance(other, Valid)
    assert len({generate.fingerprint, remix.fingerprint, edit.fingerprint, other.fingerprint}) == 4
    again = derive(derived("remix", model="sora-2"), source())
    assert isinstance(again, Valid)
    assert again.fingerprint == remix.fingerprint


# -- pricing and settlement ----------------------------------------------------------------------


def test_an_extension_is_priced_by_the_seconds_it_adds() -> None:
    per_second = REG.price_micros_per_second("sora-2", "1280x720")
    assert per_second is not None
    assert price(REG, "sora-2", "1280x720", 8, TODAY) == Admitted(8 * per_second)


def test_a_completed_extension_is_billed_for_what_it_added_not_the_stitched_total() -> None:
    ended = Ending(
        "completed", None, "storage", frozenset({"completed"}), 800_000, 8,
        produced_seconds=20, base_seconds=12,
    )  # fmt: skip
    assert bill(ended) == Charge(800_000, "8 s produced")
    generate = Ending("completed", None, "storage", frozenset({"completed"}), 400_000, 4, 4)
    assert bill(generate) == Charge(400_000, "4 s produced")


# -- submitter: the upstream call and reconcile --------------------------------------------------


def call(kind: str, source_video: str | None = "video_src") -> CreateVideo:
    return CreateVideo(
        "sora-2", "1280x720", 8, "now at night", "job_1", kind=kind, source_video_id=source_video
    )


def test_each_kind_calls_its_endpoint_with_the_source_by_id() -> None:
    assert derived_call(call("remix")) == (
        "remix",
        "videos/video_src/remix",
        {"prompt": "now at night"},
    )
    assert derived_call(call("edit")) == (
        "edit", "videos/edits", {"prompt": "now at night", "video": {"id": "video_src"}},
    )  # fmt: skip
    assert derived_call(call("extend")) == (
        "extend",
        "videos/extensions",
        {"prompt": "now at night", "seconds": "8", "video": {"id": "video_src"}},
    )
    with pytest.raises(ProviderInvalidId):
        derived_call(call("remix", "../videos"))
    with pytest.raises(ProviderInvalidId):
        derived_call(call("edit", None))


def listed(vid: str, seconds: str, remixed_from: str | None = None) -> Candidate:
    return Candidate(vid, "sora-2", "1280x720", seconds, "now at night", 1000, remixed_from)


def test_reconcile_matches_each_kind_as_the_upstream_lists_it() -> None:
    videos = [
        listed("video_gen", "8"),
        listed("video_remix", "8", remixed_from="video_src"),
        listed("video_other_remix", "8", remixed_from="video_else"),
        listed("video_ext", "20"),
    ]
    generate = Wanted("sora-2", "1280x720", 8, "now at night")
    assert matching(generate, 1000, videos) == ["video_gen"]  # never someone's remix
    remix = Wanted("sora-2", "1280x720", 8, "now at night", source_video="video_src")
    assert matching(remix, 1000, videos) == ["video_gen", "video_remix"]  # a gateway may omit it
    extension = Wanted("sora-2", "1280x720", 20, "now at night", source_video="video_src")
    assert matching(extension, 1000, videos) == ["video_ext"]  # listed at its stitched total


def test_a_lost_source_fails_the_job_with_a_clear_reason() -> None:
    assert source_problem("generate", None, False, None) is None
    assert source_problem("remix", SRC, True, "video_src") is None
    gone = source_problem("extend", SRC, False, None)
    assert gone is not None
    assert "no record" in gone
    bare = source_problem("edit", SRC, True, None)
    assert bare is not None
    assert "no upstream video" in bare
    assert rejection(404, None, "not found", source="video_src").reason == "source_gone"
    assert rejection(404, None, "not found").reason == "upstream_rejected"
    assert rejection(400, "moderation_blocked", "no", source="video_src").reason == (
        "moderation_blocked"
    )


def test_a_record_of_before_kinds_is_still_read() -> None:
    record = JobRecordV1(
        job_id=SRC, tenant="acme", status=JobStatus.COMPLETED, idempotency_key="k",
        request_hash="h", spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="x"),
        history={"accepted": datetime.now(UTC)},
    )  # fmt: skip
    raw = record.model_dump(mode="json")
    for name in ("kind", "source_job_id", "total_seconds", "extensions"):
        del raw["spec"][name]
    assert JobRecordV1.model_validate(raw).spec.kind == "generate"


# -- the facade's mapping ------------------------------------------------------------------------


def test_facade_maps_each_kind_to_a_clipline_request() -> None:
    vid = "video_" + "a" * 32
    assert derived_request("remix", {"prompt": "p"}, vid) == {
        "kind": "remix", "source_job_id": SRC, "prompt": "p",
    }  # fmt: skip
    assert derived_request("edit", {"prompt": "p", "video": {"id": vid}}) == {
        "kind": "edit", "source_job_id": SRC, "prompt": "p",
    }  # fmt: skip
    extension = derived_request("extend", {"prompt": "p", "seconds": "8", "video": {"id": vid}})
    assert extension == {"kind": "extend", "source_job_id": SRC, "prompt": "p", "seconds": 8}


@pytest.mark.parametrize(
    ("kind", "fields", "status", "param"),
    [
        ("remix", {"prompt": "p", "model": "sora-2"}, 400, "model"),
        ("edit", {"prompt": "p"}, 400, "video"),
        ("edit", {"prompt": "p", "video": "video_x"}, 400, "video"),
        ("edit", {"prompt": "p", "video": {"id": "video_theirs"}}, 404, "video_id"),
        ("extend", {"prompt": "p", "video": {"id": "video_" + "a" * 32}}, 400, "seconds"),
        ("extend", {"prompt": "p", "seconds": 8, "video": {"id": "video_" + "a" * 32}}, 400,
         "seconds"),
        ("extend", {"video": {"id": "video_" + "a" * 32}, "seconds": "8"}, 400, "prompt"),
    ],
)  # fmt: skip
def test_facade_refuses_what_is_not_a_remix_edit_or_extension(
    kind: str, fields: dict[str, Any], status: int, param: str
) -> None:
    problem = derived_request(kind, fields)
    assert isinstance(problem, Problem)
    assert (problem.status, problem.param) == (status, param)


def test_a_video_object_shows_the_stitched_total_and_what_was_remixed() -> None:
    def record(spec: JobSpec) -> JobRecordV1:
        return JobRecordV1(
            job_id="job_" + "b" * 32, tenant="acme", status=JobStatus.ACCEPTED,
            idempotency_key="k", request_hash="h", spec=spec,
        )  # fmt: skip

    base = JobSpec(model="sora-2", size="1280x720", seconds=8, prompt="x", source_job_id=SRC)
    remix = video_object(record(base.model_copy(update={"kind": "remix"})))
    assert (remix["remixed_from_video_id"], remix["seconds"]) == ("video_" + "a" * 32, "8")
    extension = base.model_copy(update={"kind": "extend", "seconds": 4, "total_seconds": 12})
    extended = video_object(record(extension))
    assert (extended["remixed_from_video_id"], extended["seconds"]) == (None, "12")
