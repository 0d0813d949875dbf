"""The engine stays headless: importing it pulls in no UI library."""

from __future__ import annotations

import subprocess
import sys

UI = ("textual", "rich", "plotext", "textual_plotext")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_whole_engine_loads_no_ui_library() -> None:
    import pkgutil

    import engine

    names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.") if not m.name.endswith("__main__")]
    loaded = _loaded_after("\n".join(f"import {n}" for n in names))
    assert not {m.split(".")[0] for m in loaded} & set(UI)


def test_headless_cli_starts_without_torch_or_textual() -> None:
    loaded = _loaded_after("import engine.cli, engine.spec, engine.search, engine.store, engine.workloads.builtin")
    top = {m.split(".")[0] for m in loaded}
    assert not top & {"torch", "textual", "rich", "plotext", "skopt"}
