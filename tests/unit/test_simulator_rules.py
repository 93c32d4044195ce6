"""Pure simulator rules added with the full contract: paging, remix/edit/extension/character
validation, contracts, moderation, rate-limit buckets and the seeded fault dice."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from services.simulator import domain, limits
from services.simulator.domain import (
    CreateRequest,
    Invalid,
    ListQuery,
    Page,
    Phase,
    SourceRequest,
    Timeline,
    Upload,
)
from services.simulator.faults import (
    MAX_SECONDS,
    DownloadFault,
    FaultPlan,
    Faults,
    Generation,
    JobFate,
)

# --- multipart folding -------------------------------------------------------------------------


def test_bracket_fields_fold_into_objects_and_arrays() -> None:
    folded = domain.fold_form(
        [
            ("prompt", "p"),
            ("video[id]", "video_1"),
            ("characters[][id]", "char_a"),
            ("characters[][id]", "char_b"),
        ]
    )
    assert folded == {
        "prompt": "p",
        "video": {"id": "video_1"},
        "characters": [{"id": "char_a"}, {"id": "char_b"}],
    }


def test_unknown_bracket_names_stay_flat_and_are_reported_as_unknown() -> None:
    folded = domain.fold_form([("prompt", "p"), ("metadata[x]", "1")])
    assert folded == {"prompt": "p", "metadata[x]": "1"}
    assert isinstance(folded, dict)
    refused = domain.validate_create(folded, "form")
    assert refused == Invalid(
        "Unknown parameter: 'metadata[x]'.", param="metadata[x]", code="unknown_parameter"
    )


def test_a_file_and_bracket_fields_for_one_name_conflict() -> None:
    folded = domain.fold_form([("video", Upload("MP4")), ("video[id]", "video_1")])
    assert isinstance(folded, Invalid)
    assert folded.param == "video"


# --- contracts ---------------------------------------------------------------------------------


def test_launch_contract_has_the_observed_seconds_message() -> None:
    refused = domain.validate_create(
        {"prompt": "p", "seconds": "10"}, "json", domain.CONTRACTS["2025-10"]
    )
    assert refused == Invalid(
        "Invalid value: '10'. Supported values are: '4', '8', and '12'.",
        param="seconds",
        code="invalid_value",
    )


def test_launch_contract_has_the_observed_size_message() -> None:
    refused = domain.validate_create(
        {"prompt": "p", "model": "sora-2-pro", "size": "1920x1080"},
        "json",
        domain.CONTRACTS["2025-10"],
    )
    assert refused == Invalid(
        "Invalid value: '1920x1080'. Supported values are: '720x1280', '1280x720', "
        "'1024x1792', and '1792x1024'.",
        param="size",
        code="invalid_value",
    )


def test_launch_contract_has_no_characters_parameter() -> None:
    refused = domain.validate_create(
        {"prompt": "p", "characters": []}, "json", domain.CONTRACTS["2025-10"]
    )
    assert isinstance(refused, Invalid)
    assert refused.code == "unknown_parameter"


def test_unknown_size_lists_the_whole_enum_as_observed() -> None:
    refused = domain.validate_create(
        {"prompt": "p", "size": "1920x1080"}, "json", domain.CONTRACTS["2025-10"]
    )
    assert refused == Invalid(
        "Invalid value: '1920x1080'. Supported values are: '720x1280', '1280x720', "
        "'1024x1792', and '1792x1024'.",
        param="size",
        code="invalid_value",
    )


def test_sora_2_refuses_a_pro_size() -> None:
    refused = domain.validate_create({"prompt": "p", "size": "1792x1024"}, "json")
    assert refused == Invalid(
        "Invalid value: '1792x1024' for model 'sora-2'. Supported values are: '720x1280' and "
        "'1280x720'.",
        param="size",
        code="invalid_value",
    )


def test_launch_contract_has_no_dated_slugs() -> None:
    refused = domain.validate_create(
        {"prompt": "p", "model": "sora-2-2025-12-08"}, "json", domain.CONTRACTS["2025-10"]
    )
    assert isinstance(refused, Invalid)
    assert (
        refused.message == "Invalid value: 'sora-2-2025-12-08'. Supported values are: "
        "'sora-2' and 'sora-2-pro'."
    )


# --- characters on create ----------------------------------------------------------------------


def test_known_characters_are_accepted() -> None:
    decided = domain.validate_create(
        {"prompt": "p", "characters": [{"id": "char_a"}, {"id": "char_b"}]},
        "json",
        characters={"char_a", "char_b"},
    )
    assert isinstance(decided, CreateRequest)
    assert decided.characters == ("char_a", "char_b")


@pytest.mark.parametrize(
    ("characters", "code", "param"),
    [
        ([{"id": "char_a"}] * 3, "array_above_max_length", "characters"),
        ([{"id": "char_zzz"}], "invalid_value", "characters[0].id"),
        ([{"name": "x"}], "invalid_type", "characters[0]"),
        ("char_a", "invalid_type", "characters"),
    ],
)
def test_bad_characters(characters: object, code: str, param: str) -> None:
    refused = domain.validate_create(
        {"prompt": "p", "characters": characters}, "json", characters={"char_a"}
    )
    assert isinstance(refused, Invalid)
    assert (refused.code, refused.param) == (code, param)


# --- remix, edit, extension, character ---------------------------------------------------------


def test_remix_needs_only_a_prompt() -> None:
    assert domain.validate_remix({"prompt": "again"}, "video_1") == SourceRequest(
        "again", "video_1"
    )
    assert domain.validate_remix({}, "video_1") == Invalid(
        "Missing required parameter: 'prompt'.",
        param="prompt",
        code="missing_required_parameter",
    )
    refused = domain.validate_remix({"prompt": "p", "seconds": "8"}, "video_1")
    assert isinstance(refused, Invalid)
    assert refused.code == "unknown_parameter"


def test_edit_takes_a_video_id_in_json_or_brackets() -> None:
    assert domain.validate_edit({"prompt": "p", "video": {"id": "video_1"}}, "json") == (
        SourceRequest("p", "video_1")
    )
    missing = domain.validate_edit({"prompt": "p"}, "json")
    assert isinstance(missing, Invalid)
    assert (missing.param, missing.code) == ("video", "missing_required_parameter")
    uploaded = domain.validate_edit({"prompt": "p", "video": Upload(None)}, "form")
    assert isinstance(uploaded, Invalid)
    assert "eligible customers" in uploaded.message
    text = domain.validate_edit({"prompt": "p", "video": "video_1"}, "form")
    assert isinstance(text, Invalid)
    assert text.message == "Invalid type for 'video': expected a file, but got a string instead."


def test_extension_needs_seconds_from_the_contract() -> None:
    ok = domain.validate_extension(
        {"prompt": "p", "seconds": "20", "video": {"id": "video_1"}}, "json"
    )
    assert ok == SourceRequest("p", "video_1", "20")
    missing = domain.validate_extension({"prompt": "p", "video": {"id": "video_1"}}, "json")
    assert isinstance(missing, Invalid)
    assert missing.param == "seconds"
    bad = domain.validate_extension(
        {"prompt": "p", "seconds": 8, "video": {"id": "video_1"}}, "json"
    )
    assert isinstance(bad, Invalid)
    assert bad.code == "invalid_type"


def test_extension_limits() -> None:
    assert domain.check_extension("video_1", 100, 5, 20) is None
    too_long = domain.check_extension("video_1", 104, 5, 20)
    assert isinstance(too_long, Invalid)
    assert (too_long.param, "124 seconds" in too_long.message) == ("seconds", True)
    too_many = domain.check_extension("video_1", 24, 6, 4)
    assert isinstance(too_many, Invalid)
    assert too_many.param == "video"


def test_character_needs_a_name_and_a_video_file() -> None:
    assert domain.validate_character({"name": "Mossy", "video": Upload(None)}) == (
        domain.CharacterRequest("Mossy")
    )
    cases: list[tuple[dict[str, object], str]] = [
        ({"video": Upload(None)}, "name"),
        ({"name": "", "video": Upload(None)}, "name"),
        ({"name": "x" * 81, "video": Upload(None)}, "name"),
        ({"name": "Mossy"}, "video"),
        ({"name": "Mossy", "video": "text"}, "video"),
    ]
    for params, param in cases:
        refused = domain.validate_character(params)
        assert isinstance(refused, Invalid), params
        assert refused.param == param


def test_sources_must_be_completed() -> None:
    assert domain.check_source("v", Phase("completed", 100), "x") is None
    running = domain.check_source("v", Phase("in_progress", 40), "x")
    failed = domain.check_source("v", Phase("failed", 0), "x")
    assert running is not None
    assert failed is not None
    assert (running.code, failed.code) == ("video_not_ready", "video_failed")


# --- the timeline with failures ----------------------------------------------------------------


def test_moderated_job_fails_when_it_leaves_the_queue() -> None:
    patterns = [re.compile(r"\bdarth vader\b", re.IGNORECASE)]
    error = domain.moderate("Darth Vader dancing", patterns)
    assert error == domain.MODERATED
    assert domain.moderate("a calm lake", patterns) is None
    timeline = Timeline(1.0, 0.0, error)
    assert domain.phase_at(0.5, timeline) == Phase("queued", 0)
    assert domain.phase_at(1.0, timeline) == Phase("failed", 0)


def test_failing_job_runs_then_fails() -> None:
    timeline = Timeline(0.0, 4.0, domain.INTERNAL)
    assert domain.phase_at(2.0, timeline).status == "in_progress"
    assert domain.phase_at(4.0, timeline) == Phase("failed", 99)


# --- paging ------------------------------------------------------------------------------------

ORDERED = ["v0", "v1", "v2", "v3", "v4"]
POSITION = {video_id: index for index, video_id in enumerate(ORDERED)}


def page(query: ListQuery, alive: set[str] | None = None) -> Page:
    found = domain.paginate(ORDERED, POSITION, alive if alive is not None else set(ORDERED), query)
    assert isinstance(found, Page)
    return found


def test_pages_walk_every_id_once_in_both_orders() -> None:
    for order, expected in (("asc", ORDERED), ("desc", ORDERED[::-1])):
        seen: list[str] = []
        after = None
        while True:
            found = page(ListQuery(2, order, after))  # type: ignore[arg-type]
            seen += found.ids
            if not found.has_more:
                break
            after = found.ids[-1]
        assert seen == expected


def test_has_more_is_exact_and_deleted_ids_are_skipped_but_stay_cursors() -> None:
    assert page(ListQuery(5, "asc")) == Page(ORDERED, has_more=False)
    assert page(ListQuery(4, "asc")) == Page(ORDERED[:4], has_more=True)
    alive = {"v0", "v2", "v4"}
    assert page(ListQuery(2, "asc", "v1"), alive) == Page(["v2", "v4"], has_more=False)
    assert page(ListQuery(0, "asc"), alive) == Page([], has_more=True)


def test_unknown_cursor_is_refused() -> None:
    refused = domain.paginate(ORDERED, POSITION, set(ORDERED), ListQuery(2, "asc", "nope"))
    assert isinstance(refused, Invalid)
    assert refused.param == "after"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ListQuery(20, "desc", None)),
        ({"limit": "0", "order": "asc", "after": "v1"}, ListQuery(0, "asc", "v1")),
        ({"limit": "100"}, ListQuery(100, "desc", None)),
    ],
)
def test_list_query(query: dict[str, str], expected: ListQuery) -> None:
    assert domain.parse_list_query(query) == expected


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": "101"}, "integer_above_max_value"),
        ({"limit": "-1"}, "integer_below_min_value"),
        ({"limit": "ten"}, "invalid_type"),
        ({"order": "newest"}, "invalid_value"),
    ],
)
def test_bad_list_query(query: dict[str, str], code: str) -> None:
    refused = domain.parse_list_query(query)
    assert isinstance(refused, Invalid)
    assert refused.code == code


# --- rate limits -------------------------------------------------------------------------------


def test_bucket_allows_a_burst_then_refills_over_the_minute() -> None:
    bucket = limits.Bucket(10, now=0.0)
    verdicts = [bucket.take(0.0) for _ in range(11)]
    assert [v.allowed for v in verdicts] == [True] * 10 + [False]
    assert [v.remaining for v in verdicts[:3]] == [9, 8, 7]
    refused = verdicts[-1]
    assert refused.retry_after_seconds == pytest.approx(6.0)  # one token per 6 s at 10 RPM
    assert not bucket.take(5.9).allowed
    assert bucket.take(6.0).allowed


def test_rate_limit_headers_and_body() -> None:
    bucket = limits.Bucket(25, now=0.0)
    for _ in range(25):
        bucket.take(0.0)
    refused = bucket.take(0.0)
    headers = limits.headers(refused)
    assert headers == {
        "x-ratelimit-limit-requests": "25",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "retry-after": "3",
        "retry-after-ms": "2400",
    }
    error = limits.exceeded("sora-2", refused)
    assert (error.type, error.code, error.param) == ("requests", "rate_limit_exceeded", None)
    assert "Limit 25" in error.message
    assert "try again in 2.4s" in error.message


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (2.4, "2.4s"), (60, "1m0s"), (65.5, "1m5.5s")]
)
def test_duration_format(seconds: float, text: str) -> None:
    assert limits.duration(seconds) == text


def test_tiers_and_overrides() -> None:
    assert limits.limits_for("off", {}) is None
    assert limits.limits_for("1", {}) == {"sora-2": 25, "sora-2-pro": 10}
    assert limits.limits_for("5", {"sora-2": 9}) == {"sora-2": 9, "sora-2-pro": 150}


# --- faults ------------------------------------------------------------------------------------


def decisions(plan: FaultPlan, count: int) -> list[tuple[float, int | None, bool]]:
    return [
        (fault.delay_seconds, fault.error_status, fault.rate_limited)
        for fault in (plan.on_request("create") for _ in range(count))
    ]


def test_same_seed_same_faults() -> None:
    faults = Faults(
        seed=42,
        error_rate=0.3,
        error_statuses=(500, 503),
        rate_limit_rate=0.3,
        latency_ms=5,
        latency_jitter_ms=10,
    )
    first, second = decisions(FaultPlan(faults), 200), decisions(FaultPlan(faults), 200)
    assert first == second
    statuses = {status for _, status, _ in first}
    assert statuses == {None, 500, 503}
    assert any(limited for *_, limited in first)
    assert all(0.005 <= delay <= 0.015 for delay, *_ in first)
    other = decisions(FaultPlan(faults.model_copy(update={"seed": 43})), 200)
    assert other != first


def test_rates_are_roughly_honoured() -> None:
    plan = FaultPlan(Faults(seed=1, error_rate=0.25))
    errors = sum(status is not None for _, status, _ in decisions(plan, 4000))
    assert 800 < errors < 1200


def test_operations_filter_limits_request_faults() -> None:
    plan = FaultPlan(Faults(seed=1, error_rate=1.0, operations=("retrieve",)))
    assert plan.on_request("create").error_status is None
    assert plan.on_request("retrieve").error_status == 500


def test_no_faults_by_default() -> None:
    plan = FaultPlan(Faults())
    assert decisions(plan, 50) == [(0.0, None, False)] * 50
    assert plan.for_job(0, 0.5, 6.0) == JobFate(0.5, 6.0, fails=False, dropped=False)
    assert plan.on_download(1000) == DownloadFault(None, None)


def generation_seconds(plan: FaultPlan, count: int) -> list[float]:
    return [plan.for_job(n, 0.5, 6.0).generation_seconds for n in range(count)]


def test_generation_distributions() -> None:
    uniform = Faults(seed=3, generation=Generation(distribution="uniform", seconds=10, spread=2))
    samples = generation_seconds(FaultPlan(uniform), 500)
    assert min(samples) >= 8
    assert max(samples) <= 12
    assert max(samples) - min(samples) > 3
    lognormal = Faults(
        seed=3, generation=Generation(distribution="lognormal", seconds=10, spread=0.5)
    )
    values = sorted(generation_seconds(FaultPlan(lognormal), 999))
    assert 8 < values[499] < 12  # the median
    fixed = FaultPlan(Faults(generation=Generation(queue_seconds=0, seconds=0)))
    fate = fixed.for_job(0, 0.5, 6.0)
    assert (fate.queue_seconds, fate.generation_seconds) == (0.0, 0.0)


def test_extreme_distributions_stay_finite() -> None:
    wild = Faults(
        seed=1, generation=Generation(distribution="lognormal", seconds=MAX_SECONDS, spread=50)
    )
    assert all(0 <= s <= MAX_SECONDS for s in generation_seconds(FaultPlan(wild), 200))
    wide = Faults(seed=1, generation=Generation(distribution="uniform", seconds=1, spread=100))
    assert all(0 <= s <= 101 for s in generation_seconds(FaultPlan(wide), 200))


def test_a_jobs_fate_depends_on_its_ordinal_not_on_other_traffic() -> None:
    faults = Faults(seed=5, job_failure_rate=0.5, drop_after_create_rate=0.5)
    quiet, busy = FaultPlan(faults), FaultPlan(faults.model_copy(update={"error_rate": 0.5}))
    for _ in range(37):  # polls and other requests draw from their own streams
        busy.on_request("retrieve")
        busy.on_download(100)
    fates = [quiet.for_job(n, 0, 1) for n in range(100)]
    assert fates == [busy.for_job(n, 0, 1) for n in range(100)]
    assert {fate.fails for fate in fates} == {True, False}
    assert {fate.dropped for fate in fates} == {True, False}
    reseeded = FaultPlan(faults.model_copy(update={"seed": 6}))
    assert fates != [reseeded.for_job(n, 0, 1) for n in range(100)]


def test_download_faults() -> None:
    plan = FaultPlan(
        Faults(download_bytes_per_second=1000, truncate_download_rate=1.0, truncate_fraction=0.25)
    )
    fault = plan.on_download(1000)
    assert (fault.bytes_per_second, fault.truncate_at) == (1000, 250)


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"error_statuses": [404]},
        {"error_statuses": []},
        {"operations": ["fly"]},
        {"surprise": True},
        {"generation": {"distribution": "pareto"}},
        {"generation": {"seconds": float("inf")}},
        {"generation": {"seconds": 1e300}},
        {"latency_ms": 1e308},
    ],
)
def test_bad_faults_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Faults.model_validate(body)
