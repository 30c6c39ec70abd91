"""The code stands on floors and its imports point down (docs/architecture.md).

From the top: ``cli`` (the ``oee`` command), ``services`` (one folder per process),
``projections`` (read models), ``adapters`` (I/O at the edges), ``domain`` (pure) and
``events`` (message schemas). A module imports its own package and the floors below
its own, never one above; a process never imports another process.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first: a floor may import only the floors listed before it.
FLOORS = ("events", "domain", "adapters", "projections", "services", "cli")


def floor_of(module: str) -> int | None:
    """Return the floor of a dotted module name, None when it is not ours."""
    top = module.split(".")[0]
    return FLOORS.index(top) if top in FLOORS else None


def unit_of(module: str) -> str:
    """Return the part of the code a module belongs to: its process folder
    (``services.<name>``) on the services floor, else its top-level package."""
    parts = module.split(".")
    if parts[0] == "services" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def violation(importer: str, imported: str) -> str | None:
    """Return why ``importer`` must not import ``imported``, or None when it may."""
    target = floor_of(imported)
    if target is None or unit_of(importer) == unit_of(imported):
        return None
    source = floor_of(importer)
    assert source is not None, f"{importer} is on no floor"
    if source == target == FLOORS.index("services"):
        return f"process {unit_of(importer)} imports process {unit_of(imported)}"
    if target >= source:
        return f"{FLOORS[source]} imports {FLOORS[target]}, which is not below it"
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """Yield every module the source of ``module`` imports, wherever the statement is
    (inside a function or under ``TYPE_CHECKING`` too)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            # ``from services import engine`` imports the module services.engine.
            yield from (base if "." in base else f"{base}.{alias.name}" for alias in node.names)


def imports_of(path: Path) -> Iterator[str]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def our_files() -> list[Path]:
    return sorted(p for floor in FLOORS for p in (ROOT / floor).rglob("*.py"))


# The first three are the kinds of import the code had before it stood on floors: a
# process reaching into another for a library, a read model into a process.
@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("services.gateway.app", "services.engine.executor"),
        ("services.triggers.service", "services.venues.simulator"),
        ("projections.orders.handler", "services.projector.runner"),
        ("adapters.settings", "cli.supervisor"),
        ("domain.pricing", "adapters.kafka"),
        ("domain.lifecycle", "projections.orders.handler"),
        ("adapters.postgres", "projections.contract"),
        ("events.messages", "domain.lifecycle"),
    ],
)
def test_import_rule_upward_or_sideways_import_is_a_violation(importer: str, imported: str) -> None:
    assert violation(importer, imported) is not None


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("cli.supervisor", "services.gateway.main"),
        ("services.gateway.app", "services.gateway.hub"),
        ("services.gateway.browse", "projections.orders.handler"),
        ("services.engine.executor", "domain.routing"),
        ("projections.contract", "adapters.postgres"),
        ("adapters.postgres", "adapters.embedded.postgres"),
        ("adapters.venues.interface", "events.messages"),
        ("domain.pricing", "domain.tokens"),
        ("events.market", "events.messages"),
        ("domain.lifecycle", "decimal"),
    ],
)
def test_import_rule_downward_or_internal_import_is_allowed(importer: str, imported: str) -> None:
    assert violation(importer, imported) is None


def test_import_rule_import_from_a_package_names_the_module_imported() -> None:
    source = "from services import engine\nfrom ..engine import routing\nfrom . import hub\n"
    found = list(imports_in(source, "services.gateway.app"))
    assert found == ["services.engine", "services.engine", "services.gateway"]
    assert [violation("services.gateway.app", m) is not None for m in found] == [True, True, False]


def test_import_rule_import_inside_a_function_is_found() -> None:
    source = "def run():\n    from services.venues.main import run\n"
    assert list(imports_in(source, "services.engine.main")) == ["services.venues.main"]


def test_code_layout_all_modules_import_only_downward() -> None:
    found = sorted(
        f"{module_name(path)} -> {imported}: {why}"
        for path in our_files()
        for imported in imports_of(path)
        if (why := violation(module_name(path), imported)) is not None
    )
    assert found == []


def test_code_layout_scan_covers_every_floor() -> None:
    # A scan that found no files would pass the test above without checking anything.
    assert {path.relative_to(ROOT).parts[0] for path in our_files()} == set(FLOORS)
