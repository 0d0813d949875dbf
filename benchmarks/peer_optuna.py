"""Peer benchmark: the same 32-trial study run by Optuna in-process and by tuneplay end to end.

The training function is tuneplay's digits MLP (300 steps, Adam); the search is 32
quasi-random points over learning rate and weight decay. Optuna runs in this process with
an in-memory study (QMCSampler, n_jobs=1). tuneplay runs `tuneplay run FILE --wait` on a
fresh workspace: engine start, worker processes, a durable SQLite workspace, checkpoints.
Target: tuneplay at most 1.5x Optuna's time; with both cores it should beat it.

Run: python benchmarks/peer_optuna.py   (needs `pip install optuna`, the `bench` extra)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NullTrial

STUDY = """\
[study]
name = "peer"
workload = "builtin:digits-mlp"
max_train_steps = 300
eval_every = 50
budget = 32
seed = 0
[fixed]
optimizer = "adam"
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
weight_decay  = { low = 1e-6, high = 1e-2, scale = "log" }
"""


def run_optuna() -> tuple[float, float]:
    import optuna

    t0 = time.perf_counter()
    from engine.workloads.builtin import BUILTINS
    from engine.workloads.digits import train_mlp

    defaults = {**BUILTINS["digits-mlp"].defaults(), "optimizer": "adam"}

    def objective(trial: optuna.Trial) -> float:
        hp = dict(defaults)
        hp["learning_rate"] = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        hp["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        t = NullTrial(300, 50, seed=trial.number)
        train_mlp(hp, t)
        return t.best if t.best is not None else 1.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(sampler=optuna.samplers.QMCSampler(qmc_type="halton", scramble=True, seed=0))
    study.optimize(objective, n_trials=32, n_jobs=1)
    return time.perf_counter() - t0, study.best_value


def run_tuneplay(slots: int) -> tuple[float, str]:
    project = Path(tempfile.mkdtemp())
    (project / "peer.toml").write_text(STUDY)
    env = {**os.environ, "TUNEPLAY_WORKSPACE": str(project / ".tuneplay")}
    cmd = [sys.executable, "-m", "tuneplay_tui.launcher"]
    t0 = time.perf_counter()
    out = subprocess.run([*cmd, "run", "peer.toml", "--wait", "--cpu-slots", str(slots)], cwd=project,
                         env=env, capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - t0
    subprocess.run([*cmd, "engine", "stop"], cwd=project, env=env, capture_output=True, check=True)
    return elapsed, out.strip().splitlines()[-1]


def main() -> None:
    ot, best = run_optuna()
    t2, line2 = run_tuneplay(2)
    t1, line1 = run_tuneplay(1)
    print("32 trials x 300 steps, digits MLP, quasi-random over learning rate and weight decay")
    print(f"  optuna in-process (QMCSampler, n_jobs=1): {ot:6.2f} s  best val_error {best:.4f}")
    print(f"  tuneplay run --wait, 2 CPU workers:       {t2:6.2f} s  ratio {t2 / ot:.2f}x  ({line2})")
    print(f"  tuneplay run --wait, 1 CPU worker:        {t1:6.2f} s  ratio {t1 / ot:.2f}x")
    print("  (tuneplay times include starting the engine and its workers from cold; target <= 1.5x)")


if __name__ == "__main__":
    main()
