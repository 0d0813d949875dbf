"""One screen per playbook stage, plus home, help and dialogs."""

from tuneplay_tui.screens.analysis import AnalysisScreen
from tuneplay_tui.screens.baseline import BaselineScreen
from tuneplay_tui.screens.decision import DecisionScreen
from tuneplay_tui.screens.design import DesignScreen
from tuneplay_tui.screens.home import HomeScreen
from tuneplay_tui.screens.running import RunningScreen

__all__ = ["AnalysisScreen", "BaselineScreen", "DecisionScreen", "DesignScreen", "HomeScreen",
           "RunningScreen"]
