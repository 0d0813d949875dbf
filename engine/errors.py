"""The one base class of every error a user can act on.

A ``TuneplayError`` is printed as one line (the CLI exits 2, the app shows it), never as a
traceback; anything else that escapes is a bug. Subclasses say where the problem is: a study
file (``SpecError``), a workload (``WorkloadError``), the store (``StoreError``), a command
line (``UserError``), a launcher's options (``LaunchError``).
"""

from __future__ import annotations


class TuneplayError(Exception):
    """A problem the user can fix, described in one line."""
