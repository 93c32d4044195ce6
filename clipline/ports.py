"""The local stack's ports across runs: `clipline up` takes again the simulator's and the
services' ports of the stack home's previous run when they are free (an exported
CLIPLINE_URL or SDK base_url keeps working), and says which it could not keep."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clipline.private import write_private
from clipline.servers import free_port, kept_port

PORTS_FILE = "ports.json"
"""`{name: port}` of the last start; kept by `clipline down` (stack.json is not)."""


@dataclass(frozen=True)
class Chosen:
    ports: dict[str, int]
    moved: dict[str, int]
    """name -> its previous port, which was taken: it has a new one."""


def previous(home: Path) -> dict[str, int]:
    """The ports the home's previous start recorded ({} when none, or unreadable)."""
    try:
        data = json.loads((home / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and type(v) is int}


def remember(home: Path, ports: Mapping[str, int]) -> None:
    write_private(home / PORTS_FILE, json.dumps(dict(ports), indent=2, sort_keys=True) + "\n")


def choose(names: Iterable[str], before: Mapping[str, int], taken: set[int]) -> Chosen:
    """A port per name: its previous one where that is free (all kept ones first, so a new
    pick never takes another's old port), else a new free one. `taken` grows with them."""
    wanted = list(names)
    ports: dict[str, int] = {}
    for name in wanted:
        port = kept_port(before.get(name), taken)
        if port is not None:
            ports[name] = port
    moved = {name: before[name] for name in wanted if name not in ports and name in before}
    for name in wanted:
        if name not in ports:
            ports[name] = free_port(taken)
    return Chosen({name: ports[name] for name in wanted}, moved)
