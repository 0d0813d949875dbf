"""How long does analysing a large study take?

A synthetic study of 10,000 trials x 200 eval points x 3 metrics (train_loss, val_loss,
val_error: 6,000,000 curve rows). Times ``analyze_study`` (median of 5 runs; target: under
1 s) and, for scale, building the two frames from what a store hands back (Trial objects and
metric columns as Python lists), and prints both and their ratio.

Run: python benchmarks/analysis_bench.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from engine.analysis import analyze_study, curves_frame_from_columns, report_to_dict, trials_frame
from engine.space import ChoiceParam, RangeParam
from engine.spec import StudySpec
from engine.store.base import Trial, TrialState

N_TRIALS, N_EVALS, MAX_STEPS = 10_000, 200, 20_000
METRICS = ("train_loss", "val_loss", "val_error")
RUNS = 5

SPEC = StudySpec(
    name="bench", workload="builtin:digits-mlp", metric="val_error", mode="min",
    max_train_steps=MAX_STEPS, eval_every=MAX_STEPS // N_EVALS, budget=N_TRIALS,
    scientific=(ChoiceParam("activation", ("relu", "gelu", "tanh")),),
    nuisance=(RangeParam("learning_rate", 1e-4, 1.0, "log"),
              RangeParam("weight_decay", 1e-6, 1e-2, "log"),
              RangeParam("dropout", 0.0, 0.5, "linear"),
              RangeParam("num_layers", 1, 6, "int")),
)


def build_study(seed: int = 0) -> tuple[list[Trial], dict[str, list]]:
    """Trial objects and metric columns (as Python lists, like a database fetch)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(size=(N_TRIALS, 4))
    lr = 1e-4 * 10 ** (4 * u[:, 0])
    act = rng.integers(0, 3, N_TRIALS)
    # the optimum: lr near 0.03, little dropout; bad far from it; diverges at the top of lr
    quality = (np.log10(lr) + 1.5) ** 2 + 0.5 * u[:, 2] + 0.05 * act + rng.normal(0, 0.05, N_TRIALS)
    final = 0.02 + 0.05 * quality
    diverged = (u[:, 0] > 0.93) & (rng.uniform(size=N_TRIALS) < 0.7)
    failed = rng.uniform(size=N_TRIALS) < 0.02
    steps = np.linspace(0, MAX_STEPS - 1, N_EVALS).round().astype(np.int64)
    x = steps / MAX_STEPS
    tau = rng.uniform(3, 12, N_TRIALS)[:, None]
    val = final[:, None] + 0.9 * np.exp(-tau * x) + rng.normal(0, 0.003, (N_TRIALS, N_EVALS))
    best_idx = val.argmin(axis=1)
    trials = []
    for i in range(N_TRIALS):
        state = (TrialState.DIVERGED if diverged[i] else TrialState.FAILED if failed[i]
                 else TrialState.COMPLETED)
        ok = state is TrialState.COMPLETED
        params = {"activation": ("relu", "gelu", "tanh")[act[i]], "learning_rate": float(lr[i]),
                  "weight_decay": float(1e-6 * 10 ** (4 * u[i, 1])),
                  "dropout": float(0.5 * u[i, 2]),
                  "num_layers": int(1 + round(5 * u[i, 3]))}
        trials.append(Trial(
            id=i + 1, study_id=1, number=i, params=params, seed=0, state=state, attempt=1,
            point_index=i, kind="search", max_train_steps=MAX_STEPS, created_at=0.0,
            best_step=int(steps[best_idx[i]]) if ok else None,
            best_value=float(val[i, best_idx[i]]) if ok else None, steps_done=MAX_STEPS,
            wall_time=60.0, error="" if state is not TrialState.FAILED else "RuntimeError: boom"))
    train = val - 0.05
    error = np.clip(val * 0.8, 0, 1)
    ids = np.repeat(np.arange(1, N_TRIALS + 1), N_EVALS)
    columns: dict[str, list] = {"trial_id": [], "step": [], "metric": [], "value": []}
    for name, block in zip(METRICS, (train, val, error)):
        columns["trial_id"] += ids.tolist()
        columns["step"] += np.tile(steps, N_TRIALS).tolist()
        columns["metric"] += [name] * ids.size
        columns["value"] += block.ravel().tolist()
    return trials, columns


def timed(fn, runs: int = RUNS) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    trials, columns = build_study()
    n_rows = len(columns["value"])
    build_s, frames = timed(lambda: (trials_frame(trials), curves_frame_from_columns(
        columns["trial_id"], columns["step"], columns["metric"], columns["value"])), runs=3)
    trials_df, curves_df = frames  # type: ignore[misc]
    analyze_study(SPEC, trials_df, curves_df)  # warm-up (imports, caches)
    analysis_s, report = timed(lambda: analyze_study(SPEC, trials_df, curves_df))
    json_s, _ = timed(lambda: report_to_dict(report), runs=3)  # type: ignore[arg-type]
    print(f"study: {N_TRIALS} trials x {N_EVALS} evals x {len(METRICS)} metrics "
          f"= {n_rows:,} curve rows")
    print(f"build frames (trials_frame + curves_frame_from_columns): {build_s:.3f} s (median of 3)")
    print(f"analyze_study: {analysis_s:.3f} s (median of {RUNS}; target < 1 s)")
    print(f"report_to_dict: {json_s:.3f} s (median of 3)")
    print(f"ratio analysis / build: {analysis_s / build_s:.2f}")
    print(f"findings: {len(report.findings)} "  # type: ignore[attr-defined]
          f"({sum(f.severity == 'warn' for f in report.findings)} warn)")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
