"""Opening study files of other workloads, the first screen of a fresh workspace, and
baseline edits that belong to one experiment (and can be discarded)."""

from __future__ import annotations

from pathlib import Path

from conftest import WORKSPACE
from fake_facade import FakeFacade
from textual.widgets import DataTable, Input
from tui_helpers import poll, screen_text, settle, toasts

ROOT = Path(__file__).resolve().parents[2]
CNN_STUDY = (ROOT / "studies" / "digits-cnn-width.toml").read_text()
MLP_STUDY = (ROOT / "studies" / "digits-mlp-lr.toml").read_text()


def flat(app) -> str:
    return " ".join(screen_text(app).split())


async def test_a_study_file_of_another_workload_keeps_its_own_rows(fake, app_factory,
                                                                    tmp_path: Path) -> None:
    path = tmp_path / "digits-cnn-width.toml"
    path.write_text(CNN_STUDY)
    app = app_factory(fake)  # its workspace holds a digits-mlp experiment, selected
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.open_study_file(str(path))
        await settle(pilot)
        assert app.current_mode == "design"
        table = app.screen.query_one("#design-table", DataTable)
        rows = [str(k.value) for k in table.rows]
        assert rows == ["channels", "learning_rate", "optimizer", "batch_size"]  # the file's
        text = flat(app)
        assert "✓ valid" in text and "does not accept" not in text
        assert 'study "digits-cnn-width" → new experiment digits-cnn (L creates it)' in text
        await pilot.press("L")
        await settle(pilot)
        await poll(pilot)
        exp = next((e for e in fake.store.experiments.values() if e.name == "digits-cnn"), None)
        assert exp is not None and exp.workload == "builtin:digits-cnn"
        study = fake.store.find_study("digits-cnn-width")
        assert "width" not in study.spec["base_config"]  # nothing of digits-mlp merged in
        assert app.current_mode == "running" and "digits-cnn · baseline v1" in screen_text(app)


async def test_opening_a_file_selects_the_experiment_it_launches_into(fake, app_factory,
                                                                       tmp_path: Path) -> None:
    other = fake.store.create_experiment("cnn", "builtin:digits-cnn")
    fake.store.add_baseline(other.id, {}, "val_error", "min", 300)
    path = tmp_path / "lr.toml"
    path.write_text(MLP_STUDY.replace('name = "digits-mlp-lr"', 'name = "lr-again"'))
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.follow_experiment(other.id)
        await settle(pilot)
        assert screen_text(app).splitlines()[0].startswith(" tuneplay   cnn ·")
        app.open_study_file(str(path))
        await settle(pilot)
        assert app.state.experiment().experiment.name == "digits-mlp"
        assert "→ experiment" not in flat(app) and "✓ valid" in flat(app)


async def test_a_file_naming_an_experiment_of_another_workload_says_so(fake, app_factory,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "clash.toml"
    path.write_text(CNN_STUDY.replace('budget = 12', 'budget = 12\nexperiment = "digits-mlp"'))
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.open_study_file(str(path))
        await settle(pilot)
        assert any("experiment 'digits-mlp' runs builtin:digits-mlp, not builtin:digits-cnn"
                   in t for t in toasts(app))
        assert "→ experiment digits-mlp runs builtin:digits-mlp" in flat(app)


async def test_the_first_screen_of_a_study_file_says_what_works_then_catches_up(
        app_factory, tmp_path: Path) -> None:
    path = tmp_path / "digits-mlp-lr.toml"
    path.write_text(MLP_STUDY)
    fake = FakeFacade(WORKSPACE, empty=True)
    app = app_factory(fake, study_file=str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = flat(app)
        assert app.current_mode == "design" and "No experiment yet" not in text
        assert "→ new experiment digits-mlp (L creates it)" in text
        await pilot.press("L")
        await settle(pilot)
        await poll(pilot)
        await pilot.press("2")
        await settle(pilot)
        text = flat(app)
        assert "digits-mlp · baseline v1" in text
        assert "new experiment" not in text and "No experiment yet" not in text


async def test_keys_before_any_experiment_leave_nothing_on_the_next_baseline(
        app_factory) -> None:
    fake = FakeFacade(WORKSPACE, empty=True)
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1", "o", "o")
        await settle(pilot)
        assert not app.screen.edits
        assert any("No experiment yet" in t for t in toasts(app))
        await pilot.press("h", "n")
        await pilot.pause()
        app.screen.query_one("#field-name", Input).value = "fresh"
        await pilot.press("ctrl+s")
        await settle(pilot)
        await poll(pilot)
        assert app.current_mode == "baseline"
        text = flat(app)
        assert "unsaved" not in text and "nesterov" not in text.split("to tune:")[0]
        assert app.screen.config()["optimizer"] == "adam"  # digits-mlp's default, untouched
        await pilot.press("s")
        await settle(pilot)
        assert not any(c[0] == "save_baseline" for c in fake.calls)


async def test_a_workload_without_an_optimizer_is_offered_none_and_edits_discard(
        fake, app_factory) -> None:
    exp = fake.create_experiment("script", "command:python train.py", {"lr": 0.1, "width": 64},
                                 "val_loss", "min", 100)
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.follow_experiment(exp.id)
        await pilot.press("1")
        await settle(pilot)
        await pilot.press("o")
        await settle(pilot)
        assert not app.screen.edits
        assert any("has no optimizer hyperparameter: nothing to cycle" in t for t in toasts(app))
        table = app.screen.query_one("#baseline-table", DataTable)
        table.move_cursor(row=table.get_row_index("lr"))
        table.focus()
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one(Input).value = "0.3"
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.edits == {"lr": 0.3}
        assert "x Discard" in screen_text(app)  # the footer offers it
        await pilot.press("r")
        assert any("or discard them (x)" in t for t in toasts(app))
        await pilot.press("x")
        await settle(pilot)
        assert not app.screen.edits
        assert "unsaved" not in str(app.screen.query_one("#base-summary").render())
        assert any("discarded 1 unsaved edit" in t for t in toasts(app))


async def test_the_probe_table_signs_a_loss_and_never_says_plus_minus(fake, app_factory) -> None:
    from engine.analysis import recommend_batch_size

    rows = [{"batch_size": b, "examples_per_s": v, "peak_mem_bytes": 1e8, "oom": False}
            for b, v in ((128, 1000.0), (256, 630.0), (512, 2500.0))]
    fake.probe_batch = lambda workload, max_batch=1024: recommend_batch_size(rows)
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("1", "b")
        await settle(pilot)
        text = screen_text(app)
        assert "  -37%" in text and "+-" not in text and "+297%" in text
        await pilot.press("b")  # a second probe of the same experiment runs again
        await settle(pilot)
        assert "  -37%" in screen_text(app)
