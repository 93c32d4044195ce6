"""The trace carried on where nothing records spans: a hand-read W3C traceparent."""

from __future__ import annotations

from opentelemetry import propagate, trace

from shared.telemetry import carried, remote_parent

TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def parent_of(value: str) -> trace.SpanContext | None:
    context = remote_parent({"traceparent": value})
    return None if context is None else trace.get_current_span(context).get_span_context()


def test_a_version_00_traceparent_is_read_as_the_propagator_reads_it() -> None:
    value = f"00-{TRACE}-{SPAN}-01"
    ours = parent_of(value)
    theirs = trace.get_current_span(propagate.extract({"traceparent": value})).get_span_context()
    assert ours == theirs
    assert ours is not None
    assert ours.is_remote
    assert ours.trace_flags.sampled


def test_invalid_traceparents_name_no_parent() -> None:
    for value in [
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE[:-1]}g-{SPAN}-01",  # not hex
        f"00-{TRACE}-{SPAN}-1",  # flags of one digit
    ]:
        assert parent_of(value) is None, value
    assert remote_parent({}) is None


def test_other_forms_go_through_the_propagator() -> None:
    # A future version may append fields: the propagator's reading, whatever it decides.
    value = f"01-{TRACE}-{SPAN}-01-extra"
    theirs = trace.get_current_span(propagate.extract({"traceparent": value})).get_span_context()
    assert parent_of(value) == theirs


def test_carried_makes_the_parent_current_and_restores_the_context() -> None:
    before = trace.get_current_span().get_span_context()
    headers: dict[str, str] = {}
    with carried({"traceparent": f"00-{TRACE}-{SPAN}-01"}) as span:
        assert span is trace.INVALID_SPAN
        propagate.inject(headers)
    assert headers["traceparent"] == f"00-{TRACE}-{SPAN}-01"
    assert trace.get_current_span().get_span_context() == before
    with carried(None):
        assert not trace.get_current_span().get_span_context().is_valid
