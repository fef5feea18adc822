"""The one error vocabulary for bad input: each error names the file and the problem; and the
one for a database the pipeline cannot use, which says what to run."""
from __future__ import annotations


class InputError(ValueError):
    """A user-supplied file (or setting) cannot be used. The message starts with its path.

    ``InputError(path, problem)`` reads ``<path>: <problem>``; ``InputError(problem)`` (no path)
    is for inputs that are not files, e.g. a pairing of two directories.
    """

    def __init__(self, path, problem: str | None = None):
        if problem is None:
            path, problem = None, str(path)
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class DatabaseSetupError(RuntimeError):
    """The PostGIS database is reachable but not usable as it is (no ``postgis`` extension, no
    right to create tables). The message is one line: the database, the problem, what to run."""
