"""The README (or docs/cli.md, which it links) names every `clipline` command."""

from __future__ import annotations

import argparse

from clipline.cli import parser
from tests.conftest import repo_root


def test_readme_mentions_every_command() -> None:
    readme = (repo_root() / "README.md").read_text() + (repo_root() / "docs/cli.md").read_text()
    [commands] = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name in commands.choices if f"clipline {name}" not in readme]
    assert not missing, f"README.md and docs/cli.md do not mention: {missing}"
