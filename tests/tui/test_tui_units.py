"""The app's pure parts: the design model, coalescing messages, formatting, stage marks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fake_facade import FakeFacade

from engine.spec import parse_study
from engine.workloads.builtin import BUILTINS
from tuneplay_tui import format as fmt
from tuneplay_tui.app import parse_args
from tuneplay_tui.design_model import DesignError, DesignModel
from tuneplay_tui.messages import PreviewReady, WorkspacePolled
from tuneplay_tui.state import AppState

INFO = BUILTINS["digits-mlp"]


def model(fake: FakeFacade) -> DesignModel:
    return DesignModel.from_dict(fake.baseline_design(1), INFO)


def test_design_model_renders_a_study_file_the_engine_accepts(fake) -> None:
    m = model(fake)
    m.cycle_role("weight_decay")
    m.cycle_role("weight_decay")
    m.set_text("learning_rate", "1e-4 .. 1")
    spec = parse_study(m.to_toml(), "studies/x.toml")
    assert [p.name for p in spec.scientific] == ["weight_decay"]
    assert spec.param("learning_rate").low == 1e-4
    assert DesignModel.from_text(m.to_toml(), INFO).to_toml() == m.to_toml()


def test_design_model_refuses_what_it_cannot_parse(fake) -> None:
    m = model(fake)
    with pytest.raises(DesignError, match="'abc' is not a number"):
        m.set_text("learning_rate", "abc .. 1")
    with pytest.raises(DesignError, match="low .. high"):
        m.set_text("learning_rate", "0.1")
    with pytest.raises(DesignError, match="is fixed"):
        m.cycle_scale("width")


def test_allocation_hint_splits_the_budget(fake) -> None:
    m = model(fake)
    assert m.allocation_hint().startswith("16 trials · 8.0 points per nuisance dim (2)")
    m.set_role("activation", "scientific")
    m.study["budget"] = 40
    assert m.allocation_hint().startswith("40 trials = 20 points × 2 scientific values")


def test_poll_messages_coalesce() -> None:
    a, b = WorkspacePolled(None), WorkspacePolled(None)
    assert b.can_replace(a)
    assert not PreviewReady("x").can_replace(a)


def test_formatting() -> None:
    assert fmt.duration(200) == "3m20s" and fmt.duration(3 * 3600 + 300) == "3h05m"
    assert fmt.duration(86400) == "1d00h" and fmt.duration(None) == "—"
    assert fmt.bar(0.5, 4) == "██  " and len(fmt.bar(0.33, 6)) == 6
    assert fmt.value(1e-4) == "1.00e-04" and fmt.value(float("nan")) == "nan"


def test_stage_marks_follow_the_latest_study(fake, finished_fake) -> None:
    state = AppState()
    state.apply_snapshot(fake.snapshot())
    assert state.study().name == "wd-longer"
    assert state.stage_marks()["running"] == "●"
    state.apply_snapshot(finished_fake.snapshot())
    assert state.study().name == "wd-vs-none"
    assert state.stage_marks() == {"baseline": "✓", "design": "✓", "running": "✓",
                                   "analysis": "✓", "decision": "✓"}


def test_command_line() -> None:
    opts = parse_args(["--workspace", "/tmp/ws", "studies/a.toml"])
    assert opts.workspace == "/tmp/ws" and opts.file == "studies/a.toml"


def test_importing_the_package_does_not_import_textual() -> None:
    code = "import sys, tuneplay_tui, tuneplay_tui.launcher; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_all_cancelled_study_reads_cancelled_with_nothing_to_analyse(finished_fake) -> None:
    from dataclasses import replace

    snap = finished_fake.snapshot()
    state = AppState()
    state.apply_snapshot(snap)
    chosen = state.study_summary()
    cancelled = replace(chosen, counts={"CANCELLED": chosen.total}, reruns=(0, 0), best_value=None,
                        best_trial_id=None)
    experiments = tuple(replace(e, studies=tuple(cancelled if s.study.id == chosen.study.id else s
                                                 for s in e.studies)) for e in snap.experiments)
    state.apply_snapshot(replace(snap, experiments=experiments))
    assert state.study_status() == f"cancelled {chosen.total}/{chosen.total}"
    marks = state.stage_marks()
    assert marks["running"] == "✓" and marks["analysis"] == ""
