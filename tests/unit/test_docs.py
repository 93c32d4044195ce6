"""Generated documents match the code: docs/lifecycle.md and docs/asyncapi.json."""

import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from clipline.docs import DOCS, asyncapi_document, rendered
from shared.contracts import EVENT_TYPES


@pytest.mark.parametrize("path", sorted(rendered()), ids=lambda p: p.name)
def test_committed_document_matches_the_code(path: Path) -> None:
    docs = rendered()
    assert path in docs
    committed = DOCS / path.name
    assert committed.read_text() == docs[path], f"{committed} drifted: run `make schemas`"


def test_asyncapi_lists_every_event_published_and_the_request_subject() -> None:
    spec = json.loads(asyncapi_document())
    addresses = {c["address"] for c in spec["channels"].values()}
    for event in EVENT_TYPES:
        assert event.subject_filter() in addresses, event.__name__
    assert "clipline.job.requested.>" in addresses
    published = {
        spec["channels"][unquote(op["channel"]["$ref"].rsplit("/", 1)[1])]["address"]
        for op in spec["operations"].values()
        if op["action"] == "send"
    }
    # Every event kind is declared by some service as a publisher (not a hidden broker.publish).
    assert published == {event.subject_filter() for event in EVENT_TYPES}


def test_asyncapi_documents_the_request_payload() -> None:
    spec = json.loads(asyncapi_document())
    channel = next(
        c for c in spec["channels"].values() if c["address"] == "clipline.job.requested.>"
    )
    ref = next(iter(channel["messages"].values()))["$ref"]
    message = spec["components"]["messages"][unquote(ref.rsplit("/", 1)[1])]
    assert message["payload"] == {"$ref": "#/components/schemas/JobRequestV1"}
    assert "prompt" in spec["components"]["schemas"]["JobRequestV1"]["properties"]
