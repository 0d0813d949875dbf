"""One trial number everywhere: ``status``, ``report`` and the trial controls all use the
store's trial id (``#19``), the number ``cancel|pause|requeue`` take; an id that names no
trial is one line and exit 2. No engine runs here: trials are finished through the store."""

from __future__ import annotations

from engine.store.base import TrialProgress, TrialState
from tests.conftest import ROOT, Project

STUDY = (ROOT / "studies" / "digits-mlp-lr.toml").read_text()


def two_studies(project: Project) -> int:
    """Two studies enqueued (16 trials each); one trial of the second finished with the best
    value. Its id (19) differs from its number within the study (2): returns the id."""
    project.write("a.toml", STUDY)
    project.write("b.toml", STUDY.replace('name = "digits-mlp-lr"', 'name = "second"'))
    for name in ("a.toml", "b.toml"):
        project.tuneplay("run", name, "--no-engine", check=True)
    store = project.store()
    second = store.find_study("second")
    trial = next(t for t in store.list_trials(second.id) if t.number == 2)
    claimed = store.claim_trials("w0", "cpu", limit=32, study_id=second.id)
    assert trial.id in {t.id for t in claimed}
    store.finish_trial(trial.id, TrialProgress(TrialState.COMPLETED, best_step=299,
                                               best_value=0.0125, steps_done=300, wall_time=3.0))
    for t in claimed:
        if t.id != trial.id:
            store.set_state([t.id], TrialState.QUEUED, only_from=[TrialState.RUNNING])
    store.close()
    return trial.id


def test_status_and_report_name_the_trial_by_the_id_cancel_takes(project: Project) -> None:
    tid = two_studies(project)
    status = project.tuneplay("status", check=True).stdout
    assert f"best val_error 0.0125 (#{tid})" in status and "(trial 2)" not in status
    report = project.tuneplay("report", "second", "--width", "80", check=True).stdout
    assert f"best val_error 0.0125 (#{tid}, step 299)" in report and "trial id" not in report
    cancelled = project.tuneplay("cancel", str(tid + 1), check=True)
    assert cancelled.stdout == f"cancel: 1 of 1 trials changed (#{tid + 1})\n"


def test_a_trial_id_that_names_no_trial_is_one_line_and_exit_2(project: Project) -> None:
    two_studies(project)
    for action in ("cancel", "pause", "requeue"):
        proc = project.tuneplay(action, "99999")
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("tuneplay: no such trial 99999 ")
        assert len(proc.stderr.splitlines()) == 1
    mixed = project.tuneplay("cancel", "20", "99998")
    assert mixed.returncode == 2 and "no such trial 99998 " in mixed.stderr
    store = project.store()
    assert store.get_trial(20).state == TrialState.QUEUED  # nothing changed
    store.close()
