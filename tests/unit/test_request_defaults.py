"""Request defaults live once, in JobRequestV1: the CLI, `make run`, intake and the README agree."""

from __future__ import annotations

import re

from clipline import jobs_cli
from clipline.cli import parser
from services.intake.domain import Valid, validate
from shared.contracts.requests import JobRequestV1, request_default
from shared.registry import load_registry
from tests.conftest import repo_root

DEFAULTS = JobRequestV1(prompt="x")


def test_the_contract_defaults_to_the_openai_videos_api() -> None:
    """A body without a size meant portrait before this contract held the default; a retry of
    it must keep its meaning (and its idempotency fingerprint)."""
    assert (DEFAULTS.model, DEFAULTS.size, DEFAULTS.seconds, DEFAULTS.priority) == (
        "sora-2", "720x1280", 4, "normal"
    )  # fmt: skip
    assert request_default("size") == DEFAULTS.size


def test_clipline_submit_defaults_are_the_contracts() -> None:
    """What a plain `clipline submit` sends (a remix, edit or extension inherits them)."""
    args = parser().parse_args(["submit", "--prompt", "x"])
    body = jobs_cli._body(args)
    assert (body["model"], body["size"], body["seconds"], args.priority) == (
        DEFAULTS.model, DEFAULTS.size, DEFAULTS.seconds, DEFAULTS.priority
    )  # fmt: skip


def test_intake_fills_in_the_contracts_defaults() -> None:
    valid = validate({"prompt": "x"}, "acme", load_registry().provider("simulator"))
    assert isinstance(valid, Valid)
    assert (valid.spec.model, valid.spec.size, valid.spec.seconds, valid.spec.priority) == (
        DEFAULTS.model, DEFAULTS.size, DEFAULTS.seconds, DEFAULTS.priority
    )  # fmt: skip


def test_make_run_leaves_the_defaults_to_the_cli() -> None:
    """MODEL, SIZE and DURATION are empty unless given, and then not passed to `submit`."""
    makefile = (repo_root() / "Makefile").read_text()
    for name in ("MODEL", "SIZE", "DURATION"):
        [value] = re.findall(rf"^{name} \?=(.*)$", makefile, re.MULTILINE)
        assert value.strip() == "", f"Makefile sets {name} ?={value}: leave it to the contract"
    assert "$(if $(SIZE),--size $(SIZE))" in makefile


def test_the_readme_states_the_contracts_defaults() -> None:
    readme = " ".join((repo_root() / "README.md").read_text().split())
    stated = (
        f"`model` {DEFAULTS.model}, `size` {DEFAULTS.size} (portrait), "
        f"`seconds` {DEFAULTS.seconds}, and `priority` {DEFAULTS.priority}"
    )
    assert stated in readme
