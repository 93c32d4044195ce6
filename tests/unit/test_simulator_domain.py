"""Unit tests of the simulator's pure decisions: validation, timeline, ids, auth."""

from __future__ import annotations

import re
from typing import Literal

import pytest

from services.simulator.domain import (
    INCORRECT_KEY,
    MISSING_KEY,
    CreateRequest,
    Invalid,
    Phase,
    Reference,
    Timeline,
    Upload,
    authorize,
    check_deletable,
    check_downloadable,
    completed_at,
    expires_at,
    fold_form,
    new_video_id,
    not_found,
    parse_variant,
    phase_at,
    validate_create,
)

SECONDS_LIST = "'4', '8', '12', '16', and '20'"
PRO_SIZES = "'720x1280', '1280x720', '1024x1792', '1792x1024', '1080x1920', and '1920x1080'"
MODELS = "'sora-2', 'sora-2-pro', 'sora-2-2025-10-06', 'sora-2-pro-2025-10-06',"
MODEL_LIST = f"{MODELS} and 'sora-2-2025-12-08'"
MODEL_CHOICES = f"{MODELS} or 'sora-2-2025-12-08'"


def invalid_value(value: str, param: str, supported: str) -> Invalid:
    return Invalid(
        f"Invalid value: '{value}'. Supported values are: {supported}.",
        param=param,
        code="invalid_value",
    )


# --- create validation: accepted ----------------------------------------------------------------


def test_defaults_apply_when_only_prompt_is_given() -> None:
    assert validate_create({"prompt": "a cat"}, "json") == CreateRequest(
        prompt="a cat", model="sora-2", base_model="sora-2", seconds="4", size="720x1280"
    )


def test_explicit_nulls_mean_defaults() -> None:
    decided = validate_create(
        {"prompt": "p", "model": None, "seconds": None, "size": None, "input_reference": None},
        "json",
    )
    assert decided == CreateRequest("p", "sora-2", "sora-2", "4", "720x1280")


@pytest.mark.parametrize("seconds", ["4", "8", "12", "16", "20"])
def test_every_allowed_duration_is_accepted(seconds: str) -> None:
    decided = validate_create({"prompt": "p", "seconds": seconds}, "json")
    assert isinstance(decided, CreateRequest)
    assert decided.seconds == seconds


@pytest.mark.parametrize(
    ("model", "base", "size"),
    [
        ("sora-2", "sora-2", "1280x720"),
        ("sora-2-pro", "sora-2-pro", "1920x1080"),
        ("sora-2-pro", "sora-2-pro", "1024x1792"),
        ("sora-2-2025-10-06", "sora-2", "720x1280"),
        ("sora-2-2025-12-08", "sora-2", "1280x720"),
        ("sora-2-pro-2025-10-06", "sora-2-pro", "1792x1024"),
    ],
)
def test_models_and_their_sizes(model: str, base: str, size: str) -> None:
    decided = validate_create({"prompt": "p", "model": model, "size": size}, "json")
    assert isinstance(decided, CreateRequest)
    assert (decided.model, decided.base_model, decided.size) == (model, base, size)
    width, height = (int(part) for part in size.split("x"))
    assert (decided.width, decided.height) == (width, height)


def test_prompt_of_maximum_length_is_accepted() -> None:
    assert isinstance(validate_create({"prompt": "x" * 32000}, "json"), CreateRequest)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_uploaded_reference_of_the_right_size(image_format: str) -> None:
    decided = validate_create(
        {"prompt": "p", "size": "1280x720", "input_reference": Upload(image_format, 1280, 720)},
        "form",
    )
    assert isinstance(decided, CreateRequest)
    assert decided.reference is not None
    assert decided.reference.kind == "file"


@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        ({"image_url": "https://example.com/a.png"}, "image_url"),
        ({"image_url": "data:image/png;base64,iVBORw0KGgo="}, "image_url"),
        ({"file_id": "file_123"}, "file_id"),
        ({"file_id": "file_123", "image_url": None}, "file_id"),
    ],
)
def test_json_reference_objects(
    reference: dict[str, object], kind: Literal["image_url", "file_id"]
) -> None:
    decided = validate_create({"prompt": "p", "input_reference": reference}, "json")
    assert isinstance(decided, CreateRequest)
    assert decided.reference == Reference(kind)


def test_form_bracket_fields_become_a_nested_object() -> None:
    params = fold_form(
        [("prompt", "p"), ("seconds", "8"), ("input_reference[image_url]", "https://x/y.png")]
    )
    assert params == {
        "prompt": "p",
        "seconds": "8",
        "input_reference": {"image_url": "https://x/y.png"},
    }
    decided = validate_create(params, "form")
    assert isinstance(decided, CreateRequest)
    assert decided.reference == Reference("image_url")


def test_form_cannot_mix_a_file_and_nested_fields() -> None:
    for fields in (
        [("input_reference", Upload("PNG", 1, 1)), ("input_reference[file_id]", "f")],
        [("input_reference[file_id]", "f"), ("input_reference", Upload("PNG", 1, 1))],
    ):
        refused = fold_form(fields)
        assert isinstance(refused, Invalid)
        assert refused.param == "input_reference"


# --- create validation: refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"prompt": "p", "seconds": 8},
            Invalid(
                "Invalid type for 'seconds': expected one of '4', '8', '12', '16', or '20', "
                "but got an integer instead.",
                param="seconds",
                code="invalid_type",
            ),
        ),
        ({"prompt": "p", "seconds": "10"}, invalid_value("10", "seconds", SECONDS_LIST)),
        ({"prompt": "p", "seconds": "4.0"}, invalid_value("4.0", "seconds", SECONDS_LIST)),
        (
            {"prompt": "p", "size": "1792x1024"},
            invalid_value("1792x1024' for model 'sora-2", "size", "'720x1280' and '1280x720'"),
        ),
        (
            {"prompt": "p", "model": "sora-2-2025-12-08", "size": "1920x1080"},
            invalid_value("1920x1080' for model 'sora-2", "size", "'720x1280' and '1280x720'"),
        ),
        (
            {"prompt": "p", "size": "640x480"},
            invalid_value("640x480", "size", PRO_SIZES),
        ),
        (
            {"prompt": "p", "model": "sora-2-pro", "size": "640x480"},
            invalid_value("640x480", "size", PRO_SIZES),
        ),
        ({"prompt": "p", "model": "sora-3"}, invalid_value("sora-3", "model", MODEL_LIST)),
        (
            {"prompt": "p", "model": 2},
            Invalid(
                f"Invalid type for 'model': expected one of {MODEL_CHOICES}, "
                "but got an integer instead.",
                param="model",
                code="invalid_type",
            ),
        ),
        (
            {"seconds": "4"},
            Invalid(
                "Missing required parameter: 'prompt'.",
                param="prompt",
                code="missing_required_parameter",
            ),
        ),
        (
            {"prompt": ""},
            Invalid(
                "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
                "but got an empty string instead.",
                param="prompt",
                code="empty_string",
            ),
        ),
        (
            {"prompt": "x" * 32001},
            Invalid(
                "Invalid 'prompt': string too long. Expected a string with maximum length 32000, "
                "but got a string with length 32001 instead.",
                param="prompt",
                code="string_above_max_length",
            ),
        ),
        (
            {"prompt": None},
            Invalid(
                "Invalid type for 'prompt': expected a string, but got null instead.",
                param="prompt",
                code="invalid_type",
            ),
        ),
        (
            {"prompt": ["a"]},
            Invalid(
                "Invalid type for 'prompt': expected a string, but got an array instead.",
                param="prompt",
                code="invalid_type",
            ),
        ),
        (
            {"prompt": "p", "width": 1280},
            Invalid("Unknown parameter: 'width'.", param="width", code="unknown_parameter"),
        ),
        (
            {"prompt": "p", "input_reference": "https://x/y.png"},
            Invalid(
                "Invalid type for 'input_reference': expected an object, but got a string instead.",
                param="input_reference",
                code="invalid_type",
            ),
        ),
        (
            {"prompt": "p", "input_reference": {}},
            Invalid(
                "Invalid 'input_reference': provide exactly one of 'image_url' or 'file_id'.",
                param="input_reference",
                code="invalid_value",
            ),
        ),
        (
            {"prompt": "p", "input_reference": {"image_url": "https://a", "file_id": "f"}},
            Invalid(
                "Invalid 'input_reference': provide exactly one of 'image_url' or 'file_id'.",
                param="input_reference",
                code="invalid_value",
            ),
        ),
        (
            {"prompt": "p", "input_reference": {"url": "https://a"}},
            Invalid(
                "Unknown parameter: 'input_reference.url'.",
                param="input_reference.url",
                code="unknown_parameter",
            ),
        ),
        (
            {"prompt": "p", "input_reference": {"image_url": "ftp://a/b.png"}},
            Invalid(
                "Invalid 'input_reference.image_url': expected a URL or a base64-encoded data URL.",
                param="input_reference.image_url",
                code="invalid_value",
            ),
        ),
    ],
    ids=lambda value: None if isinstance(value, dict) else value.code,
)
def test_refused_json_bodies(params: dict[str, object], expected: Invalid) -> None:
    decided = validate_create(params, "json")
    assert decided == expected
    assert decided.type == "invalid_request_error"


def test_text_input_reference_in_a_form_is_the_observed_error() -> None:
    assert validate_create({"prompt": "p", "input_reference": "hello"}, "form") == Invalid(
        "Invalid type for 'input_reference': expected a file, but got a string instead.",
        param="input_reference",
        code="invalid_type",
    )


def test_uploaded_reference_of_another_size_is_refused() -> None:
    decided = validate_create(
        {"prompt": "p", "size": "720x1280", "input_reference": Upload("PNG", 1280, 720)}, "form"
    )
    assert decided == Invalid(
        "Inpaint image must match the requested width and height",
        param="input_reference",
        code="invalid_value",
    )


@pytest.mark.parametrize("upload", [Upload(None), Upload("GIF", 720, 1280)])
def test_uploaded_reference_must_be_jpeg_png_or_webp(upload: Upload) -> None:
    decided = validate_create({"prompt": "p", "input_reference": upload}, "form")
    assert decided == Invalid(
        "Invalid file format for 'input_reference'. Supported formats are: "
        "'image/jpeg', 'image/png', and 'image/webp'.",
        param="input_reference",
        code="invalid_value",
    )


def test_a_file_where_text_is_expected_is_a_type_error() -> None:
    decided = validate_create({"prompt": Upload("PNG", 1, 1)}, "form")
    assert decided == Invalid(
        "Invalid type for 'prompt': expected a string, but got a file instead.",
        param="prompt",
        code="invalid_type",
    )


def test_unknown_parameter_is_reported_before_other_errors() -> None:
    decided = validate_create({"seconds": 4, "quality": "high"}, "json")
    assert isinstance(decided, Invalid)
    assert decided.code == "unknown_parameter"
    assert decided.param == "quality"


# --- variant, state checks, not found -----------------------------------------------------------


@pytest.mark.parametrize("variant", ["video", "thumbnail", "spritesheet"])
def test_known_variants(variant: str) -> None:
    assert parse_variant(variant) == variant


def test_unknown_variant_is_the_observed_error() -> None:
    assert parse_variant("mp4") == Invalid(
        "Invalid value: 'mp4'. Supported values are: 'video', 'thumbnail', and 'spritesheet'.",
        param="variant",
        code="invalid_value",
    )


def test_only_completed_videos_are_downloadable() -> None:
    assert check_downloadable("video_a", Phase("completed", 100)) is None
    for phase, code in (
        (Phase("queued", 0), "video_not_ready"),
        (Phase("in_progress", 50), "video_not_ready"),
        (Phase("failed", 0), "video_failed"),
    ):
        refused = check_downloadable("video_a", phase)
        assert isinstance(refused, Invalid)
        assert refused.code == code
        assert phase.status in refused.message


def test_only_terminal_videos_are_deletable() -> None:
    assert check_deletable("video_a", Phase("completed", 100)) is None
    assert check_deletable("video_a", Phase("failed", 0)) is None
    for phase in (Phase("queued", 0), Phase("in_progress", 50)):
        refused = check_deletable("video_a", phase)
        assert isinstance(refused, Invalid)
        assert refused.code == "video_not_finished"


def test_not_found_envelope_fields() -> None:
    assert not_found("video_x") == Invalid(
        "Video with id 'video_x' not found.", param=None, code="not_found"
    )


# --- timeline -----------------------------------------------------------------------------------

TIMELINE = Timeline(queue_seconds=0.5, generation_seconds=6.0)


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (-1.0, Phase("queued", 0)),
        (0.0, Phase("queued", 0)),
        (0.49, Phase("queued", 0)),
        (0.5, Phase("in_progress", 1)),
        (3.5, Phase("in_progress", 50)),
        (6.49, Phase("in_progress", 99)),
        (6.5, Phase("completed", 100)),
        (1000.0, Phase("completed", 100)),
    ],
)
def test_phase_at(elapsed: float, expected: Phase) -> None:
    assert phase_at(elapsed, TIMELINE) == expected


def test_progress_never_decreases_and_stays_in_range() -> None:
    phases = [phase_at(step / 100, TIMELINE) for step in range(800)]
    progress = [phase.progress for phase in phases]
    assert progress == sorted(progress)
    running = [phase.progress for phase in phases if phase.status == "in_progress"]
    assert min(running) == 1
    assert max(running) == 99
    statuses = [phase.status for phase in phases]
    assert statuses.index("in_progress") == 50
    assert statuses.index("completed") == 650


def test_zero_durations_complete_immediately() -> None:
    assert phase_at(0.0, Timeline(0.0, 0.0)) == Phase("completed", 100)
    assert phase_at(0.0, Timeline(0.0, 2.0)) == Phase("in_progress", 1)


def test_completion_and_expiry_timestamps() -> None:
    done = completed_at(1_760_000_000.2, TIMELINE)
    assert done == 1_760_000_007  # 1_760_000_006.7 rounded up: never before the job finishes
    assert expires_at(done) == done + 3600


def test_terminal_phases() -> None:
    assert Phase("completed", 100).terminal
    assert Phase("failed", 0).terminal
    assert not Phase("queued", 0).terminal
    assert not Phase("in_progress", 7).terminal


# --- ids and auth -------------------------------------------------------------------------------


def test_video_id_format_and_determinism() -> None:
    video_id = new_video_id(bytes(range(24)))
    assert re.fullmatch(r"video_[0-9a-f]{48}", video_id)
    assert video_id == "video_" + "000102030405060708090a0b0c0d0e0f1011121314151617"
    assert new_video_id(b"\xff" * 24) == "video_" + "f" * 48


@pytest.mark.parametrize("size", [0, 23, 25])
def test_video_id_needs_24_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="24 random bytes"):
        new_video_id(bytes(size))


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "sk-abc"])
def test_missing_key(header: str | None) -> None:
    assert authorize(header, None) == Invalid(MISSING_KEY, code=None)
    assert authorize(header, "sk-abc") == Invalid(MISSING_KEY, code=None)


def test_key_checks() -> None:
    assert authorize("Bearer anything", None) is None
    assert authorize("bearer sk-abc", "sk-abc") is None
    refused = authorize("Bearer sk-abd", "sk-abc")
    assert refused == Invalid(INCORRECT_KEY, code="invalid_api_key")
    assert "sk-abd" not in refused.message
