"""Saver processes: a fused group's row checkpoints written in parallel, same bytes as in-thread."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from engine.runner.checkpoint_writer import CheckpointWriter
from engine.runner.saver import SaverPool, savers_for
from engine.store import open_store
from engine.workloads.rowstate import RowState, materialize

LAYOUT = (("0.weight", 0, 12, (3, 4)), ("0.bias", 12, 3, (3,)), ("2.weight", 15, 6, (2, 3)))


def _jobs(tmp_path: Path, n: int) -> list[tuple[Path, dict]]:
    a, b = torch.randn(n, 21), torch.randn(4, 21)
    return [
        (tmp_path / "cp" / str(i) / ".best.pt.tmp",
         {"step": i, "model": RowState(a if i % 5 else b, i if i % 5 else i % 4, LAYOUT),
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
    """The real worker process (``python -m engine.runner.worker``) spawning its savers."""
    import os
    import subprocess
    import sys

    from engine.spec import parse_study
    from engine.store.base import TrialState
    from engine.workspace import launch_study

    ws = tmp_path / ".tuneplay"
    store = open_store(ws)
    launch_study(store, parse_study(
        '[study]\nname = "big"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 20\n'
        'eval_every = 10\nbudget = 40\nfuse = 40\n[fixed]\nwidth = 16\n'
        '[nuisance]\nlearning_rate = { low = 1e-3, high = 1e-2, scale = "log" }\n'
    ))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "engine.runner.worker", "--workspace", str(ws), "--name", "w",
         "--device", "cpu", "--savers", "2", "--once"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "savers failed" not in out.stderr and "fused group of 40 trials" in out.stderr
    assert "savers wrote 40 checkpoints" in out.stderr  # one batch, all through the savers
    trials = store.list_trials()
    assert len(trials) == 40 and all(t.state is TrialState.COMPLETED for t in trials)
    for t in trials:
        best = {c.kind: c for c in store.get_checkpoints(t.id)}["best"]
        saved = torch.load(best.path, weights_only=True)
        assert saved["step"] == best.step == t.best_step
        assert saved["model"]["0.weight"].shape == (16, 64)
    assert not list((ws / "checkpoints").glob(".rows-*"))
