"""Tests of bench/report_file.py: a rerun benchmark keeps the notes of its results file."""

from __future__ import annotations

from bench.report_file import write_report


def test_the_table_is_replaced_and_the_sections_below_it_stay(tmp_path):
    path = tmp_path / "results" / "pose.md"
    write_report(path, "# Benchmark\n\n| a |\n|---|\n| 1 |\n")
    path.write_text(path.read_text() + "\n## Session 5\n\nwhy 1\n\n## Session 6\n\nmore\n")
    write_report(path, "# Benchmark\n\n| a |\n|---|\n| 2 |\n")
    text = path.read_text()
    assert text.startswith("# Benchmark\n\n| a |\n|---|\n| 2 |\n")
    assert "| 1 |" not in text
    assert text.endswith("\n## Session 5\n\nwhy 1\n\n## Session 6\n\nmore\n")


def test_a_file_without_sections_is_replaced_whole(tmp_path):
    path = tmp_path / "plain.md"
    path.write_text("# Old\n\nold table\n")
    write_report(path, "# New\n")
    assert path.read_text() == "# New\n"
