"""5 Decision (reruns, verdict, adoption, log) and 1 Baseline (optimizer, batch, run)."""

from __future__ import annotations

from textual.widgets import DataTable
from tui_helpers import poll, screen_text, settle, toasts

from tuneplay_tui import format as fmt
from tuneplay_tui.screens.dialogs import ConfirmScreen, FormScreen


async def test_decision_shows_the_comparison_and_the_verdict(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        text = " ".join(screen_text(app).split())
        # what the screen must show is what the store recorded, not numbers copied from the fixture
        decision = finished_fake.store.list_decisions()[-1]
        c = decision.stats["comparison"]
        study = app.state.study()
        searched = [p["name"] for p in (*study.spec["scientific"], *study.spec["nuisance"])]
        assert f"candidate: {fmt.params_line(decision.candidate, searched)}" in text
        assert f"candidate {c['n_candidate']}/{c['n_candidate']} done · baseline {c['n_baseline']}/" in text
        spread = " ".join(fmt.with_spread(c["mean_candidate"], c["std_candidate"]).split())
        assert f"candidate {spread} ({c['n_candidate']} seeds)" in text
        assert decision.test.split(" (")[0] in text and f"p = {c['p_value']:.2g}" in text  # the line wraps
        assert f"verdict: ADOPT — {' '.join(decision.rationale.split()[:5])}" in text
        assert decision.verdict == "adopt" and "no new hyperparameters" in text
        log = app.screen.query_one("#decision-log", DataTable)
        assert log.row_count == 1 and str(log.get_cell("1", "when")) == "1d00h ago"


async def test_seed_reruns_that_never_vary_are_refused_and_the_screen_says_how_to_fix_it(
        finished_fake, app_factory) -> None:
    store = finished_fake.store
    for t in store.list_trials():  # a workload that ignores its seed: every seed alike
        if t.kind in ("rerun", "baseline"):
            store.update_trial(t.id, best_value=0.07 if t.kind == "rerun" else 0.15)
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5", "d")
        await settle(pilot)
        text = " ".join(screen_text(app).split())
        assert "candidate 0.07 ±0 (5 seeds)" in text and "baseline 0.15 ±0 (5 seeds)" in text
        assert "verdict: INCONCLUSIVE — Refused: all 5 candidate" in text
        assert "torch.manual_seed(trial.seed)), then rerun with new seeds." in text  # a Python workload
        assert "→ pass the seed to the workload (above), then r reruns with new seeds" in text
        assert "no test run: the candidate and baseline seed reruns are identical" in text
        assert "ADOPT" not in text and "r adds seeds" not in text
        assert any("verdict: INCONCLUSIVE — Refused: all 5 candidate and all 5 baseline seed reruns "
                   "gave exactly the same val_error (0.07 and 0.15), so the workload ignores its seed"
                   in t for t in toasts(app))


async def test_a_adopts_into_a_new_baseline(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5", "a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "baseline v3" in app.screen.question
        await pilot.press("y")
        await settle(pilot)
        await poll(pilot)
        assert ("decide", (2, True)) in finished_fake.calls
        text = screen_text(app)
        assert "baseline v3" in text  # the header follows the new baseline
        assert "adopted → baseline v3" in text
        assert any("baseline v3 is the new baseline" in t for t in toasts(app))
        # the same reruns were judged already: the log keeps one record of it
        assert app.screen.query_one("#decision-log", DataTable).row_count == 1


async def test_reruns_added_after_a_verdict_are_flagged_until_decided_again(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert "since this verdict" not in screen_text(app)
        await pilot.press("r")  # more seeds for the same study: the recorded verdict did not see them
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        await poll(pilot)
        text = " ".join(screen_text(app).split())
        assert "candidate 5/10 done · baseline 5/10 done" in text
        assert "new reruns since this verdict (10 still to run): d decides again" in text
        assert "verdict: ADOPT" in text  # the old verdict stays, flagged


async def test_rerun_then_decide_on_a_study_without_reruns(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert "No seed reruns yet" in screen_text(app)
        await pilot.press("d")  # nothing to compare yet: the engine says why
        await settle(pilot)
        assert any("decide failed" in t and "no seed reruns yet" in t for t in toasts(app))
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        await pilot.press("ctrl+s")
        await settle(pilot)
        await poll(pilot)
        assert ("rerun", (3, 1, 5)) in fake.calls
        assert "candidate 0/5 done · baseline 0/5 done" in screen_text(app)


async def test_baseline_shows_optimizer_batch_probe_and_chance(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        text = screen_text(app)
        assert "▸ momentum" in text and "learning_rate, momentum" in text
        assert "val_error 0.1518 vs chance 0.9 — beats chance ✓" in text
        await pilot.press("b")
        await settle(pilot)
        text = screen_text(app)
        assert "out of memory" in text and "◂ use" in text
        assert "use 128" in " ".join(text.split())


async def test_baseline_edits_are_saved_as_a_new_version_then_run(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        await pilot.press("o")  # momentum -> nesterov
        await pilot.pause()
        assert "1 unsaved edit: s saves them as v3 · x discards" in screen_text(app)
        await pilot.press("r")
        assert any("Save the edits first" in t for t in toasts(app))
        await pilot.press("s")
        await settle(pilot)
        await poll(pilot)
        assert fake.calls[-1][0] == "save_baseline"
        assert fake.calls[-1][1]["optimizer"] == "nesterov"
        assert "baseline v3" in screen_text(app)
        await pilot.press("r")
        await settle(pilot)
        assert ("run_baseline", 1) in fake.calls


async def test_a_bad_baseline_value_is_refused(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        table = app.screen.query_one("#baseline-table", DataTable)
        table.move_cursor(row=table.get_row_index("dropout"))
        table.focus()
        await pilot.press("e")
        await pilot.pause()
        from textual.widgets import Input

        app.screen.query_one(Input).value = "1.5"
        await pilot.press("enter")
        await settle(pilot)
        assert any("dropout: must be at most 1.0" in t for t in toasts(app))
        assert not app.screen.edits
