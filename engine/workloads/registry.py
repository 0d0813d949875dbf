"""Resolve a workload reference to a :class:`WorkloadInfo`, loudly, without importing torch.

Three forms:
- ``builtin:NAME`` — ships with tuneplay (``engine.workloads.builtin.BUILTINS``).
- ``package.module:function`` — a Python entry point. Found with ``importlib.util.find_spec``
  and read with ``ast`` (never executed here), so validation stays fast and side-effect free.
  A module-level ``HYPERPARAMETERS`` literal (dict of name -> default, or list of names)
  declares what the function accepts; without one it accepts any name.
- a :class:`CommandWorkload` — any executable; hyperparameters arrive as argv tokens.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import TuneplayError
from engine.workloads.base import HParamInfo, WorkloadInfo
from engine.workloads.command import CommandWorkload

_ENTRY_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


class WorkloadError(TuneplayError, ValueError):
    """A workload reference that does not resolve; the message says why in one line."""

    key = ""


class CommandError(WorkloadError):
    """A command workload that cannot run as written; ``key`` names the key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def resolve_workload(workload: str | CommandWorkload, base_dir: str | None = None) -> WorkloadInfo:
    """Resolve ``workload`` (as written in a study file) or raise :class:`WorkloadError`."""
    if isinstance(workload, CommandWorkload):
        return _resolve_command(workload, base_dir)
    if workload.startswith("builtin:"):
        return _resolve_builtin(workload)
    if _ENTRY_RE.match(workload):
        return _resolve_python(workload, base_dir)
    raise WorkloadError(
        f"cannot resolve {workload!r}: expected 'builtin:NAME', 'package.module:function' "
        "or { command = [...] }"
    )


def builtin_names() -> list[str]:
    from engine.workloads.builtin import BUILTINS

    return sorted(BUILTINS)


def _resolve_builtin(ref: str) -> WorkloadInfo:
    from engine.workloads.builtin import BUILTINS

    name = ref.split(":", 1)[1]
    if name not in BUILTINS:
        raise WorkloadError(f"unknown built-in workload {name!r} (built-ins: {', '.join(sorted(BUILTINS))})")
    return BUILTINS[name]


def _with_path(base_dir: str | None) -> list[str]:
    extra = [os.getcwd()] + ([base_dir] if base_dir else [])
    return [p for p in extra if p not in sys.path]


def _resolve_python(ref: str, base_dir: str | None) -> WorkloadInfo:
    module, func = ref.split(":")
    added = _with_path(base_dir)
    sys.path[:0] = added
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise WorkloadError(f"cannot find module {module!r}: {exc}") from None
    finally:
        for p in added:
            sys.path.remove(p)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise WorkloadError(f"cannot find Python module {module!r} (from the current folder or the study's)")
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read {spec.origin}: {exc}") from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    if func not in names:
        raise WorkloadError(f"module {module!r} ({spec.origin}) defines no function {func!r}")
    fusable, fuse_keys = _fusion_declared(tree, func)
    return WorkloadInfo(
        ref=ref, kind="python", entry=ref, hyperparameters=_declared_hps(tree, spec.origin),
        description=f"Python entry point {ref}", fusable=fusable, fuse_keys=fuse_keys,
        source_dir=_import_root(spec.origin, module),
    )


def _import_root(origin: str, module: str) -> str:
    """The folder to put on sys.path for ``module`` (whose file is ``origin``) to import:
    workers import it from there whatever folder the engine was started in."""
    depth = module.count(".") + (1 if Path(origin).name == "__init__.py" else 0)
    return str(Path(origin).resolve().parents[depth])


def _fusion_declared(tree: ast.Module, func: str) -> tuple[bool, tuple[str, ...] | None]:
    """``@fused_with(fused, group_by=[...])`` on the train function, or ``train.fused = ...``."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            for dec in node.decorator_list:
                call = dec if isinstance(dec, ast.Call) else None
                name = getattr(call.func if call else dec, "id", getattr(call.func if call else dec, "attr", ""))
                if name == "fused_with":
                    keys = None
                    for kw in call.keywords if call else []:
                        if kw.arg == "group_by":
                            try:
                                keys = tuple(str(k) for k in ast.literal_eval(kw.value))
                            except ValueError:
                                keys = None
                    return True, keys
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == "fused" and getattr(t.value, "id", "") == func
            for t in node.targets
        ):
            return True, None
    return False, None


def _declared_hps(tree: ast.Module, origin: str) -> dict[str, HParamInfo] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "HYPERPARAMETERS" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise WorkloadError(f"{origin}: HYPERPARAMETERS must be a literal dict or list") from None
            if isinstance(value, dict):
                return {str(k): HParamInfo(str(k), v, _kind(v)) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return {str(k): HParamInfo(str(k), None, "any") for k in value}
            raise WorkloadError(f"{origin}: HYPERPARAMETERS must be a dict or a list of names")
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "any"


def _resolve_command(workload: CommandWorkload, base_dir: str | None) -> WorkloadInfo:
    """The program must exist where it will run: ``cwd`` (the study file's folder unless
    set), so validation and the worker agree. A script named after an interpreter
    (``python train.py``) must exist there too."""
    cwd = workload.cwd or base_dir or os.getcwd()
    if not os.path.isdir(cwd):
        raise CommandError("cwd", f"{cwd} is not a folder")
    exe = workload.command[0]
    if "{" not in exe:
        if os.sep in exe:
            path = os.path.join(cwd, exe)
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                where = "" if os.path.isabs(exe) else f" in {cwd} (the command runs there)"
                raise CommandError("command", f"{exe!r} is not an executable file{where}")
        elif shutil.which(exe) is None:
            raise CommandError("command", f"command {exe!r} is not an executable on PATH")
    for token in workload.command[1:]:
        script = token.endswith((".py", ".sh")) and not token.startswith("-") and "{" not in token
        if script and not os.path.isfile(os.path.join(cwd, token)):
            raise CommandError("command", f"{token!r} is not a file in {cwd} (the command runs there)")
    return WorkloadInfo(
        ref=workload.ref, kind="command", command=workload.command,
        description="command " + " ".join(workload.command),
    )


def load_train_function(info: WorkloadInfo) -> Callable[..., Any]:
    """Import the training function of a builtin or Python workload (this may import torch)."""
    module, func = info.entry.split(":")
    for folder in (os.getcwd(), info.source_dir):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    return getattr(importlib.import_module(module), func)
