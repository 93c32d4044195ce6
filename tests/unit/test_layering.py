"""Dependency rules: services never import each other; shared never imports services;
domain modules import only the standard library, their own package and pure shared data."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
PURE_SHARED = {"shared.registry", "shared.contracts.ids", "shared.contracts.requests"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_services_do_not_import_each_other(service: str) -> None:
    for path in (ROOT / "services" / service).rglob("*.py"):
        for name in imports(path):
            if name.startswith("services."):
                assert name.split(".")[1] == service, f"{path} imports {name}"


def test_shared_does_not_import_services_or_tooling() -> None:
    for path in (ROOT / "shared").rglob("*.py"):
        for name in imports(path):
            assert not name.startswith(("services", "clipline")), f"{path} imports {name}"


PURE_MODULES = ("domain.py", "budgets.py", "timeline.py")  # budgets: pricing_guard's arithmetic;
# timeline: intake's job timeline


@pytest.mark.parametrize("module", PURE_MODULES)
@pytest.mark.parametrize("service", SERVICES)
def test_domain_modules_are_pure(service: str, module: str) -> None:
    path = ROOT / "services" / service / module
    if not path.exists():
        pytest.skip(f"{service} has no {module}")
    for name in imports(path):
        top = name.split(".")[0]
        allowed = (
            top in sys.stdlib_module_names
            or top == "__future__"
            or name.startswith(f"services.{service}")
            or name in PURE_SHARED
        )
        assert allowed, f"{path} imports {name}"
