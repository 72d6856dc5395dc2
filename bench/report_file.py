"""Write a benchmark's table into its results file without losing the notes below it.

A results file (``bench/results/pose.md``) starts with the table a benchmark
writes and goes on with sections written by hand (``## Session 5: ...``) that
explain the numbers. Rerunning the benchmark replaces the table and keeps
those sections.
"""

from __future__ import annotations

from pathlib import Path

from agent.atomic import write_text_atomic


def write_report(path: Path, table: str) -> None:
    """Replace the head of ``path`` (everything before its first ``## `` section) with ``table``.

    ``table`` must not contain a ``## `` heading of its own; a missing file is created.
    """
    notes = ""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        start = text.find("\n## ")
        notes = "" if start < 0 else text[start:]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, table.rstrip("\n") + "\n" + notes)
