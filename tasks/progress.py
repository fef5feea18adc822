"""Progress and status messages for the Luigi UI (``luigid``), shared by the tasks."""
from __future__ import annotations

import luigi


def report(task: luigi.Task, percent: int | None = None, message: str | None = None) -> None:
    """Progress for the Luigi UI; a no-op when the task runs outside a worker (tests)."""
    if percent is not None and callable(getattr(task, "set_progress_percentage", None)):
        task.set_progress_percentage(percent)
    if message is not None and callable(getattr(task, "set_status_message", None)):
        task.set_status_message(message)


def reporter(task: luigi.Task, scale: float = 100.0):
    """A ``progress(what, fraction)`` callback for library functions: ``fraction`` (0..1, or
    None to change only the message) of the task, reported as a percentage."""

    def progress(what: str | None, fraction: float | None) -> None:
        report(task, None if fraction is None else int(scale * fraction), what)

    return progress
