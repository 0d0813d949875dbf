"""What one task of a launched job runs: a tuneplay engine in the foreground, until it is idle.

A launcher (``engine.launch.slurm``) starts one of these per array task. The task names its
engine after the node *and* the task (``node7-123_4``), so two tasks sharing a node never
look like one engine to the store, and runs the engine as a child process that it waits for:
when the job must end (``scancel``, or the scheduler's warning signal shortly before the time
limit) the task passes a SIGTERM on, the engine checkpoints and pauses its trials, and the
next engine resumes them.

Run by hand (outside any scheduler) it is ``python -m engine.launch.task --store URL
--checkpoints DIR``; the engine is then named after the host alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

ENGINE_MODULE = "engine.runner.daemon"
# Slurm's warning before the time limit (``--signal``; submitit asks for USR2) and USR1, the
# signal people send with ``scancel --signal=USR1`` to stop an engine without killing it: the
# engine pauses its trials on SIGTERM and knows no other signal, so every one becomes a SIGTERM.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# Slurm signals every process of a job step, the engine and its trials included, and USR1/USR2
# kill a process that does not handle them. The engine starts with them ignored (an ignored
# signal stays ignored across exec, down to every trial) and hears of them as SIGTERM from here.
# A shell's ``trap`` sets that up: preexec_fn could deadlock a process that runs threads.
IGNORING_USR_SIGNALS = ("/bin/sh", "-c", 'trap "" USR1 USR2; exec "$@"', "sh")


class EngineFailed(RuntimeError):
    """The engine ended with a nonzero exit code (raised so Slurm marks the task FAILED)."""


def task_host(environ: Mapping[str, str], hostname: str) -> str:
    """The engine's host name: the node's name plus the task's job id, unique per task.

    ``node7-123_4`` for task 4 of array job 123, ``node7-123`` for a job that is not an
    array, ``node7`` outside any scheduler.
    """
    array_job, array_task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{hostname}-{array_job}_{array_task}"
    if environ.get("SLURM_JOB_ID"):
        return f"{hostname}-{environ['SLURM_JOB_ID']}"
    return hostname


def engine_argv(
    store_url: str,
    checkpoints: str | os.PathLike[str],
    host: str,
    idle_exit_seconds: int,
    cpu_slots: int | None,
    engine_cmd: Sequence[str] = (),
) -> list[str]:
    """The engine's command line.

    Args:
        store_url: the shared store (``postgresql://user@host/db``, never with a password).
        checkpoints: the checkpoint folder every node sees.
        host: the name the engine gives itself in the store (see ``task_host``).
        idle_exit_seconds: the engine exits after this long with nothing to run.
        cpu_slots: how many CPU trials to run at once; None on a GPU allocation (the engine
            makes one slot per visible GPU).
        engine_cmd: the program to run instead of ``python -m engine.runner.daemon`` (a
            container's entry point, or a stand-in in tests); the flags follow it.
    """
    argv = [*(engine_cmd or (sys.executable, "-m", ENGINE_MODULE))]
    argv += ["--store", store_url, "--checkpoints", str(checkpoints), "--host", host]
    argv += ["--exit-when-idle", str(idle_exit_seconds)]
    if cpu_slots is not None:
        argv += ["--cpu-slots", str(cpu_slots)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.launch.task",
        description="Run one tuneplay engine in the foreground, named after this node and task.",
    )
    parser.add_argument("--store", required=True, metavar="URL")
    parser.add_argument("--checkpoints", required=True, metavar="DIR")
    parser.add_argument("--exit-when-idle", type=int, default=120, metavar="SECONDS")
    parser.add_argument("--cpu-slots", type=int, default=None, metavar="N")
    parser.add_argument(
        "--engine-cmd", nargs=argparse.REMAINDER, default=[], metavar="PROGRAM ...",
        help="run PROGRAM [ARGS...] instead of the engine, with the engine's flags after it "
             "(last on the line)",
    )
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the engine until it exits; returns its exit code.

    Args:
        argv: this task's flags (see ``build_parser``).
        env: variables to set for the engine on top of this process's environment (what the
            launcher carried from the submitting shell, e.g. ``PGPASSFILE``).
    """
    args = build_parser().parse_args(argv)
    host = task_host(os.environ, socket.gethostname())
    command = engine_argv(
        args.store, args.checkpoints, host, args.exit_when_idle, args.cpu_slots, args.engine_cmd,
    )
    print(f"tuneplay task: engine {host} starting", flush=True)
    code = run_forwarding_signals(command, {**os.environ, **(env or {})})
    print(f"tuneplay task: engine {host} exited with code {code}", flush=True)
    return code


def run_task(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The callable a launcher submits: ``main``, raising when the engine failed so the
    scheduler records the task as FAILED rather than COMPLETED."""
    code = main(argv, env)
    if code != 0:
        raise EngineFailed(f"the engine exited with code {code}")
    return code


class _Forwarder:
    """Turns the signals a job gets into one SIGTERM for the engine (once it has started)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending = False
        self.asked = False  # a stop signal came: the engine was asked to stop

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True
        if self.proc is None:
            self.pending = True  # sent as soon as the engine exists
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def run_forwarding_signals(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command`` in the foreground, ignoring SIGUSR1/2 (IGNORING_USR_SIGNALS), forward
    FORWARDED_SIGNALS to it as SIGTERM, and restore this process's handlers afterwards
    (submitit has its own)."""
    forward = _Forwarder()
    # Handlers first: a signal between starting the child and installing them would be lost.
    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        forward.proc = subprocess.Popen([*IGNORING_USR_SIGNALS, *command], env=dict(env))
        if forward.pending:
            forward.proc.send_signal(signal.SIGTERM)
        code = forward.proc.wait()
        # Slurm signals every process of the step: the engine gets SIGTERM from Slurm and the
        # one forwarded here, and the second may land while its interpreter is already exiting
        # after pausing its trials. Asked to stop, ended by SIGTERM: a clean stop.
        if code == -signal.SIGTERM and forward.asked:
            return 0
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
