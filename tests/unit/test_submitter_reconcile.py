"""Reconciling a create that may have reached the upstream: which video, if any, is the job's."""

from typing import Any

from services.submitter.domain import (
    CLOCK_SLACK_SECONDS,
    Adopt,
    Ambiguous,
    Candidate,
    InFlight,
    NoMatch,
    Reconcile,
    Rejected,
    Submit,
    Wanted,
    matching,
    plan,
    reconcile,
    rejection,
)

WANT = Wanted("sora-2", "1280x720", 4, "a paper boat")
T0 = 1_800_000_000.0


def video(vid: str, **over: object) -> Candidate:
    fields: dict[str, object] = {
        "id": vid, "model": "sora-2", "size": "1280x720", "seconds": "4",
        "prompt": "a paper boat", "created_at": int(T0) + 1,
    }  # fmt: skip
    fields.update(over)
    return Candidate(**fields)  # type: ignore[arg-type]


def test_submitting_job_is_reconciled_before_any_new_create() -> None:
    kw: dict[str, Any] = {"waited": 1.0, "deadline": 60.0}
    assert plan("submitting", None, False, **kw) == Reconcile()
    assert plan("admitted", None, False, **kw) == Submit()


def test_a_live_attempt_elsewhere_is_waited_for_not_reconciled() -> None:
    kw: dict[str, Any] = {"waited": 1.0, "deadline": 60.0, "lease": 6.0}
    assert plan("submitting", None, False, attempt_age=1.5, **kw) == InFlight(4.5)
    assert plan("submitting", None, False, attempt_age=6.0, **kw) == Reconcile()  # lost
    assert plan("submitting", None, False, attempt_age=None, **kw) == Reconcile()
    # A lease from the future (another host's clock ahead, or ours stepped back) is live.
    assert plan("submitting", None, False, attempt_age=-30.0, **kw) == InFlight(6.0)
    assert plan("admitted", None, False, attempt_age=1.0, **kw) == Submit()


def test_only_the_same_request_made_since_the_attempt_matches() -> None:
    videos = [
        video("video_same"),
        video("video_prompt", prompt="another"),
        video("video_model", model="sora-2-pro"),
        video("video_size", size="720x1280"),
        video("video_seconds", seconds="8"),
        video("video_old", created_at=int(T0) - CLOCK_SLACK_SECONDS - 1),
        video("video_skewed", created_at=int(T0) - CLOCK_SLACK_SECONDS + 1),
        video("video_sparse", model=None, size=None, seconds=None, created_at=None),
        video("video_no_prompt", prompt=None),
    ]
    assert matching(WANT, T0, videos) == ["video_same", "video_skewed", "video_sparse"]


def test_one_free_match_is_adopted_none_is_created_several_are_ambiguous() -> None:
    assert reconcile(["video_a"], frozenset()) == Adopt("video_a")
    assert reconcile([], frozenset()) == NoMatch()
    assert reconcile(["video_a"], frozenset({"video_a"})) == NoMatch()  # another job's video
    assert reconcile(["video_a", "video_b"], frozenset({"video_b"})) == Adopt("video_a")
    both = reconcile(["video_a", "video_b"], frozenset())
    assert isinstance(both, Ambiguous)
    assert "video_a" in both.detail
    assert "video_b" in both.detail


def test_what_the_last_attempt_said_decides_between_sending_again_and_reconciling() -> None:
    kw: dict[str, Any] = {"waited": 1.0, "deadline": 60.0}
    # Nothing can exist upstream: sent again at once, no listing.
    assert plan("submitting", None, False, outcome="not_sent", **kw) == Submit()
    assert plan("submitting", None, False, outcome="refused", **kw) == Submit()
    # A 5xx, a process that died mid-attempt, or a record from before outcomes: reconciled,
    # and created again when nothing matches.
    assert plan("submitting", None, False, outcome="server_error", **kw) == Reconcile()
    assert plan("submitting", None, False, outcome="in_flight", **kw) == Reconcile()
    assert plan("submitting", None, False, outcome=None, **kw) == Reconcile()
    # Sent and the answer lost: reconciled, and never created again.
    assert plan("submitting", None, False, outcome="no_answer", **kw) == Reconcile(True)
    # A live lease and the deadline still come first.
    assert plan("submitting", None, False, outcome="in_flight", attempt_age=1.0, **kw) == (
        InFlight(5.0)
    )
    late: dict[str, Any] = {"waited": 61.0, "deadline": 60.0}
    assert type(plan("submitting", None, False, outcome="not_sent", **late)).__name__ == "Expired"


def test_no_match_after_a_lost_answer_is_ambiguous_not_a_new_create() -> None:
    assert reconcile([], frozenset(), answer_lost=False) == NoMatch()
    lost = reconcile([], frozenset(), answer_lost=True)
    assert isinstance(lost, Ambiguous)
    assert "answer was lost" in lost.detail
    # Owned by another job is no match either.
    assert isinstance(reconcile(["v1"], frozenset({"v1"}), answer_lost=True), Ambiguous)
    assert reconcile(["v1"], frozenset(), answer_lost=True) == Adopt("v1")


def test_a_refusal_fails_with_the_upstreams_code_in_the_detail() -> None:
    assert rejection(400, "invalid_value", "bad size") == Rejected(
        "upstream_rejected", "400 invalid_value: bad size"
    )
    assert rejection(400, "moderation_blocked", "blocked") == Rejected(
        "moderation_blocked", "400 moderation_blocked: blocked"
    )
    assert rejection(403, None, "forbidden") == Rejected("upstream_rejected", "403: forbidden")
    assert rejection(None, None, "odd") == Rejected("upstream_rejected", "odd")
