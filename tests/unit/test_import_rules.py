"""The layering rules, read from the code: services meet only through topics, the core knows
no service, and the runtime is the loop (no service, no status code)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
CORE, SERVICES = ROOT / "shared" / "framewire", ROOT / "services"


def imported_modules(source: str) -> set[str]:
    """Every module an import statement names, at any depth (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    """The dotted name a file is imported as (services/ is framewire.services)."""
    if path.is_relative_to(SERVICES):
        parts = ("framewire", "services", *path.relative_to(SERVICES).with_suffix("").parts)
    else:
        parts = ("framewire", *path.relative_to(CORE).with_suffix("").parts)
    return ".".join(p for p in parts if p != "__init__")


def violations(files: list[Path], forbidden: tuple[str, ...],
               allowed_prefix: str | None = None) -> list[str]:
    """``file imports module`` for each import of a module under ``forbidden``, except the
    file's own package ``allowed_prefix`` (a service importing its own modules)."""
    found = []
    for path in files:
        own = module_name(path).split(".")[:3] if allowed_prefix else None
        for module in sorted(imported_modules(path.read_text())):
            if not module.startswith(forbidden):
                continue
            if own and module.split(".")[:3] == own:
                continue
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{shown} imports {module}")
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_the_checker_sees_imports_at_any_depth():
    source = "import os\ndef f():\n    from framewire.services.inference.models import x\n"
    assert "framewire.services.inference.models" in imported_modules(source)


def test_no_service_imports_another_service():
    services = [p for p in python_files(SERVICES) if p.parent != SERVICES]
    assert len({p.relative_to(SERVICES).parts[0] for p in services}) >= 4
    assert violations(services, ("framewire.services.",), allowed_prefix="own") == []


def test_the_core_imports_no_service():
    core = python_files(CORE)
    assert len(core) > 30
    assert violations(core, ("framewire.services",)) == []


def test_the_runtime_imports_no_service_and_no_status_code():
    runtime = python_files(CORE / "runtime")
    assert runtime
    assert violations(runtime, ("framewire.services", "framewire.ops")) == []


def test_a_violation_is_reported(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("def beat():\n    from framewire.ops.status import LagProbe\n")
    assert violations([bad], ("framewire.services", "framewire.ops")) == [
        f"{bad} imports framewire.ops.status", f"{bad} imports framewire.ops.status.LagProbe"]
    assert module_name(SERVICES / "inference" / "stage.py") == "framewire.services.inference.stage"
