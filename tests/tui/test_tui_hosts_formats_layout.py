"""Engines on many hosts in the header and the trial table; number formats (a bound of
1.86e-10 is 0, ± with matching digits, round log ticks); one plot at a time at 80x24."""

from __future__ import annotations

from tui_helpers import screen_text, settle, toasts

from engine.store.base import Decision
from tuneplay_tui.screens.decision import comparison_lines
from tuneplay_tui.widgets.plotting import log_ticks
from tuneplay_tui.widgets.trial_table import TrialTable


async def test_a_shared_store_shows_its_hosts_and_each_trials_host(fake, app_factory) -> None:
    fake.hosts = ("a", "b", "c")
    fake.slots = tuple(f"gpu{g}.{k}" for g in range(8) for k in range(3))  # 24 slots
    fake.tick()  # the freed slots fill, on the three hosts
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        text = screen_text(app)
        assert "engine ● 3 hosts · 24 slots" in text.splitlines()[0]
        table = app.screen.query_one(TrialTable)
        running = [t for t in app.state.study_trials() if t.state.value == "RUNNING" and t.host]
        assert running and "host/dev" in text
        t = running[0]
        assert table.cell_text(t.id, "dev") == f"{t.host}/{t.device}"  # e.g. b/gpu3


async def test_one_engine_host_shows_devices_only(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        assert "host/dev" not in screen_text(app)
        assert app.screen.query_one(TrialTable).cell_text(51, "dev") == "gpu0"


def decision(**comparison: float) -> Decision:
    stats = {"comparison": {"mean_candidate": 0.002958, "std_candidate": 0.0018,
                            "mean_baseline": 0.0712, "std_baseline": 0.0031, "n_candidate": 5,
                            "n_baseline": 5, **comparison}}
    return Decision(1, 1, 1, "inconclusive", {}, 2, "Welch", stats, "too close to call", "", 0.0)


def test_a_bound_at_float_noise_reads_0_and_spreads_match_their_values() -> None:
    lines = [c.plain for c in comparison_lines(decision(difference=0.0078, ci_low=0.0031,
                                                        ci_high=1.86e-10))]
    text = "\n".join(lines)
    assert "difference 0.00780 (95% CI 0.00310 .. 0)" in text and "e-10" not in text
    assert "candidate 0.0030 ±0.0018" in text and "0.002958" not in text
    assert "baseline  0.0712 ±0.0031" in text


def test_log_axes_tick_at_powers_of_ten_then_1_2_5() -> None:
    assert log_ticks(1e-4, 1e-1)[1] == ["1e-4", "0.001", "0.01", "0.1"]
    assert log_ticks(2e-4, 4e-3)[1] == ["2e-4", "5e-4", "0.001", "0.002"]
    assert log_ticks(3e-4, 3e-2)[1] == ["5e-4", "0.001", "0.005", "0.01"]
    for ticks in (log_ticks(1e-6, 1e-2)[0], log_ticks(2e-4, 4e-3)[0]):
        mantissas = {round(t / 10 ** _exp(t), 6) for t in ticks}
        assert mantissas <= {1.0, 2.0, 5.0}  # never 0.0009 or 0.0041


def _exp(t: float) -> int:
    import math

    return math.floor(math.log10(t) + 1e-9)


async def test_at_80x24_analysis_shows_one_plot_and_f_folds_the_findings(finished_fake,
                                                                         app_factory) -> None:
    app = app_factory(finished_fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        screen = app.screen
        axis, detail = screen.query_one("#axis-chart"), screen.query_one("#detail-chart")
        assert axis.display and not detail.display  # the boundary finding: its axis plot
        assert axis.size.height >= 15  # readable, not 4 rows
        await pilot.press("v")
        await settle(pilot)
        assert detail.display and not axis.display and detail.size.height >= 15
        left = screen.query_one("#an-left")
        assert left.display and detail.size.width < 45
        await pilot.press("f")
        await settle(pilot)
        assert not left.display and detail.size.width > 70  # the plot takes the width
        assert "f Findings" in screen_text(app)  # offered in the footer
        await pilot.press("f")
        await settle(pilot)
        assert left.display


async def test_at_80x24_running_shows_the_table_then_g_the_chart(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        table, chart = app.screen.query_one(TrialTable), app.screen.query_one("#run-chart")
        assert table.display and not chart.display and table.size.height >= 12
        await pilot.press("g")
        await settle(pilot)
        assert chart.display and not table.display and chart.size.height >= 15
        assert "g Chart" in screen_text(app)
        await pilot.press("g")
        await settle(pilot)
        assert table.display and not toasts(app)


def test_the_text_report_tells_the_best_curves_apart_with_a_legend_below(finished_fake) -> None:
    from types import SimpleNamespace

    from tuneplay_tui.report_cli import CURVE_MARKERS, build_sections, render_text

    loaded = SimpleNamespace(report=finished_fake.analyze(2), scaling=None)
    sections = build_sections(loaded, 90, color=False)
    curves = next(s for s in sections if s.title.startswith("Curves of the best"))
    plot, legend = curves.chart.rsplit("\n", 1)
    ids = [tc.trial_id for tc in loaded.report.curves.trials]
    markers = CURVE_MARKERS[: len(ids)]
    assert legend.split("   ") == [f"  {markers[0]} #{ids[0]} (best)",
                                   *(f"{m} #{i}" for m, i in zip(markers[1:], ids[1:]))]
    assert all(m in plot for m in markers)  # each curve drawn with its own marker
    assert "#" not in plot  # no legend inside the plot
    axis = next(s for s in sections if s.title.startswith("Axis plot: learning_rate"))
    ticks = axis.chart.splitlines()[-4]
    assert ticks.split() == ["0.001", "0.01", "0.1"]
    assert "1.86e-10" not in render_text(sections)
