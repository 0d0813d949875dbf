"""4 Analysis → 2 Design: the next-round plan beside the findings, and `n` opening its study
file in Design for review (nothing written until it is saved or launched there)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from textual.widgets import DataTable
from tui_helpers import screen_text, settle, toasts

PLAN_LINES = ("max_train_steps longer 400 → 600", "budget          enough",
              "learning_rate   expand → 0.001..1", "momentum        expand → 0.705..0.99")


async def test_analysis_shows_one_plan_and_n_opens_its_draft_in_design(finished_fake, app_factory,
                                                                       tmp_path: Path) -> None:
    finished_fake.workspace = tmp_path / ".tuneplay"
    slow = finished_fake.baseline_design

    def baseline_design(experiment_id: int) -> dict:  # type: ignore[type-arg]
        time.sleep(0.3)  # Design's own starting design arrives after the draft was asked for
        return slow(experiment_id)

    finished_fake.baseline_design = baseline_design
    app = app_factory(finished_fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        text = screen_text(app)
        assert "next round · n: open it in Design" in text
        for line in PLAN_LINES:
            assert line in text
        assert "as study wd-vs-none-r2" in text
        plan = app.screen.report.next_round
        assert "n Next round" in text

        await pilot.press("n")
        for _ in range(200):  # the draft waits for Design's own starting design, then replaces it
            await settle(pilot)
            model = getattr(app.screen, "model", None)
            if model is not None and model.study.get("name") == "wd-vs-none-r2":
                break
            await pilot.pause(0.05)
        await settle(pilot)
        assert app.current_mode == "design"
        design = app.screen
        assert design.model.study["name"] == "wd-vs-none-r2"
        assert design.model.study["max_train_steps"] == plan.training.proposed == 600
        table = design.query_one("#design-table", DataTable)
        assert str(table.get_cell("learning_rate", "range")) == "0.001 .. 1"
        assert str(table.get_cell("weight_decay", "role")) == "scientific"
        text = screen_text(app)
        assert 'study "wd-vs-none-r2"' in text and "600 steps" in text
        assert "✓ valid · studies/wd-vs-none-r2.toml" in text
        target = tmp_path / "studies" / "wd-vs-none-r2.toml"
        assert not target.exists() and not finished_fake.saved  # a draft, not yet a file

        await pilot.press("L")  # launching saves it first, then follows the new study
        await settle(pilot)
        assert ("save_and_launch", str(target)) in finished_fake.calls
        assert 'name = "wd-vs-none-r2"' in finished_fake.saved[str(target)]
        assert app.current_mode == "running"


async def test_n_without_a_plan_says_why(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        report = app.screen.report
        app.screen.report = None  # the analysis still running
        await pilot.press("n")
        await pilot.pause()
        assert any("The analysis is still running" in t for t in toasts(app))
        app.screen.report = dataclasses.replace(report, next_round=None)  # too few trials
        await pilot.press("n")
        await pilot.pause()
        assert app.current_mode == "analysis"
        assert any("needs at least 3 finished trials" in t for t in toasts(app))
