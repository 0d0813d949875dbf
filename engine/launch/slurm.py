"""Start tuneplay engines on a Slurm cluster: one job array, one engine per task.

Every task runs ``engine.launch.task`` through submitit: an engine named after its node and
task, serving the shared PostgreSQL store and writing checkpoints to a folder every node
sees, that exits once the store has had no work for it for ``idle_exit_seconds`` (so the
allocation is given back as the study ends). Submitit pickles the call next to the logs in
``<checkpoints>/slurm/``; the sbatch script itself holds no secret: a store URL with a
password is refused (libpq reads it from ``~/.pgpass`` or ``PGPASSFILE``, which travel as
names, not contents).

Stopping engines cleanly: ``scancel --signal=USR1 JOB`` (each task turns it into a SIGTERM for
its engine, which pauses its trials and exits; the allocation ends with it). A plain
``scancel`` sends SIGTERM to every process of the job, engine and trials alike, then kills
them after ``KillWait`` (30 s by default), which can be shorter than a pause takes.

submitit is imported inside the functions that use it: importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine.launch import LaunchError
from engine.launch.task import engine_argv

# libpq's variables that say where the password and certificates are, never what they are:
# each task gets them as the submitting shell had them.
PG_ENV_NAMES = (
    "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL",
    "PGSERVICE", "PGSERVICEFILE", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS",
)
SECRET_ENV_NAMES = frozenset({"PGPASSWORD"})
# Slurm warns each task this long before its time limit (``--signal=USR2@...``): the engine
# needs up to STOP_TIMEOUT_SECONDS (60 s, engine/runner/daemon.py) to pause its trials, and
# the last checkpoints must reach the shared folder before Slurm kills the task.
WARN_SECONDS_BEFORE_LIMIT = 120
HELP = "engines as one Slurm job array, one engine per task (through submitit)"
JOB_NAME = "tuneplay-engine"
DEFAULT_TIME = "04:00:00"  # engines exit when idle, so a generous limit costs only queue priority
DEFAULT_IDLE_EXIT_SECONDS = 120
_TIME = re.compile(r"(\d+):([0-5]\d):([0-5]\d)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")
_PASSWORD_ADVICE = "put it in ~/.pgpass (or the file PGPASSFILE names) instead"


@dataclass(frozen=True)
class SlurmOptions:
    """What to launch, checked when built (a bad option raises LaunchError).

    Attributes:
        store_url: the shared store, ``postgresql://user@host[:port]/db`` without a password.
        checkpoints: a folder every node sees; submitit's logs go to ``<checkpoints>/slurm/``.
        workers: how many engines (array tasks).
        gpus_per_worker: GPUs per engine (0: a CPU-only allocation, no GPU request).
        cpus_per_worker: CPUs per engine; without GPUs, also how many trials it runs at once.
        partition: the Slurm partition (None: the cluster's default).
        time: each task's time limit, ``HH:MM:SS`` (hours may exceed 24).
        account: the Slurm account to charge (None: the user's default).
        idle_exit_seconds: an engine exits after this long with nothing to run.
        env_names: more variables to carry from this shell to each engine (names are checked
            here; PG_ENV_NAMES are always carried when set).
        engine_cmd: run this program instead of the engine (a container's entry point, a
            stand-in in tests); the engine's flags follow it.
        dry_run: render the sbatch script, submit nothing.
    """

    store_url: str
    checkpoints: Path
    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    partition: str | None = None
    time: str = DEFAULT_TIME
    account: str | None = None
    idle_exit_seconds: int = DEFAULT_IDLE_EXIT_SECONDS
    env_names: tuple[str, ...] = ()
    engine_cmd: tuple[str, ...] = ()
    dry_run: bool = False

    def __post_init__(self) -> None:
        check_store_url(self.store_url)
        object.__setattr__(self, "checkpoints", shared_folder(self.checkpoints))
        _check_at_least("--workers", self.workers, 1)
        _check_at_least("--gpus-per-worker", self.gpus_per_worker, 0)
        _check_at_least("--cpus-per-worker", self.cpus_per_worker, 1)
        _check_at_least("--exit-when-idle", self.idle_exit_seconds, 1)
        time_limit_minutes(self.time)
        for option, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not _PARTITION.fullmatch(value):
                raise LaunchError(f"{option}: {value!r} is not a Slurm name")
        for name in self.env_names:
            check_env_name(name)

    @property
    def log_folder(self) -> Path:
        """Where submitit keeps its pickles and each task's ``<job>_<task>/`` log folder."""
        return self.checkpoints / "slurm"


@dataclass(frozen=True)
class LaunchResult:
    """What a launch did (or, dry, would do)."""

    script: str
    log_folder: Path
    job_id: str | None = None  # the array job's id; None for a dry run
    task_ids: tuple[str, ...] = field(default=())  # ``123_0``, ``123_1``... (``123`` if one task)
    partition: str | None = None

    def describe(self) -> str:
        """One line for the terminal: what was submitted and where its logs are."""
        if self.job_id is None:
            return f"dry run: nothing submitted; logs would go to {self.log_folder}"
        where = f"partition {self.partition}" if self.partition else "the default partition"
        n = len(self.task_ids)
        kind = "job array" if n > 1 else "job"
        logs = self.log_folder / (f"{self.job_id}_*" if n > 1 else str(self.job_id))
        tasks = f"{n} task{'s' * (n != 1)}"
        return f"submitted {kind} {self.job_id} ({tasks}) on {where}; logs in {logs}"


def check_store_url(url: str) -> None:
    """Refuse a store other nodes cannot share, and any URL that carries a password."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise LaunchError(
            f"--store: engines on other nodes need PostgreSQL (postgresql://...), got {url!r}"
        )
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise LaunchError(
            f"--store: the URL holds a password, which the job would carry; {_PASSWORD_ADVICE}"
        )


def shared_folder(path: Path) -> Path:
    """The checkpoint folder as an absolute path (tasks may start elsewhere)."""
    path = Path(path).expanduser().absolute()
    if "\n" in str(path) or "\r" in str(path):
        raise LaunchError("--checkpoints: a folder name with a line break cannot go in a script")
    return path


def check_env_name(name: str) -> None:
    """A variable name a task may carry (never one that holds a password)."""
    if not _ENV_NAME.fullmatch(name):
        raise LaunchError(f"--env: {name!r} is not a variable name")
    if name in SECRET_ENV_NAMES:
        raise LaunchError(
            f"--env: {name} holds a password, which the job would carry; {_PASSWORD_ADVICE}"
        )


def time_limit_minutes(time: str) -> int:
    """``HH:MM:SS`` as whole minutes (rounded up), which is what submitit counts in."""
    match = _TIME.fullmatch(time)
    if not match:
        raise LaunchError(f"--time: expected HH:MM:SS (e.g. 04:00:00), got {time!r}")
    hours, minutes, seconds = (int(g) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total == 0:
        raise LaunchError("--time: a time limit of 00:00:00 leaves no time to run")
    return math.ceil(total / 60)


def _check_at_least(option: str, value: int, least: int) -> None:
    if not isinstance(value, int) or value < least:
        raise LaunchError(f"{option}: expected a whole number >= {least}, got {value!r}")


def carried_env(opts: SlurmOptions, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables each task sets for its engine: PG_ENV_NAMES and ``env_names`` that are
    set here (values travel in submitit's pickle, never in the script)."""
    environ = dict(os.environ) if environ is None else environ
    names = dict.fromkeys([*PG_ENV_NAMES, *opts.env_names])
    return {name: environ[name] for name in names if name in environ}


def task_argv(opts: SlurmOptions) -> list[str]:
    """The flags of ``engine.launch.task`` every array task runs with."""
    argv = ["--store", opts.store_url, "--checkpoints", str(opts.checkpoints)]
    argv += ["--exit-when-idle", str(opts.idle_exit_seconds)]
    if opts.gpus_per_worker == 0:
        argv += ["--cpu-slots", str(opts.cpus_per_worker)]
    if opts.engine_cmd:
        argv += ["--engine-cmd", *opts.engine_cmd]
    return argv


def sbatch_parameters(opts: SlurmOptions) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one engine per task."""
    params: dict[str, Any] = {
        "job_name": JOB_NAME,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": opts.cpus_per_worker,
        "time": time_limit_minutes(opts.time),
        "signal_delay_s": WARN_SECONDS_BEFORE_LIMIT,
        "array_parallelism": opts.workers,
        "wckey": None,  # submitit tags every job "submitit" otherwise
        "setup": _script_comment(opts),
        # submitit counts time in minutes; the script shows the limit as the user wrote it
        "additional_parameters": {"time": opts.time},
    }
    if opts.gpus_per_worker:
        params["gpus_per_node"] = opts.gpus_per_worker
    if opts.partition:
        params["partition"] = opts.partition
    if opts.account:
        params["account"] = opts.account
    return params


def _script_comment(opts: SlurmOptions) -> list[str]:
    """Comment lines for the script, so a reader sees what each task runs (the call itself
    travels pickled): the engine's command line, the host placeholder filled in per task."""
    host = "<node>-<array job id>_<task id>" if opts.workers > 1 else "<node>-<job id>"
    cpu_slots = None if opts.gpus_per_worker else opts.cpus_per_worker
    command = engine_argv(
        opts.store_url, opts.checkpoints, host, opts.idle_exit_seconds, cpu_slots, opts.engine_cmd,
    )
    # Every line of an argument that spans lines stays a comment: the script must run as is.
    shown = "\n#   ".join(shlex.join(command).splitlines())
    lines = [
        "# tuneplay: each task runs engine.launch.task, which starts one engine:",
        f"#   {shown}",
    ]
    carried = carried_env(opts)
    if carried:  # names only: values (a PGPASSFILE path, an SSL mode) travel in the pickle
        lines.append(f"# carrying from the submitting shell: {' '.join(carried)}")
    return lines


def _submitit_command(log_folder: Path) -> str:
    """The command line submitit's SlurmExecutor puts in the script (``_submitit_command_str``;
    the live test checks the submitted script is the rendered one)."""
    folder = shlex.quote(str(log_folder / "%j"))
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", folder])


def render_script(opts: SlurmOptions) -> str:
    """The sbatch script ``launch_slurm`` submits, rendered by submitit without submitting."""
    from submitit.slurm.slurm import _make_sbatch_string

    map_count = opts.workers if opts.workers > 1 else None  # submitit sends one call as a plain job
    return _make_sbatch_string(
        command=_submitit_command(opts.log_folder), folder=opts.log_folder / "%j",
        map_count=map_count, **sbatch_parameters(opts),
    )


def launch_slurm(opts: SlurmOptions) -> LaunchResult:
    """Submit ``opts.workers`` engines as one job array (or, dry, only render its script)."""
    script = render_script(opts)
    if opts.dry_run:
        return LaunchResult(script, opts.log_folder, partition=opts.partition)
    jobs = _submit(opts)
    job_id = jobs[0].job_id.split("_")[0]
    task_ids = tuple(job.job_id for job in jobs)
    return LaunchResult(script, opts.log_folder, job_id, task_ids, opts.partition)


def _submit(opts: SlurmOptions) -> Sequence[Any]:
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    from engine.launch.task import run_task

    try:
        # No requeueing on timeout: the engine pauses its trials and the next engine resumes them.
        executor = submitit.SlurmExecutor(folder=opts.log_folder / "%j", max_num_timeout=0)
    except RuntimeError as exc:  # submitit's "Could not detect srun"
        raise LaunchError(f"slurm: no Slurm client here ({exc})") from exc
    executor.update_parameters(**sbatch_parameters(opts))
    argv, env = task_argv(opts), carried_env(opts)
    try:
        return executor.map_array(run_task, [argv] * opts.workers, [env] * opts.workers)
    except (FailedJobError, FailedSubmissionError) as exc:
        first = (str(exc).strip().splitlines() or ["no output"])[0]
        raise LaunchError(f"slurm: sbatch refused the job: {first}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tuneplay launch slurm`` (the store and checkpoints come from the caller)."""
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="engines to start (array tasks)",
    )
    parser.add_argument(
        "--gpus-per-worker", type=int, default=0, metavar="G",
        help="GPUs per engine (0: CPU only)",
    )
    parser.add_argument(
        "--cpus-per-worker", type=int, default=1, metavar="C",
        help="CPUs per engine; without GPUs also the trials it runs at once",
    )
    parser.add_argument(
        "--partition", default=None, metavar="NAME",
        help="Slurm partition (default: the cluster's)",
    )
    parser.add_argument(
        "--time", default=DEFAULT_TIME, metavar="HH:MM:SS",
        help="each engine's time limit (default: %(default)s)",
    )
    parser.add_argument("--account", default=None, metavar="NAME", help="Slurm account to charge")
    parser.add_argument(
        "--exit-when-idle", type=int, default=DEFAULT_IDLE_EXIT_SECONDS, metavar="SECONDS",
        dest="idle_exit_seconds",
        help="an engine exits after this long with nothing to run (default: %(default)s)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME", dest="env_names",
        help="carry this variable to the engines too (repeatable; libpq's PG* file and SSL "
             "variables always are)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script, submit nothing",
    )


def options_from_args(args: argparse.Namespace, store_url: str, checkpoints: Path) -> SlurmOptions:
    """SlurmOptions from ``add_arguments``' flags."""
    return SlurmOptions(
        store_url=store_url, checkpoints=checkpoints, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
        partition=args.partition, time=args.time, account=args.account,
        idle_exit_seconds=args.idle_exit_seconds, env_names=tuple(args.env_names),
        dry_run=args.dry_run,
    )


def run(args: argparse.Namespace, store_url: str, checkpoints: Path) -> int:
    """``tuneplay launch slurm``: submit (or print) the job array; raises LaunchError."""
    result = launch_slurm(options_from_args(args, store_url, checkpoints))
    print(result.script if result.job_id is None else result.describe())
    return 0
