"""A study finished by engines that a real (single-node, local) Slurm runs as array tasks,
serving a real PostgreSQL store: ``tuneplay launch slurm`` as a user would type it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
[study]
name = "onslurm"
workload = "builtin:digits-mlp"
max_train_steps = 40
eval_every = 20
budget = 4
fuse = "off"
seed = 0
[fixed]
optimizer = "adam"
[nuisance]
learning_rate = { low = 1e-3, high = 3e-2, scale = "log" }
"""


def test_a_study_is_finished_by_slurm_array_tasks_that_then_release_their_allocation(
    tmp_path: Path, pg_url: str, slurm_cluster: object,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNEPLAY_STORE": pg_url, "TUNEPLAY_CHECKPOINTS": str(shared)}
    env.pop("TUNEPLAY_WORKSPACE", None)

    def tuneplay(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tuneplay_tui.launcher", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"tuneplay {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    (tmp_path / "s.toml").write_text(STUDY)
    tuneplay("db", "init")
    assert "no engine host is serving" in tuneplay("run", "s.toml", "--no-engine")
    submitted = tuneplay("launch", "slurm", "--workers", "2", "--cpus-per-worker", "1",
                         "--exit-when-idle", "5", "--time", "00:10:00")
    assert "submitted job array" in submitted
    deadline = time.time() + 420
    trials = pd.DataFrame()
    while time.time() < deadline:
        trials = pd.read_csv(io.StringIO(tuneplay("export", "onslurm")))
        if len(trials) == 4 and trials["state"].isin(["COMPLETED", "FAILED", "DIVERGED"]).all():
            break
        time.sleep(2)
    assert (trials["state"] == "COMPLETED").all(), trials[["id", "state", "host", "error"]]
    assert trials["best_value"].max() < 0.9  # they learned (chance is 0.9)
    assert all("_" in h for h in trials["host"])  # <node>-<array job>_<task>
    # with nothing left to run, the engines exit and Slurm takes the allocation back
    while time.time() < deadline:
        queue = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip()
        if not queue:
            break
        time.sleep(1)
    assert not queue, queue
    assert "no engine host is serving" in tuneplay("status")
