"""Launching engines as a Slurm job array: the script a user would submit (dry run), the
options refused, the task that runs each engine, and a real array on a local Slurm."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.launch import LAUNCHERS, LaunchError, get_launcher
from engine.launch.slurm import SlurmOptions, carried_env, launch_slurm
from engine.launch.task import engine_argv, task_host
from tests.conftest import ROOT
from tests.slurm_cluster import SlurmCluster

STORE = "postgresql://tuner@db.example:5432/tune"

# A stand-in engine: records its flags, its name and PGPASSFILE in <checkpoints>/hosts/<host>.
RECORDING_ENGINE = textwrap.dedent("""
    import json, os, sys
    args = sys.argv[1:]
    flag = lambda name: args[args.index(name) + 1]
    folder = os.path.join(flag("--checkpoints"), "hosts")
    os.makedirs(folder, exist_ok=True)
    record = {"argv": args, "PGPASSFILE": os.environ.get("PGPASSFILE")}
    with open(os.path.join(folder, flag("--host")), "w") as f:
        json.dump(record, f)
""")
# A stand-in engine that runs until SIGTERM, then "pauses" (writes a file) and exits 0.
PAUSING_ENGINE = textwrap.dedent("""
    import os, signal, sys, time
    args = sys.argv[1:]
    folder = os.path.join(args[args.index("--checkpoints") + 1], "engine")
    os.makedirs(folder, exist_ok=True)
    def pause(*_):
        open(os.path.join(folder, "paused"), "w").close()
        sys.exit(0)
    signal.signal(signal.SIGTERM, pause)
    open(os.path.join(folder, "ready"), "w").close()
    time.sleep(120)
    sys.exit(3)
""")


def options(**changes: object) -> SlurmOptions:
    fields: dict[str, object] = {"store_url": STORE, "checkpoints": Path("/shared/ckpt")}
    return SlurmOptions(**{**fields, "dry_run": True, **changes})  # type: ignore[arg-type]


def sbatch_lines(script: str) -> set[str]:
    return {line for line in script.splitlines() if line.startswith("#SBATCH")}


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)


# --- the script (dry run) ---------------------------------------------------------------


def test_dry_run_asks_for_an_array_of_gpu_engines() -> None:
    opts = options(
        workers=4, gpus_per_worker=2, cpus_per_worker=8, partition="gpu", time="08:00:00",
    )
    result = launch_slurm(opts)
    assert result.job_id is None and result.describe().startswith("dry run: nothing submitted")
    assert {
        "#SBATCH --array=0-3%4", "#SBATCH --gpus-per-node=2", "#SBATCH --partition=gpu",
        "#SBATCH --time=08:00:00", "#SBATCH --cpus-per-task=8", "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120",
        "#SBATCH --output=/shared/ckpt/slurm/%A_%a/%A_%a_0_log.out",
    } <= sbatch_lines(result.script)
    engine = (
        f"{sys.executable} -m engine.runner.daemon --store {STORE} --checkpoints /shared/ckpt "
        "--host '<node>-<array job id>_<task id>' --exit-when-idle 120\n"
    )
    assert engine in result.script  # a GPU engine makes its own slots: no --cpu-slots
    assert "-m submitit.core._submit /shared/ckpt/slurm/%j" in result.script


def test_dry_run_of_cpu_engines_asks_for_no_gpu_and_gives_each_engine_its_cpus() -> None:
    script = launch_slurm(options(workers=3, cpus_per_worker=4, idle_exit_seconds=30)).script
    assert not [line for line in sbatch_lines(script) if "gpu" in line or "gres" in line]
    assert "#SBATCH --partition" not in script  # the cluster's default partition
    assert "#SBATCH --array=0-2%3" in script
    assert "--exit-when-idle 30 --cpu-slots 4\n" in script


def test_one_worker_is_a_plain_job() -> None:
    script = launch_slurm(options(workers=1)).script
    assert "--array" not in script
    assert "--host '<node>-<job id>'" in script


def test_no_password_reaches_the_script_or_the_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    monkeypatch.setenv("PGPASSFILE", "/home/tuner/.pgpass")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    opts = options(workers=2, env_names=("WANDB_MODE",))
    script = launch_slurm(opts).script
    assert "hunter2" not in script and "PGPASSWORD" not in script
    assert "# carrying from the submitting shell: PGPASSFILE PGSSLMODE\n" in script
    assert carried_env(opts) == {"PGPASSFILE": "/home/tuner/.pgpass", "PGSSLMODE": "verify-full"}
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert carried_env(opts)["WANDB_MODE"] == "offline"


def test_a_multiline_engine_command_stays_a_comment_in_the_script() -> None:
    script = launch_slurm(options(engine_cmd=(sys.executable, "-c", RECORDING_ENGINE))).script
    setup = script.split("# setup\n")[1].split("\n\n# command")[0]
    assert all(line.startswith("#") for line in setup.splitlines())
    assert "json.dump(record, f)" in setup


def test_relative_checkpoints_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert options(checkpoints=Path("ckpt")).checkpoints == tmp_path / "ckpt"


# --- options refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"time": "4h"}, "--time"),
        ({"time": "04:60:00"}, "--time"),
        ({"time": "00:00:00"}, "--time"),
        ({"time": "1-00:00:00"}, "--time"),
        ({"workers": 0}, "--workers"),
        ({"gpus_per_worker": -1}, "--gpus-per-worker"),
        ({"cpus_per_worker": 0}, "--cpus-per-worker"),
        ({"idle_exit_seconds": 0}, "--exit-when-idle"),
        ({"partition": "gpu; rm -rf /"}, "--partition"),
        ({"env_names": ("NOT-A-NAME",)}, "--env"),
        ({"store_url": "sqlite:///tmp/x.db"}, "--store"),
        ({"checkpoints": Path("/shared/a\nb")}, "--checkpoints"),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_the_option(
    change: dict[str, object], option: str,
) -> None:
    with pytest.raises(LaunchError) as caught:
        options(**change)
    message = str(caught.value)
    assert message.startswith(f"{option}: ") and "\n" not in message


@pytest.mark.parametrize(
    "url", ["postgresql://tuner:hunter2@db/tune", "postgres://tuner@db/tune?password=hunter2"],
)
def test_a_store_url_with_a_password_is_refused(url: str) -> None:
    with pytest.raises(LaunchError, match=r"~/\.pgpass .*PGPASSFILE") as caught:
        options(store_url=url)
    assert "hunter2" not in str(caught.value)


def test_carrying_pgpassword_is_refused() -> None:
    with pytest.raises(LaunchError, match=r"^--env: PGPASSWORD holds a password.*~/\.pgpass"):
        options(env_names=("PGPASSWORD",))


# --- the launcher seam --------------------------------------------------------------------


def test_slurm_is_a_registered_launcher_with_flags_and_a_dry_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    launcher = get_launcher("slurm")
    assert LAUNCHERS["slurm"] is launcher and "Slurm job array" in launcher.HELP
    parser = argparse.ArgumentParser()
    launcher.add_arguments(parser)
    args = parser.parse_args(["--workers", "2", "--gpus-per-worker", "1", "--partition", "debug",
                              "--time", "00:30:00", "--exit-when-idle", "60", "--dry-run"])
    assert launcher.run(args, STORE, Path("/shared/ckpt")) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --time=00:30:00" in out
    assert "--exit-when-idle 60" in out


def test_an_unknown_launcher_names_the_known_ones() -> None:
    with pytest.raises(LaunchError, match=r"unknown launcher 'ray' \(known: slurm\)"):
        get_launcher("ray")


def test_importing_the_launchers_loads_no_scheduler_client() -> None:
    heavy = "{'submitit', 'torch', 'textual', 'rich', 'plotext'}"
    loaded = f"sorted(m for m in sys.modules if m.split('.')[0] in {heavy})"
    probe = f"import engine.launch, sys; print({loaded})"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    assert out.strip() == "[]"


# --- the task -----------------------------------------------------------------------------


def test_each_task_names_its_engine_after_node_and_task() -> None:
    array = {"SLURM_ARRAY_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "4", "SLURM_JOB_ID": "127"}
    assert task_host(array, "node7") == "node7-123_4"
    assert task_host({"SLURM_JOB_ID": "127"}, "node7") == "node7-127"
    assert task_host({}, "node7") == "node7"


def test_engine_command_line() -> None:
    assert engine_argv(STORE, Path("/ckpt"), "n-1_0", 120, 4) == [
        sys.executable, "-m", "engine.runner.daemon", "--store", STORE, "--checkpoints", "/ckpt",
        "--host", "n-1_0", "--exit-when-idle", "120", "--cpu-slots", "4",
    ]
    assert engine_argv(STORE, "/ckpt", "n", 5, None, ("apptainer", "run", "img.sif"))[:4] == [
        "apptainer", "run", "img.sif", "--store",
    ]
    assert "--cpu-slots" not in engine_argv(STORE, "/ckpt", "n", 5, None)


def _task(tmp_path: Path, engine: str, **env: str) -> subprocess.Popen[str]:
    argv = ["--store", STORE, "--checkpoints", str(tmp_path), "--exit-when-idle", "7",
            "--cpu-slots", "2", "--engine-cmd", sys.executable, "-c", engine]
    return subprocess.Popen(
        [sys.executable, "-m", "engine.launch.task", *argv], cwd=ROOT, env={**os.environ, **env},
        text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )


def test_the_task_runs_the_engine_under_its_task_name(tmp_path: Path) -> None:
    slurm = {"SLURM_ARRAY_JOB_ID": "55", "SLURM_ARRAY_TASK_ID": "1", "PGPASSFILE": "/p/.pgpass"}
    proc = _task(tmp_path, RECORDING_ENGINE, **slurm)
    assert proc.wait(60) == 0, proc.stdout.read() if proc.stdout else ""
    (record_file,) = (tmp_path / "hosts").iterdir()
    assert record_file.name.endswith("-55_1")
    record = json.loads(record_file.read_text())
    assert record["argv"] == [
        "--store", STORE, "--checkpoints", str(tmp_path), "--host", record_file.name,
        "--exit-when-idle", "7", "--cpu-slots", "2",
    ]
    assert record["PGPASSFILE"] == "/p/.pgpass"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM])
@pytest.mark.parametrize("to", ["task", "every process"])  # Slurm signals every process
def test_the_task_passes_slurms_signals_on_as_sigterm_so_the_engine_pauses(
    tmp_path: Path, sig: signal.Signals, to: str,
) -> None:
    proc = _task(tmp_path, PAUSING_ENGINE)
    wait_for(tmp_path / "engine" / "ready")
    if to == "task":
        proc.send_signal(sig)
    else:
        os.killpg(proc.pid, sig)
    assert proc.wait(30) == 0, proc.stdout.read() if proc.stdout else ""
    assert (tmp_path / "engine" / "paused").exists()


UNHANDLED_ENGINE = textwrap.dedent("""
    import os, sys, time
    args = sys.argv[1:]
    folder = os.path.join(args[args.index("--checkpoints") + 1], "engine")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "pid"), "w") as fh:
        fh.write(str(os.getpid()))
    open(os.path.join(folder, "ready"), "w").close()
    time.sleep(120)
""")


def test_an_engine_ended_by_the_stop_signal_the_task_was_given_is_a_clean_stop(tmp_path: Path) -> None:
    # Slurm's SIGTERM reaches the engine too; one landing as it exits kills it with -15
    proc = _task(tmp_path, UNHANDLED_ENGINE)
    wait_for(tmp_path / "engine" / "ready")
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0


def test_an_engine_killed_while_the_task_was_not_stopped_fails_the_task(tmp_path: Path) -> None:
    proc = _task(tmp_path, UNHANDLED_ENGINE)
    wait_for(tmp_path / "engine" / "ready")
    os.kill(int((tmp_path / "engine" / "pid").read_text()), signal.SIGTERM)
    assert proc.wait(30) != 0


def test_a_failing_engine_fails_the_task(tmp_path: Path) -> None:
    proc = _task(tmp_path, "import sys; sys.exit(4)")
    assert proc.wait(60) == 4


# --- a real job array on a local Slurm ----------------------------------------------------


@pytest.mark.slurm
def test_an_array_of_two_engines_runs_on_slurm_and_gives_the_allocation_back(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "pgpass"))
    opts = SlurmOptions(
        store_url=STORE, checkpoints=tmp_path / "ckpt", workers=2, partition="debug",
        time="00:05:00", engine_cmd=(sys.executable, "-c", RECORDING_ENGINE),
    )
    result = launch_slurm(opts)
    assert result.job_id and result.task_ids == (f"{result.job_id}_0", f"{result.job_id}_1")
    assert result.describe() == (
        f"submitted job array {result.job_id} (2 tasks) on partition debug; "
        f"logs in {opts.checkpoints}/slurm/{result.job_id}_*"
    )
    slurm_cluster.wait_until_empty(timeout=60)
    hosts = sorted(p.name for p in (opts.checkpoints / "hosts").iterdir())
    assert hosts == [f"{slurm_cluster.node}-{result.job_id}_{i}" for i in (0, 1)]
    for host in hosts:
        record = json.loads((opts.checkpoints / "hosts" / host).read_text())
        assert record["argv"][record["argv"].index("--host") + 1] == host
        assert record["PGPASSFILE"] == str(tmp_path / "pgpass")
    (submitted,) = opts.log_folder.glob("*/*_submission.sh")
    dry = SlurmOptions(**{**vars(opts), "dry_run": True})
    assert submitted.read_text() == launch_slurm(dry).script  # the dry run shows what is submitted


@pytest.mark.slurm
def test_scancel_with_usr1_pauses_the_engines_and_ends_the_array(
    slurm_cluster: SlurmCluster, tmp_path: Path,
) -> None:
    opts = SlurmOptions(
        store_url=STORE, checkpoints=tmp_path / "ckpt", workers=1, time="00:05:00",
        engine_cmd=(sys.executable, "-c", PAUSING_ENGINE),
    )
    result = launch_slurm(opts)
    wait_for(opts.checkpoints / "engine" / "ready", timeout=60)
    slurm_cluster.run("scancel", "--signal=USR1", str(result.job_id))
    slurm_cluster.wait_until_empty(timeout=60)
    assert (opts.checkpoints / "engine" / "paused").exists()
    log = (opts.log_folder / str(result.job_id) / f"{result.job_id}_0_log.out").read_text()
    assert "exited with code 0" in log
