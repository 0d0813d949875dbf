"""Home screen, stage navigation, help, command palette and quitting."""

from __future__ import annotations

from fake_facade import FakeFacade
from textual.widgets import DataTable, Input
from tui_helpers import poll, screen_text, settle, toasts

from tuneplay_tui.screens.help import HelpScreen
from tuneplay_tui.state import STAGES
from tuneplay_tui.widgets.findings import FindingsList


async def test_home_lists_experiments_studies_and_decisions(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.current_mode == "home"
        table = app.screen.query_one("#workspace-table", DataTable)
        assert [str(k.value) for k in table.rows] == ["e1", "s1", "s2", "s3"]
        text = screen_text(app)
        assert "digits-mlp" in text and "wd-vs-none" in text and "wd-longer" in text
        assert "adopt" in text  # the latest decision
        assert 'study "wd-longer" (running 9/24 · ETA 14m)' in text  # the latest study is followed
        assert ("start_engine", None) in fake.calls


async def test_enter_on_a_finished_study_opens_its_analysis(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#workspace-table", DataTable)
        table.move_cursor(row=2)  # wd-vs-none
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_mode == "analysis"
        assert app.state.study_id == 2
        # its budget of 32, and the 10 seed reruns of the decision stage apart
        assert 'study "wd-vs-none" (finished 32/32 · reruns 10/10)' in screen_text(app)


async def test_number_keys_reach_every_stage_and_the_header_follows(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key, stage in zip("12345", STAGES):
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == stage
            assert "engine ● 2 GPUs · 4 slots" in screen_text(app)
        await pilot.press("h")
        assert app.current_mode == "home"


async def test_4_on_a_finished_workspace_goes_straight_to_its_analysis(finished_fake,
                                                                      app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        assert "learning_rate: 3 of the top 4" in screen_text(app)
        first = app.screen.query_one(FindingsList).current()
        assert first.kind == "boundary" and "top 10% of its range" in first.message


async def test_help_explains_the_playbook_idea_of_each_screen(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key, words in (("4", "edge of the range"), ("2", "scientific"),
                           ("5", "winner's curse"), ("3", "Diverged")):
            await pilot.press(key, "question_mark")
            await settle(pilot)
            assert isinstance(app.screen, HelpScreen)
            assert words in app.screen.text
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_runs_a_screen_action(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        app.screen.query_one(Input).value = "Analysis: View"
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_mode == "analysis"
        assert app.screen.view == "isolation"  # cycled from the default "curves"


async def test_q_quits_and_says_the_engine_keeps_running(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value is not None
    assert "the engine keeps running 14 trials in the background" in app.return_value
    assert "tuneplay engine stop" in app.return_value


async def test_unreachable_engine_is_a_notification_not_a_crash(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        fake.unreachable = True
        await poll(pilot)
        assert any("cannot read the workspace" in t for t in toasts(app))
        assert "engine ✗ unreachable" in screen_text(app)
        fake.unreachable = False
        await poll(pilot)
        assert "engine ● 2 GPUs" in screen_text(app)


async def test_new_experiment_from_a_builtin_workload(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#field-name", Input).value = "cnn-widths"
        app.screen.query_one("#field-workload", Input).value = "builtin:digits-cnn"
        await pilot.press("ctrl+s")
        await settle(pilot)
        await poll(pilot)
        assert ("create_experiment", "cnn-widths") in fake.calls
        assert app.current_mode == "baseline"
        assert "cnn-widths" in screen_text(app)


async def test_new_experiment_with_a_bad_workload_is_refused(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#field-name", Input).value = "x"
        app.screen.query_one("#field-workload", Input).value = "train.py"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert any("neither builtin:NAME" in t for t in toasts(app))
        assert not any(c[0] == "create_experiment" for c in fake.calls)


async def test_an_empty_workspace_says_what_to_do(app_factory) -> None:
    app = app_factory(FakeFacade("/tmp/tuneplay-fake/.tuneplay", empty=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "No experiments in this workspace yet" in text
        await pilot.press("4")
        await settle(pilot)
        assert "No study to analyse yet" in screen_text(app)
