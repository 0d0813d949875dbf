"""The engine stays headless: importing it pulls in no UI library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

UI = ("textual", "rich", "plotext", "textual_plotext")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _engine_modules() -> list[str]:
    """Every module file under engine/ (a folder without __init__.py would be missed by
    pkgutil, and by setuptools when packaging: each must be a package)."""
    root = Path(__file__).resolve().parents[1]
    names = []
    for path in sorted((root / "engine").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        assert (path.parent / "__init__.py").exists(), f"{path.parent} is not a package"
        if parts[-1] != "__main__":
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_the_whole_engine_loads_no_ui_library() -> None:
    names = _engine_modules()
    expected = {"engine.runner.daemon", "engine.workloads.fused", "engine.store.postgres", "engine.launch.slurm"}
    assert expected <= set(names)
    loaded = _loaded_after("\n".join(f"import {n}" for n in names))
    assert set(names) <= loaded  # each was imported, so each was checked
    assert not {m.split(".")[0] for m in loaded} & set(UI)


def test_headless_cli_starts_without_torch_or_textual() -> None:
    loaded = _loaded_after("import engine.cli, engine.spec, engine.search, engine.store, engine.workloads.builtin")
    top = {m.split(".")[0] for m in loaded}
    assert not top & {"torch", "textual", "rich", "plotext", "skopt"}
