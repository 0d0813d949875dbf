"""The story the fake workspace tells, built by replaying it through the fake facade.

Day 0: experiment ``digits-mlp`` with baseline v1 (Adam defaults), then v2 (momentum,
cosine decay) and its baseline run. Day 1: study ``wd-vs-none`` (32 trials) finishes.
Day 1.5: the best configuration and the baseline are rerun with 5 seeds; day 2: the
decision (adopt) is recorded. Day 3 (optional): study ``wd-longer`` is under way, with
trials done, diverged, failed, running, paused, cancelled and queued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import fake_data as fd

from engine.decisions import decide, plan_reruns
from engine.store.base import TrialState

if TYPE_CHECKING:
    from fake_facade import FakeFacade

S = TrialState
FAILED_ERROR = "worker exited with code -9 (killed: out of memory?); see .tuneplay/logs/trial-52.log"


def build(fake: FakeFacade, running: bool) -> None:
    store = fake.store
    fake.now = fd.T0
    exp = store.create_experiment("digits-mlp", "builtin:digits-mlp")
    store.add_baseline(exp.id, fd.BASELINE_V1, "val_error", "min", 400, "workload defaults")
    fake.now = fd.T0 + 5 * 3600
    store.add_baseline(exp.id, fd.BASELINE_V2, "val_error", "min", 400,
                       "momentum with cosine decay, learning rate tuned by hand")
    fake.now = fd.T0 + 6 * 3600
    finish_all(fake, fake.run_baseline(exp.id).id)
    fake.now = fd.T0 + 86400
    study = fake.launch_text(fd.WD_STUDY, "studies/wd-vs-none.toml")
    finish_all(fake, study.id)
    fake.now = fd.T0 + 1.5 * 86400
    plan_reruns(store, store.studies[study.id], best_k=1, seeds=5)
    finish_all(fake, study.id)
    fake.now = fd.T0 + 2 * 86400
    decide(store, store.studies[study.id])
    if running:
        fake.now = fd.NOW - 3600
        build_running(fake)
    fake.calls.clear()


def finish_all(fake: FakeFacade, study_id: int) -> None:
    """Run every queued trial of a study to its end, alternating the two GPUs."""
    for i, t in enumerate(sorted(fake.store.list_trials(study_id, [S.QUEUED]), key=lambda t: t.id)):
        start(fake, t.id, GPU[i % 2], fake.now + 60.0 * i)
        fake._advance(fake.store.trial_rows[t.id], t.max_train_steps)


GPU = ("gpu0.0", "gpu1.0")


def start(fake: FakeFacade, trial_id: int, slot: str, at: float, steps: int = 0) -> None:
    fake.store.update_trial(trial_id, state=S.RUNNING, worker=slot, device=slot.split(".")[0],
                            started_at=at - steps / fd.STEPS_PER_SECOND, heartbeat_at=at,
                            attempt=1)


def build_running(fake: FakeFacade) -> None:
    study = fake.launch_text(fd.LONGER_STUDY, "studies/wd-longer.toml")
    trials = sorted(fake.store.list_trials(study.id), key=lambda t: t.number)
    for t in trials[:6]:
        start(fake, t.id, GPU[t.number % 2], fake.now - 1800 + 200 * t.number)
        fake._advance(fake.store.trial_rows[t.id], t.max_train_steps)
    failed = trials[6]
    start(fake, failed.id, "gpu1.0", fake.now - 600)
    fake._advance(fake.store.trial_rows[failed.id], 75)
    fake.store.update_trial(failed.id, state=S.FAILED, error=FAILED_ERROR,
                            finished_at=fake.now - 300)
    fake.now = fd.NOW
    for slot, t, steps in zip(fake.slots, trials[7:11], (100, 225, 350, 475)):
        start(fake, t.id, slot, fake.now, steps)
        fake._advance(fake.store.trial_rows[t.id], steps)
    paused, cancelled = trials[11], trials[12]
    start(fake, paused.id, "gpu0.0", fake.now - 900, 200)
    fake._advance(fake.store.trial_rows[paused.id], 200)
    fake.store.update_trial(paused.id, state=S.PAUSED, worker="")
    start(fake, cancelled.id, "gpu0.1", fake.now - 1200, 50)
    fake._advance(fake.store.trial_rows[cancelled.id], 50)
    fake.store.update_trial(cancelled.id, state=S.CANCELLED, worker="",
                            finished_at=fake.now - 1100)
