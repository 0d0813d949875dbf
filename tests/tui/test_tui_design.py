"""2 Study design: roles, ranges, validation, preview, saving and launching."""

from __future__ import annotations

from pathlib import Path

import fake_data as fd
from fake_facade import FakeFacade
from textual.widgets import DataTable, Input
from tui_helpers import poll, screen_text, settle, toasts

from tuneplay_tui.widgets.charts import Chart


async def open_design(pilot) -> DataTable:
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)
    table = pilot.app.screen.query_one("#design-table", DataTable)
    table.focus()
    return table


def goto(table: DataTable, name: str) -> None:
    table.move_cursor(row=table.get_row_index(name))


def preview_title(app) -> str:
    return str(app.screen.query_one("#preview-chart", Chart).border_title)


async def edit(pilot, table: DataTable, name: str, text: str) -> None:
    goto(table, name)
    await pilot.press("e")
    await pilot.pause()
    pilot.app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await settle(pilot)


async def test_every_hyperparameter_is_in_the_table_with_a_role(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_design(pilot)
        names = [str(k.value) for k in table.rows]
        assert len(names) == 16 and {"learning_rate", "momentum", "width", "dropout"} <= set(names)
        assert str(table.get_cell("learning_rate", "role")) == "nuisance"
        assert str(table.get_cell("width", "role")) == "fixed"
        assert preview_title(app) == "preview: 16 trials · learning_rate × momentum"
        text = screen_text(app)
        assert "✓ valid" in text and "studies/digits-mlp-4.toml" in text
        assert "8.0 points per nuisance dim (2)" in text  # the allocation hint


async def test_cycling_a_role_updates_the_preview(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_design(pilot)
        goto(table, "weight_decay")
        await pilot.press("space")  # fixed -> nuisance
        await settle(pilot)
        assert str(table.get_cell("weight_decay", "role")) == "nuisance"
        assert "v: 3 pairs" in str(app.screen.query_one("#preview-chart", Chart).border_subtitle)
        await pilot.press("space")  # nuisance -> scientific: compare 0 with 1e-4
        await settle(pilot)
        assert str(table.get_cell("weight_decay", "range")) == "{0, 1.00e-04}"
        assert preview_title(app) == ("preview: 16 trials · learning_rate × momentum · "
                                      "each with weight_decay × 2")
        assert "16 trials = 8 points × 2 scientific values" in screen_text(app)


async def test_a_bad_range_is_shown_inline_and_nothing_is_saved(fake, app_factory,
                                                                tmp_path: Path) -> None:
    fake.workspace = tmp_path / ".tuneplay"
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_design(pilot)
        await edit(pilot, table, "learning_rate", "1 .. 0.001")
        text = screen_text(app)
        assert "✗" in text and "learning_rate: low (1) must be below high (0.001)" in text
        assert "learning_rate ✗" in str(table.get_cell("learning_rate", "name"))
        await pilot.press("L")
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert any("Not saved" in t for t in toasts(app))
        assert not fake.saved and not any(c[0] == "save_and_launch" for c in fake.calls)
        assert not (tmp_path / "studies").exists()


async def test_a_value_that_is_not_a_number_is_refused(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_design(pilot)
        await edit(pilot, table, "learning_rate", "abc .. 1")
        assert any("learning_rate: 'abc' is not a number" in t for t in toasts(app))
        assert str(table.get_cell("learning_rate", "range")) == "0.001 .. 0.1"


async def test_scale_search_and_budget_keys(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_design(pilot)
        goto(table, "momentum")
        await pilot.press("l")
        assert str(table.get_cell("momentum", "scale")) == "log"
        await pilot.press("m", "plus")
        await settle(pilot)
        model = app.screen.model
        assert model.study["search"] == "bayesian" and model.study["budget"] == 20
        assert "Bayesian: for exploitation" in " ".join(screen_text(app).split())


async def test_w_saves_the_study_file_under_studies(fake, app_factory, tmp_path: Path) -> None:
    fake.workspace = tmp_path / ".tuneplay"
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_design(pilot)
        await pilot.press("w")
        await settle(pilot)
        saved = tmp_path / "studies" / "digits-mlp-4.toml"
        assert saved.exists()
        assert fake.validate_study_text(saved.read_text(), str(saved)).name == "digits-mlp-4"


async def test_L_launches_and_follows_the_new_study(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_design(pilot)
        await pilot.press("L")
        await settle(pilot)
        await poll(pilot)
        assert any(c[0] == "save_and_launch" for c in fake.calls)
        assert app.current_mode == "running"
        assert 'study "digits-mlp-4" (queued 0/16)' in screen_text(app)


async def test_opening_a_new_study_file_reviews_it_in_design(fake, app_factory,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "wd-again.toml"
    path.write_text(fd.WD_STUDY.replace('"wd-vs-none"', '"wd-again"'))
    app = app_factory(fake, study_file=str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await settle(pilot)
        assert app.current_mode == "design"
        assert app.screen.model.study["name"] == "wd-again"
        assert str(app.screen.query_one("#design-table", DataTable).get_cell(
            "weight_decay", "role")) == "scientific"


async def test_opening_a_launched_study_file_goes_to_that_study(app_factory,
                                                               tmp_path: Path) -> None:
    fake = FakeFacade("/tmp/tuneplay-fake/.tuneplay")
    path = tmp_path / "wd-vs-none.toml"
    path.write_text(fd.WD_STUDY)
    app = app_factory(fake, study_file=str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await settle(pilot)
        assert app.current_mode == "analysis"
        assert app.state.study_id == 2


async def test_launching_an_opened_file_unchanged_keeps_the_file(fake, app_factory,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "wd-again.toml"
    original = "# my notes\n" + fd.WD_STUDY.replace('"wd-vs-none"', '"wd-again"')
    path.write_text(original)
    app = app_factory(fake, study_file=str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await settle(pilot)
        await pilot.press("L")
        await settle(pilot)
        assert ("launch_file", str(path)) in fake.calls
        assert path.read_text() == original  # comments kept: the file was not rewritten
