"""Saver processes: a fused group's row checkpoints written in parallel, same bytes as in-thread."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from engine.runner.checkpoint_writer import CheckpointWriter
from engine.runner.saver import SaverPool, savers_for
from engine.store import open_store
from engine.workloads.rowstate import RowState, StateDictLayout, materialize

LAYOUT = StateDictLayout((("0.weight", 0, 12, (3, 4)), ("0.bias", 12, 3, (3,)), ("2.weight", 15, 6, (2, 3))))


def _jobs(tmp_path: Path, n: int) -> list[tuple[Path, dict]]:
    a, b = torch.randn(n, 21), torch.randn(4, 21)
    return [
        (tmp_path / "cp" / str(i) / ".best.pt.tmp",
         {"step": i, "model": RowState((a if i % 5 else b,), i if i % 5 else i % 4, LAYOUT),
          "optimizer": None, "extra": {}})
        for i in range(n)
    ]


def test_a_pool_writes_each_row_as_its_unfused_state_dict(tmp_path: Path) -> None:
    pool = SaverPool(2, tmp_path / "cp")
    try:
        jobs = _jobs(tmp_path, 40)
        pool.write(jobs)
    finally:
        pool.close()
    for path, state in jobs:
        saved = torch.load(path, weights_only=True)
        want = materialize(state)
        assert list(saved) == ["step", "model", "optimizer", "extra"] and saved["step"] == want["step"]
        assert list(saved["model"]) == ["0.weight", "0.bias", "2.weight"]
        for key, value in want["model"].items():
            assert torch.equal(saved["model"][key], value)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # owner-only, as the workspace
        # one storage per file, the size of a row: not the whole stacked tensor
        assert path.stat().st_size < 4096
    assert not list((tmp_path / "cp").glob(".rows-*"))  # spill files are removed


def test_a_failing_pool_falls_back_to_saving_in_thread(tmp_path: Path) -> None:
    class Broken(SaverPool):
        def write(self, jobs):  # type: ignore[no-untyped-def]
            raise OSError("no space left on device")

    store = open_store(tmp_path / ".tuneplay")
    pool = Broken(2, tmp_path / "cp")
    writer = CheckpointWriter(store, pool)
    for i, (path, state) in enumerate(_jobs(tmp_path, 40)):
        writer.submit(i + 1, "best", i, path.parent / "best.pt", 0.5, state)
    writer.drain()
    assert pool.broken and not pool.usable
    for i, (path, state) in enumerate(_jobs(tmp_path, 40)):
        saved = torch.load(path.parent / "best.pt", weights_only=True)
        assert saved["step"] == i and set(saved["model"]) == {"0.weight", "0.bias", "2.weight"}


@pytest.mark.parametrize(("device", "threads", "expected"), [
    ("cuda", 16, 8), ("cuda", 4, 2), ("cuda", 2, 0), ("cpu", 16, 0),
])
def test_savers_only_use_spare_cores_of_a_gpu_worker(device: str, threads: int, expected: int) -> None:
    assert savers_for(device, threads) == expected


def test_a_worker_with_savers_finishes_a_large_group_with_every_best_checkpoint(tmp_path: Path) -> None:
    """The real worker process (``python -m engine.runner.worker``) spawning its savers; the
    study is enqueued once they are up (before that, a group saves in-process)."""
    import os
    import signal
    import subprocess
    import sys

    from engine.spec import parse_study
    from engine.store.base import TrialState
    from engine.workspace import launch_study
    from tests.conftest import wait_until

    ws = tmp_path / ".tuneplay"
    store = open_store(ws)
    root = Path(__file__).resolve().parents[1]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.runner.worker", "--workspace", str(ws), "--name", "w",
             "--device", "cpu", "--savers", "2"],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=log_fh, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "checkpoint savers ready" in log_path.read_text(), timeout=120, poll=0.1)
        launch_study(store, parse_study(
            '[study]\nname = "big"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 20\n'
            'eval_every = 10\nbudget = 40\nfuse = 40\n[fixed]\nwidth = 16\n'
            '[nuisance]\nlearning_rate = { low = 1e-3, high = 1e-2, scale = "log" }\n'
        ))
        wait_until(lambda: all(t.state.is_finished() for t in store.list_trials()), timeout=120, poll=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # and its savers with it: no hang at exit
    log = log_path.read_text()
    assert "savers failed" not in log and "fused group of 40 trials" in log
    assert "savers wrote 40 checkpoints" in log  # one batch, all through the savers
    trials = store.list_trials()
    assert len(trials) == 40 and all(t.state is TrialState.COMPLETED for t in trials)
    for t in trials:
        best = {c.kind: c for c in store.get_checkpoints(t.id)}["best"]
        saved = torch.load(best.path, weights_only=True)
        assert saved["step"] == best.step == t.best_step
        assert saved["model"]["0.weight"].shape == (16, 64)
    assert not list((ws / "checkpoints").glob(".rows-*"))


def test_a_batch_does_not_wait_for_savers_still_starting(tmp_path: Path) -> None:
    pool = SaverPool(2, tmp_path / "cp")
    pool.prewarm()
    try:
        assert not pool.ready  # spawning and importing torch takes a while
        store = open_store(tmp_path / ".tuneplay")
        writer = CheckpointWriter(store, pool)
        with writer.together():
            for i, (path, state) in enumerate(_jobs(tmp_path, 40)):
                writer.submit(i + 1, "best", i, path.parent / "best.pt", 0.5, state)
        writer.drain()
        assert pool.files_written == 0 and not pool.broken  # saved in-thread meanwhile
        assert len(list((tmp_path / "cp").glob("*/best.pt"))) == 40
    finally:
        pool.close()


def test_a_batch_calls_back_on_the_writers_thread_once_written_and_recorded(tmp_path: Path) -> None:
    """What a worker records a fused group's end with while it trains the next group."""
    import threading

    from engine.spec import parse_study
    from engine.workspace import launch_study

    store = open_store(tmp_path / ".tuneplay")
    launch_study(store, parse_study(
        '[study]\nname = "s"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 10\nbudget = 3\n'
        '[nuisance]\nlearning_rate = { low = 1e-3, high = 1e-2, scale = "log" }\n'
    ))
    assert [t.id for t in store.list_trials()] == [1, 2, 3]
    writer = CheckpointWriter(store)
    calls: list[tuple[bool, bool, int, bool]] = []

    def then(written: bool) -> None:
        on_disk = all((tmp_path / "cp" / str(i) / "best.pt").exists() for i in range(3))
        recorded = sum(len(store.get_checkpoints(i + 1)) for i in range(3))
        calls.append((written, on_disk, recorded, threading.current_thread().name == "checkpoint-writer"))

    with writer.together(then):
        for i, (path, state) in enumerate(_jobs(tmp_path, 3)):
            writer.submit(i + 1, "best", i, path.parent / "best.pt", 0.5, state)
    with writer.together(lambda written: calls.append((written, True, -1, True))):
        pass  # nothing to write: still called back, in order
    writer.drain()
    assert calls == [(True, True, 3, True), (True, True, -1, True)]


def test_the_engine_removes_half_written_files_of_killed_workers_only(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from engine.runner.checkpoint_writer import remove_orphans

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    live = str(os.getpid())
    cp = tmp_path / "checkpoints"
    (cp / "7").mkdir(parents=True)
    files = {
        cp / f".rows-{dead}-abc.bin": False, cp / f".rows-{live}-abc.bin": True,
        cp / "7" / f".best.pt.{dead}.1401.tmp": False, cp / "7" / f".latest.pt.{live}.1401.tmp": True,
        cp / "7" / "best.pt": True, cp / "7" / ".notes.txt": True,
    }
    for path in files:
        path.write_bytes(b"x")
    assert remove_orphans(cp) == 2
    assert {p: p.exists() for p in files} == files
