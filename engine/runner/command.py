"""Run a command workload for one trial: argv built from the study file, metrics read from
the program's own output (regular expressions) and from JSON lines, outputs kept apart.

The program is started directly (never through a shell), so no value, however hostile, is
interpreted; each token of the study's ``command`` stays one argv token. It runs in the
workload's ``cwd`` with ``PYTHONUNBUFFERED=1`` (a Python script's prints arrive as it makes
them, not when its pipe buffer fills), in a session of its own so a stop reaches every
process it started. Everything it prints goes to ``<trial>/output.log``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.runner.context import TrialContext, WorkloadFailed
from engine.workloads.command import CommandWorkload

POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 30.0
EXIT_DRAIN_SECONDS = 2.0  # a grandchild may hold the pipe open after the program exits
MAX_STEP = 2**53  # steps past this are not steps (and would not fit the store's integers)
LOG_CAP_BYTES = 8 * 2**20  # output.log rolls over to output.log.1 past this
OUTPUT_DIR = "out"
log = logging.getLogger("tuneplay.command")


class CommandFailed(WorkloadFailed):
    """The command exited non-zero, was killed by a signal, or never reported the metric."""


HOST_ENV = "TUNEPLAY_ENGINE_HOST"  # set by the engine for its workers


def output_dir(checkpoint_dir: Path) -> Path:
    """The trial's own folder for the program (``{checkpoint_dir}``), kept across attempts."""
    return checkpoint_dir / OUTPUT_DIR


def run_command(
    workload: CommandWorkload, hp: Mapping[str, Any], ctx: TrialContext, workspace: Path,
    attempt: int = 1, steps_done: int = 0,
) -> None:
    """Run the command for one trial, streaming its metrics into ``ctx``.

    Args:
        attempt: the trial's attempt; from the second on, files left in its folder by an
            earlier attempt make the ``resume`` arguments follow the command.
        steps_done: where an implicit step count (patterns without a ``step`` group) goes on.

    Raises:
        CommandFailed: with the reason, the last line the program printed and the log's path.
    """
    out = output_dir(ctx.checkpoint_dir)
    resuming = _prepare_output(out, attempt)
    metrics_path = ctx.checkpoint_dir / f"metrics.{os.getpid()}.jsonl"
    metrics_path.write_text("")
    log_path = ctx.checkpoint_dir / "output.log"
    values = {
        "seed": ctx.seed, "trial_id": ctx.trial_id, "max_train_steps": ctx.max_train_steps,
        "eval_every": ctx.eval_every, "checkpoint_dir": str(out),
        "device": "cuda" if ctx.device.startswith("cuda") else "cpu", "gpus": ctx.gpus,
    }
    argv = workload.argv(values, hp, resuming)
    cwd = workload.cwd or str(workspace.resolve().parent)
    reader = OutputReader(workload, ctx, log_path, start_step=steps_done if attempt > 1 else 0)
    with open(log_path, "ab") as log_fh:
        # a program stopped mid-line (print writes its text, then its newline) leaves the
        # log without a last newline: each attempt's header starts a line of its own
        lead = "\n" if log_fh.tell() and not _ends_with_newline(log_path) else ""
        log_fh.write(f"{lead}--- attempt {attempt}: {json.dumps(argv)} in {cwd}\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(
            argv, env=_environment(ctx, values, metrics_path), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
        )
        reader.log = log_fh
        record = _record_process(ctx.checkpoint_dir, proc.pid)
        try:
            _follow(proc, reader, metrics_path, ctx)
        finally:
            _signal(proc, signal.SIGKILL)  # whatever it left behind in its session
            record.unlink(missing_ok=True)
    code = proc.returncode
    if ctx.should_stop():
        return
    if code != 0:
        raise CommandFailed(f"{_describe_exit(code)}{reader.last_line_text()} (log: {log_path})")
    if ctx.best_value is None and ctx.diverged_at is None:
        hint = "" if workload.stdout else (
            "; to read it from what the program prints, give [study.workload] stdout patterns")
        raise CommandFailed(f"reported no {ctx.metric}; last output line: "
                            f"{reader.last_line!r} (log: {log_path}){hint}")


PROCESS_FILE = "command.json"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the pid, it names one process, never a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _record_process(trial_dir: Path, pid: int) -> Path:
    """Write which process group runs the trial's program, so an engine that starts after
    this worker was killed (kill -9 of the engine) can end it: it runs in a session of its
    own and would otherwise train on beside the next attempt."""
    path = trial_dir / PROCESS_FILE
    tmp = path.with_name(f".{PROCESS_FILE}.{os.getpid()}")
    host = os.environ.get(HOST_ENV, "")  # the engine host: on a shared folder, only it may end it
    tmp.write_text(json.dumps({"pgid": pid, "start": _start_time(pid), "host": host}))
    os.replace(tmp, path)
    return path


def end_orphans(checkpoints: Path, host: str = "") -> list[int]:
    """End the programs of command trials whose worker is gone; call it before any worker
    starts. Only programs started by engine host ``host`` are touched (on a folder shared by
    many hosts, another host's pid means nothing here). Returns the process groups signalled."""
    return [pgid for path in checkpoints.glob(f"*/{PROCESS_FILE}") if (pgid := end_orphan(path.parent, host))]


def end_orphan(trial_dir: Path, host: str = "") -> int | None:
    """End the program recorded in ``trial_dir`` (its worker died) if engine host ``host``
    started it. The group is signalled only while its leader is still the very process
    recorded (same pid and start time)."""
    path = trial_dir / PROCESS_FILE
    try:
        record = json.loads(path.read_text())
        pgid, start = int(record["pgid"]), record["start"]
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if str(record.get("host", "")) != host:
        return None
    ended = None
    if start is not None and _start_time(pgid) == start:
        try:
            os.killpg(pgid, signal.SIGKILL)
            ended = pgid
        except (ProcessLookupError, PermissionError):
            pass
    path.unlink(missing_ok=True)
    return ended


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _prepare_output(out: Path, attempt: int) -> bool:
    """True when the program should resume: its folder holds an earlier attempt's files.
    A first attempt never resumes: files there belong to another workspace's trial of the
    same number (a copied or re-created workspace), and are removed."""
    has_files = out.is_dir() and any(out.iterdir())
    if has_files and attempt <= 1:
        log.warning("removing %s: left by another run, not by an earlier attempt of this trial", out)
        shutil.rmtree(out, ignore_errors=True)
        has_files = False
    out.mkdir(parents=True, exist_ok=True)
    return has_files


def _environment(ctx: TrialContext, values: Mapping[str, Any], metrics_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TUNEPLAY_METRICS": str(metrics_path),
        "TUNEPLAY_TRIAL_ID": str(ctx.trial_id),
        "TUNEPLAY_SEED": str(ctx.seed),
        "TUNEPLAY_MAX_TRAIN_STEPS": str(ctx.max_train_steps),
        "TUNEPLAY_EVAL_EVERY": str(ctx.eval_every),
        "TUNEPLAY_CHECKPOINT_DIR": str(values["checkpoint_dir"]),
        "TUNEPLAY_DEVICE": str(values["device"]),
        "TUNEPLAY_GPUS": str(values["gpus"]),
    }
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if ctx.gpus and visible:  # the trial's own GPUs of its slot
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[: ctx.gpus])
    return env


class OutputReader:
    """Reads the program's output as it comes: writes it to the log (capped), applies the
    ``stdout`` patterns line by line, and remembers the last line for error messages."""

    def __init__(self, workload: CommandWorkload, ctx: TrialContext, log_path: Path, start_step: int = 0) -> None:
        self.patterns = workload.patterns()
        self.counters = [start_step] * len(self.patterns)  # the n-th match is step n
        self.ctx = ctx
        self.log_path = log_path
        self.log: Any = None
        self.logged = 0
        self.partial = b""
        self.last_line = ""
        self.skipped = 0

    def feed(self, chunk: bytes) -> None:
        self._write_log(chunk)
        data = self.partial + chunk
        parts = re.split(rb"\r\n|\n|\r", data)  # \r: progress bars redraw a line in place
        self.partial = parts.pop()
        for raw in parts:
            self.line(raw.decode("utf-8", errors="replace"))

    def close(self) -> None:
        """The program is done: its last line counts even without a newline."""
        if self.partial:
            self.line(self.partial.decode("utf-8", errors="replace"))
            self.partial = b""

    def line(self, text: str) -> None:
        if text.strip():
            self.last_line = text.strip()[:300]
        for i, pattern in enumerate(self.patterns):
            m = pattern.search(text)
            if m is None:
                continue
            metrics = {}
            for name, raw in m.groupdict().items():
                if name != "step" and raw is not None:
                    value = _number(raw)
                    if value is not None:
                        metrics[name] = value
            if not metrics:
                continue
            step = _integer(m.groupdict().get("step")) if "step" in pattern.groupindex else self.counters[i]
            self.counters[i] += 1
            report(self.ctx, step, metrics, f"output line {text.strip()[:120]!r}")

    def last_line_text(self) -> str:
        return f": {self.last_line}" if self.last_line else ""

    def _write_log(self, chunk: bytes) -> None:
        if self.log is None:
            return
        if self.logged + len(chunk) > LOG_CAP_BYTES:  # keep the tail: roll over, one old file
            self.log.flush()
            os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
            self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the trial's log)
            self.logged = 0
        self.log.write(chunk)
        self.log.flush()
        self.logged += len(chunk)


def report(ctx: TrialContext, step: int | None, metrics: Mapping[str, float], where: str) -> bool:
    """Report one point after checking its step at the edge; False (and a log line) if refused."""
    if step is None or not 0 <= step <= MAX_STEP:
        log.warning("trial %s: ignored %s: step %r is not a step (0 to 2**53)", ctx.trial_id, where, step)
        return False
    ctx.report(step, **metrics)
    return True


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def _integer(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            return None
    return None


def _follow(proc: subprocess.Popen[bytes], reader: OutputReader, metrics_path: Path, ctx: TrialContext) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    offset, stop_sent, exited_at, eof = 0, None, None, False
    while True:
        if not eof and select.select([fd], [], [], POLL_SECONDS)[0]:
            chunk = os.read(fd, 65536)
            if chunk:
                reader.feed(chunk)
            else:
                eof = True
        elif eof:
            time.sleep(POLL_SECONDS)
        offset = _read_metrics(metrics_path, offset, ctx)
        if proc.poll() is not None:
            exited_at = exited_at or time.monotonic()
            if eof or time.monotonic() - exited_at > EXIT_DRAIN_SECONDS:
                break
        if ctx.should_stop() and stop_sent is None:
            _signal(proc, signal.SIGTERM)
            stop_sent = time.monotonic()
        elif stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_SECONDS:
            _signal(proc, signal.SIGKILL)
    proc.stdout.close()
    reader.close()
    _read_metrics(metrics_path, offset, ctx, final=True)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_metrics(path: Path, offset: int, ctx: TrialContext, final: bool = False) -> int:
    """Report the whole JSON lines appended since ``offset`` (and, at the end, a last line
    written without its newline)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = len(chunk) if final else chunk.rfind(b"\n") + 1
    for line in chunk[:end].splitlines():
        if line.strip():
            _report_json(line, ctx)
    return offset + end


_NONFINITE = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf,
              "-inf": -math.inf, "-Infinity": -math.inf}


def _report_json(line: bytes, ctx: TrialContext) -> None:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "step" not in record:
        log.warning("trial %s: ignored a metrics line that is not a JSON object with a step: %r",
                    ctx.trial_id, line[:120])
        return
    metrics = {}
    for name, value in record.items():
        if name == "step" or isinstance(value, bool):  # true is not 1.0
            continue
        if isinstance(value, (int, float)):
            try:
                metrics[name] = float(value)
            except OverflowError:
                continue
        elif isinstance(value, str) and value in _NONFINITE:
            metrics[name] = _NONFINITE[value]
    if metrics:
        report(ctx, _integer(record["step"]), metrics, f"metrics line {line[:120]!r}")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
