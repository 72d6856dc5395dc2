"""The one error type that bad input raises.

Loaders validate everything up front and raise :class:`InputError`; the CLI
turns it into one line on stderr and exit code 2, before any output exists.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: names the offending file (or option) and the problem.

    Parameters
    ----------
    path
        The file, directory or option that is wrong (``None`` when the
        problem is not tied to one file).
    problem
        A short human sentence saying what is wrong and, where it helps,
        what was expected.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self) -> tuple:
        # Rebuilt from both fields: raised in the detection child, it reaches the parent as is.
        return (type(self), (self.path, self.problem))
