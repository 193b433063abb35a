"""The package boundaries the README promises, checked on the source (no import runs).

* The core (``fusion_dspy/`` less the CLI, which wires things together) never imports
  ``fusion_dspy.programs`` or ``fusion_dspy.optimizers``.
* ``programs/``, ``optimizers/``, ``benchmarks/`` and ``examples/`` use the core's public API only:
  a name they import from a core module is in that module's ``__all__``, and no module they import
  from is private (a ``_``-prefixed part).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "fusion_dspy"
#: Where each installed ``fusion_dspy.*`` package lives in the checkout (pyproject's package-dir).
PACKAGE_DIRS = {"fusion_dspy.programs": ROOT / "programs", "fusion_dspy.optimizers": ROOT / "optimizers"}
CLIENTS = ("programs", "optimizers", "benchmarks", "examples")


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, names)`` for every absolute ``import``/``from ... import`` in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def _within(module: str, package: str) -> bool:
    """``module`` is ``package`` or one of its submodules."""
    return module == package or module.startswith(package + ".")


def _in_programs_or_optimizers(module: str) -> bool:
    return any(_within(module, package) for package in PACKAGE_DIRS)


def _source_of(module: str) -> Path | None:
    """The file defining ``module`` in this checkout, or ``None`` if it is not ours."""
    for package, directory in PACKAGE_DIRS.items():
        if _within(module, package):
            base, rest = directory, module[len(package) + 1:]
            break
    else:
        if not _within(module, "fusion_dspy"):
            return None
        base, rest = CORE, module[len("fusion_dspy") + 1:]
    target = base.joinpath(*rest.split(".")) if rest else base
    if target.is_dir():
        return target / "__init__.py"
    return target.with_suffix(".py") if target.with_suffix(".py").is_file() else None


def _all_of(path: Path) -> set[str] | None:
    """The literal ``__all__`` of a module, or ``None`` when it has none."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return {ast.literal_eval(element) for element in node.value.elts}  # type: ignore[attr-defined]
    return None


def _python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_core_never_imports_programs_or_optimizers():
    offenders = []
    for path in _python_files(CORE):
        if "cli" in path.relative_to(CORE).parts:
            continue
        for line, module, _ in _imports(path):
            if _in_programs_or_optimizers(module):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "the core must not depend on programs/optimizers:\n" + "\n".join(offenders)


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_use_only_the_public_api_of_the_core(client):
    offenders = []
    for path in _python_files(ROOT / client):
        for line, module, names in _imports(path):
            if _in_programs_or_optimizers(module):
                continue  # programs and optimizers may use their own modules and each other's
            source = _source_of(module)
            if source is None:
                continue  # not ours
            where = f"{path.relative_to(ROOT)}:{line}"
            if any(part.startswith("_") for part in module.split(".")):
                offenders.append(f"{where} imports the private module {module}")
                continue
            public = _all_of(source)
            if public is None:
                offenders.append(f"{where}: {module} has no __all__, so nothing in it is public")
                continue
            for name in names:
                submodule = source.parent / name
                if name not in public and not (submodule.is_dir() or submodule.with_suffix(".py").is_file()):
                    offenders.append(f"{where} imports {module}.{name}, which is not in its __all__")
    assert not offenders, f"{client}/ must use the core's public API:\n" + "\n".join(offenders)


def test_the_checker_sees_a_private_import(tmp_path):
    """The scan itself: a private name is caught (so the tests above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from fusion_dspy.guard import FUSED_INDEX, _not_public\nfrom fusion_dspy.local._shared import x\n")
    found = list(_imports(bad))
    assert found == [(1, "fusion_dspy.guard", ["FUSED_INDEX", "_not_public"]), (2, "fusion_dspy.local._shared", ["x"])]
    public = _all_of(_source_of("fusion_dspy.guard"))
    assert "FUSED_INDEX" in public and "_not_public" not in public
    assert _source_of("fusion_dspy.programs.translate") == ROOT / "programs" / "translate.py"
    assert _source_of("dspy") is None
