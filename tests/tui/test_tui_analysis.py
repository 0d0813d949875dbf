"""4 Analysis: findings, the plots that follow them, and the trials behind them."""

from __future__ import annotations

from textual.widgets import DataTable
from tui_helpers import screen_text, settle

from engine.store import TrialState
from tuneplay_tui import format as fmt
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.findings import FindingsList
from tuneplay_tui.widgets.trial_table import TrialTable


async def open_analysis(pilot) -> FindingsList:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    return pilot.app.screen.query_one(FindingsList)


async def test_boundary_finding_first_and_its_axis_plot_beside_it(finished_fake,
                                                                 app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        findings = await open_analysis(pilot)
        kinds = [f.kind for f in findings.findings]
        assert kinds[:2] == ["boundary", "boundary"]
        assert {"overfitting", "isolation", "infeasible_fraction", "best_checkpoint_late"} <= set(kinds)
        axis = app.screen.query_one("#axis-chart", Chart)
        assert "axis plot: learning_rate (log" in str(axis.border_title)
        text = screen_text(app)
        trials = finished_fake.store.list_trials(app.state.study().id)
        search = [t for t in trials if t.kind == "search"]
        results = [t for t in search if t.best_value is not None and t.state == TrialState.COMPLETED]
        best = min(results, key=lambda t: t.best_value)
        assert (f"{len(search)} trials + {len(trials) - len(search)} reruns · {len(results)} results · "
                f"best val_error {fmt.value(best.best_value)} (#{best.id})") in text
        assert "1 infeasible (3%)" in text  # of the 32 search trials; reruns do not dilute it


async def test_enter_on_a_finding_lists_the_trials_behind_it(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        findings = await open_analysis(pilot)
        finding = findings.current()
        findings.focus()
        await pilot.press("enter")
        await pilot.pause()
        table = app.screen.query_one("#finding-trials", DataTable)
        assert app.focused is table
        listed = [int(str(k.value)) for k in table.rows]
        assert listed == list(finding.trial_ids) == [9, 25, 33, 24]
        assert "trials behind: boundary (4)" in str(table.border_title)
        # enter on a trial opens it on the running screen, cursor on it, curves drawn
        await pilot.press("down", "enter")
        await settle(pilot)
        assert app.current_mode == "running"
        assert app.screen.query_one(TrialTable).selected_id() == 25
        assert "trial #25" in str(app.screen.query_one("#run-chart", Chart).border_title)


async def test_brackets_cycle_the_axis_plot(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_analysis(pilot)
        axis = app.screen.query_one("#axis-chart", Chart)
        await pilot.press("right_square_bracket")
        assert "axis plot: momentum (linear" in str(axis.border_title)
        await pilot.press("right_square_bracket")
        assert "axis plot: weight_decay (categorical, scientific)" in str(axis.border_title)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert "learning_rate" in str(axis.border_title)


async def test_the_plots_follow_the_selected_finding(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        findings = await open_analysis(pilot)
        findings.focus()
        await pilot.press("down")
        axis = app.screen.query_one("#axis-chart", Chart)
        assert "axis plot: momentum" in str(axis.border_title)  # the second boundary finding
        await pilot.press("down")  # trial 9: overfitting
        assert findings.current().kind == "overfitting"
        assert app.screen.view == "curves"
        detail = app.screen.query_one("#detail-chart", Chart)
        assert "━" in str(detail.border_subtitle) and "#9" in str(detail.border_subtitle)
        assert findings.select_kind("isolation")
        await pilot.pause()
        assert app.screen.view == "isolation"
        assert "isolation: weight_decay" in screen_text(app)
        assert findings.select_kind("best_checkpoint_late")
        await pilot.pause()
        assert "try max_train_steps ≈ 600" in screen_text(app)


async def test_v_cycles_the_detail_view(finished_fake, app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_analysis(pilot)
        seen = []
        for _ in range(4):
            await pilot.press("v")
            seen.append(app.screen.view)
        assert seen == ["isolation", "checkpoints", "budget", "curves"]


async def test_a_running_study_is_analysed_too_and_updates(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        findings = await open_analysis(pilot)
        assert app.screen.report.study == "wd-longer"
        assert any(f.kind == "infeasible_fraction" and f.severity == "warn"
                   for f in findings.findings)
        before = app.screen.report.n_feasible
        fake.tick(12)  # the running trials finish
        app.poller.request()
        await settle(pilot)
        assert app.screen.report.n_feasible > before
