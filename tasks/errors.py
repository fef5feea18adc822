"""Errors for bad input: each names the file and the problem."""


class InputError(ValueError):
    """A user-supplied file cannot be used. The message starts with the file's path."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
