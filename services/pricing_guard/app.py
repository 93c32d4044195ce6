"""pricing_guard composition root: deps in, ASGI app (events + admin API) out. No network I/O."""

from __future__ import annotations

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.admin import build_admin
from services.pricing_guard.handlers import build_router
from services.pricing_guard.ports import BudgetStore, Deps
from shared.kvatomic import AtomicKv
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, cached, make_asgi, wire
from shared.streams import BUDGETS_BUCKET


def kv_budgets(platform: Platform) -> KvBudgets:
    """Budgets in the clipline_budgets bucket, through the platform's broker connection."""
    broker = platform.broker
    kv = cached(lambda: broker.key_value(BUDGETS_BUCKET, declare=False))
    return KvBudgets(AtomicKv(kv, lambda: broker.connection, BUDGETS_BUCKET))


def build_app(
    platform: Platform,
    provider: ProviderSpec,
    admin_token: str | None,
    budgets: BudgetStore | None = None,
) -> Dispatch:
    router = build_router()
    store = budgets if budgets is not None else kv_budgets(platform)
    wire(platform.broker, router, Deps(platform.jobs, router.emit, provider, store), platform.jobs)
    return Dispatch("/v1/admin/", build_admin(store, admin_token), make_asgi(platform.broker))
