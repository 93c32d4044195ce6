"""Fixtures shared by pricing_guard's component tests: in-memory budgets and the service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.app import build_router
from services.pricing_guard.ports import Deps
from shared.registry import load_registry
from tests.component.harness import Harness, running
from tests.fakes import InMemoryAtomicStore

SIMULATOR = load_registry().provider("simulator")


@pytest.fixture
def budgets() -> KvBudgets:
    return KvBudgets(InMemoryAtomicStore())


@pytest.fixture
async def guard(budgets: KvBudgets) -> AsyncIterator[Harness]:
    """pricing_guard with the simulator provider and the test's budgets."""
    async with running(build_router(), lambda f: Deps(f.jobs, f.emit, SIMULATOR, budgets)) as h:
        yield h
