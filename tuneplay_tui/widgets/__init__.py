"""Reusable widgets: the stage header, charts, the trial table, findings, text panels."""
