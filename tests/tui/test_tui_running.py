"""3 Running: the live table, trial controls, live updates and failures."""

from __future__ import annotations

from textual.widgets import Input
from tui_helpers import poll, screen_text, settle, toasts

from engine.store.base import TrialState
from tuneplay_tui.screens.dialogs import ConfirmScreen
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.trial_table import TrialTable


def cell(table: TrialTable, trial_id: int, column: str) -> str:
    return table.cell_text(trial_id, column)


async def open_running(pilot) -> TrialTable:
    await settle(pilot)
    await pilot.press("3")
    await settle(pilot)
    return pilot.app.screen.query_one(TrialTable)


async def test_running_table_shows_every_trial_with_state_progress_and_device(fake,
                                                                             app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        assert table.row_count == 24
        assert cell(table, 46, "state").strip() == "diverged"
        assert cell(table, 46, "best") == "nan@75"
        assert cell(table, 50, "state").strip() == "failed"
        assert cell(table, 51, "state").strip() == "running"
        assert cell(table, 51, "progress").endswith("100/600")
        assert cell(table, 51, "dev") == "gpu0"
        assert cell(table, 51, "eta") == "3m20s"  # 500 steps left at 2.5 steps/s
        assert cell(table, 67, "state").strip() == "queued"
        text = screen_text(app)
        assert "3 running · 5 done · 2 diverged · 1 failed · 1 paused" in text
        assert "val_error · best 5" in text
        assert "gpu0" in text and "GB" in text  # device utilisation


async def test_c_cancels_the_selected_trial_through_the_facade(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        assert table.select_trial(52)
        await pilot.press("c")
        await settle(pilot)
        await poll(pilot)
        assert ("cancel", (52,)) in fake.calls
        assert cell(table, 52, "state").strip() == "cancelled"
        assert any("cancel: 1 trial (#52)" in t for t in toasts(app))


async def test_pause_and_requeue(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        table.select_trial(53)
        await pilot.press("p")
        await settle(pilot)
        await poll(pilot)
        assert cell(table, 53, "state").strip() == "paused"
        await pilot.press("r")
        await settle(pilot)
        await poll(pilot)
        assert ("requeue", (53,)) in fake.calls
        assert cell(table, 53, "state").strip() == "queued"


async def test_marking_several_trials_asks_before_cancelling_them(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        table.select_trial(60)
        await pilot.press("space", "space")  # marks 60 and 61 (the cursor moves down)
        assert table.marked == {60, 61}
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert ("cancel", (60, 61)) in fake.calls


async def test_ticks_update_cells_in_place(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        rows_before = table.row_ids
        fake.tick()
        await poll(pilot)
        assert table.row_ids == rows_before  # no rebuild, same order
        assert cell(table, 51, "progress").endswith("125/600")
        assert cell(table, 53, "progress").endswith("375/600")


async def test_a_trial_that_fails_is_announced(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        fake.store.update_trial(53, state=TrialState.FAILED, error="CUDA error: out of memory")
        await poll(pilot)
        assert any("#53 failed at step 350: CUDA error: out of memory" in t for t in toasts(app))
        table.select_trial(53)
        await pilot.pause()
        assert "#53 failed: CUDA error: out of memory" in screen_text(app)


async def test_filter_cycles_through_active_finished_and_problems(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        await pilot.press("slash")
        assert table.filter == "active" and table.row_count == 3 + 1 + 11
        await pilot.press("slash", "slash")
        assert table.filter == "problems" and table.row_count == 3
        await pilot.press("slash")
        assert table.filter == "all" and table.row_count == 24


async def test_add_trials_asks_how_many_points(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        await pilot.press("plus")
        await pilot.pause()
        app.screen.query_one(Input).value = "2"
        await pilot.press("enter")
        await settle(pilot)
        await poll(pilot)
        assert ("add_trials", (3, 2)) in fake.calls
        assert table.row_count == 28  # 2 points x 2 weight_decay values


async def test_enter_on_a_row_draws_that_trials_curves(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        table.select_trial(53)
        table.focus()
        await pilot.press("enter")
        await settle(pilot)
        chart = app.screen.query_one("#run-chart", Chart)
        assert "trial #53" in str(chart.border_title)
        assert 53 in app.state.curves
        await pilot.press("f")
        assert "best 5" in str(chart.border_title)


TRACEBACK = ["step 300: val loss 0.41", "Traceback (most recent call last):",
             '  File "train.py", line 88, in <module>', "    loss.backward()",
             "RuntimeError: CUDA error: an illegal memory access was encountered"]


async def test_a_failed_trial_shows_the_tail_of_its_output_under_its_error(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_running(pilot)
        fake.outputs[53] = ["--- never shown: older lines", *TRACEBACK]
        fake.store.update_trial(53, state=TrialState.FAILED,
                                error="exited with code 1: RuntimeError: CUDA error "
                                      "(log: .tuneplay/checkpoints/53/output.log)")
        await poll(pilot)
        table.select_trial(53)
        await settle(pilot)
        text = screen_text(app)
        assert "#53 failed: exited with code 1: RuntimeError: CUDA error" in text
        assert "#53 output.log · last 5 lines" in text
        rows = text.splitlines()
        at = next(i for i, row in enumerate(rows) if "step 300: val loss 0.41" in row)
        assert [r.strip() for r in rows[at:at + 5]] == [line.strip() for line in TRACEBACK]
        assert "never shown" not in text
        await poll(pilot)
        assert fake.calls.count(("output_tail", 53)) == 1  # read once per attempt, not per poll

        table.select_trial(50)  # failed too, but its workload printed nothing tuneplay reads
        await settle(pilot)
        text = screen_text(app)
        assert "#50 failed: worker exited with code -9" in text
        assert "output.log · last" not in text and "step 300" not in text
