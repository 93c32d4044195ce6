"""What the job commands print on stdout: whole lines, flushed at once (a pipe reader sees each
as it comes; a closed pipe surfaces as BrokenPipeError, which `main` turns into a quiet exit)."""

from __future__ import annotations

import sys

from clipline.budget_cli import table

__all__ = ["line", "table"]


def line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
