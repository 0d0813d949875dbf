"""Faults a workspace meets in real life (issue 15): a full disk, racing status calls, a hung
worker, an emptied database, loose file modes. Real processes, a real (tmpfs) full disk."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.runner.control import EngineError, stop_engine
from engine.runner.daemon import engine_pid, is_engine_process
from engine.store import DiskFullError, StoreError, open_store
from engine.store.base import MetricRow, NewTrial, TrialState
from tests.conftest import Project, wait_until
from tests.progress_wait import wait_while_progressing

STEPPING = '''
import os, time

HYPERPARAMETERS = {"x": 0.5}


def train(hp, trial):
    """A step every 50 ms; while the file "hold" exists it waits (its metrics flushed), and
    returns at once when "end" appears."""
    for step in range(trial.restore(), trial.max_train_steps):
        trial.report(step, val_error=hp["x"] + 1.0 / (step + 1))
        trial.checkpoint(step)
        if trial.should_stop():
            return
        if os.path.exists("hold"):
            trial.flush()
            open(f"held-{trial.trial_id}", "w").close()
            while os.path.exists("hold") and not trial.should_stop():
                if os.path.exists("end"):
                    open(f"ended-{trial.trial_id}", "w").close()
                    return
                time.sleep(0.05)
        time.sleep(0.05)
'''

STUDY = """\
[study]
name = "{name}"
workload = "stepping:train"
max_train_steps = {steps}
eval_every = 1
budget = {budget}
seed = 0
[nuisance]
x = {{ low = 0.0, high = 1.0 }}
"""


def _study(project: Project, name: str, steps: int = 100, budget: int = 2) -> Path:
    project.write("stepping.py", STEPPING)
    return project.write(f"{name}.toml", STUDY.format(name=name, steps=steps, budget=budget))


@contextmanager
def _tmpfs(path: Path, size: str = "64m") -> Iterator[Path]:
    """A small RAM disk at ``path`` that a test can fill; skipped where mounting is not allowed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a tmpfs, and mounting one needs root")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the disk holding ``folder`` to the last byte; the filler file is returned."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (2**20, 2**12, 1):
            try:
                while True:
                    os.write(fd, bytes(chunk))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def _new_store_with_trials(workspace: Path, n: int = 2):  # type: ignore[no-untyped-def]
    store = open_store(workspace)
    exp = store.create_experiment("e", "w")
    study = store.create_study(exp.id, "s", {"metric": "m", "mode": "min", "max_train_steps": 10}, 0)
    store.add_trials(study.id, [NewTrial({"x": i}, 0, i, "search") for i in range(n)])
    return store


# -- a full disk: the store ------------------------------------------------------------------
def test_a_full_disk_is_reported_as_disk_full_and_claims_wait_for_room(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk") as disk:
        store = _new_store_with_trials(disk / "ws")
        store.close()  # a reader opening later must create SQLite's -shm file on the full disk
        filler = _fill(disk)
        with pytest.raises(DiskFullError) as seen:
            open_store(disk / "ws").list_trials()
        assert "disk full" in str(seen.value) and "I/O error" not in str(seen.value)
        filler.unlink()
        store = open_store(disk / "ws")
        filler = _fill(disk)
        with pytest.raises(DiskFullError, match="disk full"):
            store.write_metrics([MetricRow(1, step, "m", 0.5) for step in range(5000)])
        assert store.claim_trials("cpu.0", "cpu") == []  # a trial started now could record nothing
        assert {t.state for t in store.list_trials()} == {TrialState.QUEUED}
        filler.unlink()
        assert [t.id for t in store.claim_trials("cpu.0", "cpu")] == [1]
        store.close()


# -- an empty database -----------------------------------------------------------------------
def test_an_empty_database_file_is_refused_not_made_into_a_new_workspace(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "7").mkdir(parents=True)
    (tmp_path / "tuneplay.db").write_bytes(b"")
    with pytest.raises(StoreError, match=r"empty \(0 bytes\)"):
        open_store(tmp_path)
    assert (tmp_path / "tuneplay.db").stat().st_size == 0


def _open_and_count(path: str) -> int:
    return len(open_store(path).list_experiments())


def test_workspaces_created_at_once_by_many_processes_are_one_whole_database(tmp_path: Path) -> None:
    # a new database appears whole (linked into place), so no opener ever meets it empty
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        counts = pool.map(_open_and_count, [str(tmp_path / "ws")] * 16)
    assert counts == [0] * 16
    assert sorted(p.name for p in (tmp_path / "ws").iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_an_empty_database_is_refused_by_the_cli_and_by_the_engine(project: Project) -> None:
    ws = project.workspace
    (ws / "checkpoints" / "7").mkdir(parents=True)
    (ws / "tuneplay.db").write_bytes(b"")
    study = _study(project, "s")
    for args in (["status"], ["engine", "start"], ["run", str(study)], ["export", "s"]):
        proc = project.tuneplay(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "empty (0 bytes)" in proc.stderr, (args, proc.stderr)
    assert engine_pid(ws) is None
    daemon = subprocess.run([sys.executable, "-m", "engine.runner.daemon", "--workspace", str(ws)],
                            env=project.env, capture_output=True, text=True, timeout=120, check=False)
    assert daemon.returncode == 2
    assert "refusing to serve" in daemon.stderr and "empty (0 bytes)" in daemon.stderr, daemon.stderr
    assert (ws / "tuneplay.db").stat().st_size == 0


# -- file modes --------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_workspace_file_is_the_owners_alone_after_run(project: Project) -> None:
    study = _study(project, "modes", steps=20, budget=2)
    project.tuneplay("run", str(study), "--wait", "--cpu-slots", "1", check=True)
    loose = [(str(p.relative_to(project.path)), oct(p.stat().st_mode & 0o777))
             for p in [project.workspace, *project.workspace.rglob("*")]
             if not p.is_symlink() and p.stat().st_mode & 0o077]
    assert (project.workspace / "logs" / "engine.log").exists()
    assert loose == []


# -- status while an engine starts ----------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_status_calls_during_engine_start_never_give_a_wrong_answer(project: Project) -> None:
    ws = project.workspace
    project.tuneplay("engine", "start", "--cpu-slots", "1", check=True)
    started = {engine_pid(ws)}
    project.tuneplay("engine", "stop", check=True)  # the workspace now remembers a dead engine
    cli_answers: list[str] = []
    seen_pids: list[int | None] = []
    done = threading.Event()

    def ask_cli() -> None:
        while not done.is_set():
            cli_answers.append(project.tuneplay("engine", "status").stdout.strip())

    def ask_here() -> None:  # as fast as it goes: the old check took the lock on every call
        while not done.is_set():
            seen_pids.append(engine_pid(ws))

    askers = [threading.Thread(target=ask_cli) for _ in range(4)] + [threading.Thread(target=ask_here)]
    for t in askers:
        t.start()
    try:
        for _ in range(3):
            start = project.tuneplay("engine", "start", "--cpu-slots", "1")
            pid = engine_pid(ws)
            assert start.returncode == 0 and pid is not None and pid > 0, (start.stdout, start.stderr)
            assert f"engine running (pid {pid})" in start.stdout
            assert _alive(pid) and is_engine_process(pid, ws)
            started.add(pid)
            project.tuneplay("engine", "stop", check=True)
            assert not _alive(pid) or not is_engine_process(pid, ws)
    finally:
        done.set()
        for t in askers:
            t.join()
    right = {f"no engine serves {ws}"} | {f"engine running (pid {p}) for {ws}" for p in started}
    assert cli_answers and set(cli_answers) <= right, set(cli_answers) - right
    assert seen_pids and set(seen_pids) <= started | {None}, set(seen_pids) - started


@pytest.mark.slow
def test_stop_never_signals_a_process_that_is_not_the_engine(tmp_path: Path) -> None:
    (tmp_path / "engine.lock").touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                                "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"),
         str(tmp_path / "engine.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert engine_pid(tmp_path) == holder.pid  # the kernel names the lock's holder
        with pytest.raises(EngineError, match="not its engine"):
            stop_engine(tmp_path, timeout=5)
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    assert engine_pid(tmp_path) is None


# -- a hung worker ---------------------------------------------------------------------------
def _worker_pids(project: Project) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"engine.runner.worker --workspace {project.workspace}"],
                         capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_a_stopped_worker_is_killed_and_replaced(project: Project) -> None:
    study = _study(project, "hung", steps=200, budget=2)
    project.tuneplay("run", str(study), "--cpu-slots", "1", check=True)
    store = project.store()

    def progress() -> tuple[tuple[str, int, int], ...]:
        return tuple((t.state.value, t.attempt, t.steps_done) for t in store.list_trials())

    def first_has_a_checkpoint() -> bool:
        running = store.list_trials(states=[TrialState.RUNNING])
        return bool(running) and any(c.kind == "latest" and c.step >= 5 for c in store.get_checkpoints(running[0].id))

    wait_while_progressing(first_has_a_checkpoint, progress)
    first = store.list_trials(states=[TrialState.RUNNING])[0]
    stopped = _worker_pids(project)
    assert len(stopped) == 1
    try:
        os.kill(stopped[0], signal.SIGSTOP)  # a hang: alive, holding its trial, doing nothing
        wait_until(lambda: store.get_trial(first.id).attempt == 2, timeout=90)
        wait_while_progressing(lambda: all(t.state.is_finished() for t in store.list_trials()), progress)
        trials = store.list_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETED] * 2, [(t.id, t.error) for t in trials]
        assert not _alive(stopped[0])
        logs = (project.workspace / "logs" / "worker-cpu.0.log").read_text()
        line = next(ln for ln in logs.splitlines() if f"trial {first.id} resumes at step" in ln)
        assert int(line.split("resumes at step ")[1].split()[0]) > 0, line

        # an idle worker stopped by a signal holds no trial to go stale, and is replaced too
        stopped = _worker_pids(project)
        os.kill(stopped[0], signal.SIGSTOP)
        more = _study(project, "after", steps=20, budget=1)
        project.tuneplay("run", str(more), "--wait", "--cpu-slots", "1", check=True, timeout=240)
        assert not _alive(stopped[0])
        assert "is hung" in (project.workspace / "logs" / "engine.log").read_text()
    finally:
        for pid in stopped:
            if _alive(pid):
                os.kill(pid, signal.SIGCONT)


# -- a full disk: the engine -----------------------------------------------------------------
@pytest.mark.slow
def test_the_engine_survives_a_full_disk_and_carries_on_when_there_is_room(project: Project) -> None:
    ws = project.workspace
    with _tmpfs(ws) as disk:
        try:
            _a_full_disk(project, disk)
        finally:
            project.tuneplay("engine", "stop", timeout=120)


def _a_full_disk(project: Project, disk: Path) -> None:
    ws = project.workspace
    study = _study(project, "full", steps=40, budget=2)
    (project.path / "hold").touch()
    project.tuneplay("run", str(study), "--cpu-slots", "1", check=True)
    store = project.store()
    first, second = (t.id for t in store.list_trials())
    wait_until(lambda: (project.path / f"held-{first}").exists(), timeout=120)
    filler = _fill(disk)

    # the engine says so, and so do status and export: "disk full", never "disk I/O error"
    wait_until(lambda: "disk full" in project.tuneplay("engine", "status").stdout, timeout=30)
    status = project.tuneplay("status")
    assert "disk full" in status.stdout + status.stderr, (status.stdout, status.stderr)
    export = project.tuneplay("export", "full")
    assert export.returncode == 0 or "disk full" in export.stderr, export.stderr
    for proc in (status, export):
        assert "I/O error" not in proc.stdout + proc.stderr

    # the first trial ends; its worker claims nothing while the disk is full
    (project.path / "end").touch()
    wait_until(lambda: (project.path / f"ended-{first}").exists(), timeout=60)
    window = time.monotonic() + 3.0  # the idle worker polls every 20 ms: 150 chances to claim
    while time.monotonic() < window:
        assert store.get_trial(second).state == TrialState.QUEUED
        time.sleep(0.1)
    assert store.get_trial(second).attempt == 0

    # stopped and started again while the disk is full, the engine comes up and waits
    project.tuneplay("engine", "stop", check=True)
    start = project.tuneplay("engine", "start", "--cpu-slots", "1")
    assert start.returncode == 0 and "disk full" in start.stdout, (start.stdout, start.stderr)
    pid = engine_pid(ws)
    assert pid is not None and "disk full" in project.tuneplay("engine", "status").stdout

    # room again: everything finishes, on the same engine
    (project.path / "end").unlink()
    (project.path / "hold").unlink()
    filler.unlink()
    wait_until(lambda: "disk full" not in project.tuneplay("engine", "status").stdout, timeout=30)
    wait_while_progressing(
        lambda: all(t.state.is_finished() for t in store.list_trials()),
        lambda: tuple((t.state.value, t.attempt, t.steps_done) for t in store.list_trials()))
    trials = store.list_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETED] * 2, [(t.id, t.state, t.error) for t in trials]
    assert engine_pid(ws) == pid
    assert "Traceback" not in (ws / "logs" / "engine.log").read_text()

