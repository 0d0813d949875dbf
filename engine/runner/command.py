"""Command workloads: any program, hyperparameters as argv tokens, metrics as JSON lines.

Each hyperparameter arrives as exactly one argv token ``--name=value``; the program is
started directly (never through a shell), so no value, however hostile, is interpreted.
The program appends ``{"step": 10, "val_error": 0.3}`` lines to the file named by
``TUNEPLAY_METRICS``; exit code 0 means completed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.runner.context import TrialContext

POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 30.0


class CommandFailed(RuntimeError):
    """The command exited non-zero or was killed by a signal."""


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def argv_for(command: Sequence[str], hp: Mapping[str, Any]) -> list[str]:
    """The command followed by one ``--name=value`` token per hyperparameter."""
    return [*command, *(f"--{k}={format_value(v)}" for k, v in hp.items())]


def run_command(command: Sequence[str], hp: Mapping[str, Any], ctx: TrialContext, workspace: Path) -> None:
    """Run the command for one trial, streaming its metrics into ``ctx``."""
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = ctx.checkpoint_dir / f"metrics.{os.getpid()}.jsonl"
    metrics_path.write_text("")
    log_path = ctx.checkpoint_dir / "output.log"
    env = {
        **os.environ,
        "TUNEPLAY_METRICS": str(metrics_path),
        "TUNEPLAY_TRIAL_ID": str(ctx.trial_id),
        "TUNEPLAY_SEED": str(ctx.seed),
        "TUNEPLAY_MAX_TRAIN_STEPS": str(ctx.max_train_steps),
        "TUNEPLAY_EVAL_EVERY": str(ctx.eval_every),
        "TUNEPLAY_CHECKPOINT_DIR": str(ctx.checkpoint_dir),
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv_for(command, hp), env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, cwd=str(workspace.resolve().parent), start_new_session=True,
        )
        _follow(proc, metrics_path, ctx)
    code = proc.returncode
    if code != 0 and not ctx.should_stop():
        raise CommandFailed(_describe_exit(code, log_path))


def _follow(proc: subprocess.Popen[bytes], metrics_path: Path, ctx: TrialContext) -> None:
    offset = 0
    stop_sent: float | None = None
    while True:
        done = proc.poll() is not None
        offset = _read_metrics(metrics_path, offset, ctx)
        if done:
            return
        if ctx.should_stop() and stop_sent is None:
            _signal(proc, signal.SIGTERM)
            stop_sent = time.monotonic()
        elif stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_SECONDS:
            _signal(proc, signal.SIGKILL)
        time.sleep(POLL_SECONDS)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _read_metrics(path: Path, offset: int, ctx: TrialContext) -> int:
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n") + 1  # only whole lines; a partial line waits for its newline
    for line in chunk[:end].splitlines():
        _report_line(line, ctx)
    return offset + end


def _report_line(line: bytes, ctx: TrialContext) -> None:
    try:
        record = json.loads(line)
        step = int(record.pop("step"))
        metrics = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) or v in ("nan", "inf", "-inf", "NaN", "Infinity", "-Infinity")}
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # not a metrics line; ignore it rather than fail the trial
    if metrics:
        ctx.report(step, **metrics)


def _describe_exit(code: int, log_path: Path) -> str:
    tail = ""
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
        tail = lines[-1][:300] if lines else ""
    except OSError:
        pass
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"killed by {name}"
    else:
        reason = f"exited with code {code}"
    return f"{reason}" + (f": {tail}" if tail else "")
