"""Committed JSON Schemas of the contracts; `python -m shared.contracts.schema_files` rewrites."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1
from shared.contracts.events import EVENT_TYPES
from shared.contracts.jobs import JobRecordV1
from shared.contracts.requests import JobRequestV1

SCHEMA_DIR = Path(__file__).parent / "schemas"
CONTRACTS: tuple[type[BaseModel], ...] = (
    *EVENT_TYPES,
    JobRecordV1,
    JobRequestV1,
    AssetsRequestV1,
    AssetsReplyV1,
)


def rendered() -> dict[str, str]:
    """File name -> schema text, for every contract."""
    return {
        f"{model.__name__}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for model in CONTRACTS
    }


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (SCHEMA_DIR / name).write_text(text)


if __name__ == "__main__":
    main()
