"""Per-step bookkeeping cost of the trial API (report + checkpoint + should_stop) vs a bare loop.

The same digits-MLP training function runs with a no-op trial and with the engine's real
TrialContext on a real SQLite workspace, side by side, alternating, several rounds. Prints
the time spent inside the trial API per training step (instrumented) and the end-to-end
difference. Target: at most 1% of a 1 ms step (10 us per step).

Run: python benchmarks/engine_overhead.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NullTrial, median

from engine.runner.context import TrialContext
from engine.runner.worker import configure_threads
from engine.store import open_store
from engine.store.base import NewTrial
from engine.workloads.builtin import BUILTINS
from engine.workloads.digits import train_mlp

STEPS, EVAL_EVERY, ROUNDS = 3000, 50, 5


class Timed(TrialContext):
    """TrialContext that adds up the time spent inside its API calls."""

    spent = 0.0

    def report(self, step, **m):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        super().report(step, **m)
        self.spent += time.perf_counter() - t

    def checkpoint(self, step, model=None, optimizer=None, **e):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        super().checkpoint(step, model, optimizer, **e)
        self.spent += time.perf_counter() - t

    def should_stop(self) -> bool:
        t = time.perf_counter()
        r = super().should_stop()
        self.spent += time.perf_counter() - t
        return r


def main() -> None:
    configure_threads(1)
    hp = {**BUILTINS["digits-mlp"].defaults(), "learning_rate": 1e-3}
    ws = Path(tempfile.mkdtemp()) / ".tuneplay"
    store = open_store(ws)
    exp = store.create_experiment("bench", "builtin:digits-mlp")
    study = store.create_study(exp.id, "bench", {"metric": "val_error"}, 0)
    train_mlp(hp, NullTrial(200, EVAL_EVERY))  # warm up
    bare, real, api = [], [], []
    for r in range(ROUNDS):
        t0 = time.perf_counter()
        train_mlp(hp, NullTrial(STEPS, EVAL_EVERY))
        bare.append(time.perf_counter() - t0)
        trial = store.add_trials(study.id, [NewTrial({}, seed=0, max_train_steps=STEPS)])[0]
        store.claim_trials("bench", "cpu")
        ctx = Timed(store, trial, "val_error", "min", EVAL_EVERY, ws / "checkpoints" / str(trial.id), "cpu")
        t0 = time.perf_counter()
        train_mlp(hp, ctx)
        ctx.finish()
        real.append(time.perf_counter() - t0)
        api.append(ctx.spent)
    step_ms = median(bare) / STEPS * 1e3
    api_us = median(api) / STEPS * 1e6
    print(f"digits-mlp, {STEPS} steps, eval+checkpoint every {EVAL_EVERY}, {ROUNDS} rounds (medians), 1 thread")
    print(f"  bare loop (no-op trial):       {median(bare):.3f} s  = {step_ms:.3f} ms/step")
    print(f"  with TrialContext + SQLite:    {median(real):.3f} s  (ratio {median(real) / median(bare):.3f})")
    print(f"  time inside the trial API:     {median(api) * 1e3:.1f} ms = {api_us:.2f} us/step "
          f"= {api_us / 10:.2f}% of a 1 ms step (target <= 1%)")


if __name__ == "__main__":
    main()
