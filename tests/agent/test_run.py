"""Tests for agent/run.py: the CLI dispatcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.run import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in COMMANDS)


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_an_unknown_command_is_refused_with_code_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["not-a-command"])
    assert exit_info.value.code == 2


def test_only_the_chosen_command_is_configured() -> None:
    parser = build_parser(["eval", "REC", "OUT"])
    args = parser.parse_args(["eval", "REC", "OUT"])
    assert args.command == "eval" and callable(args._run)
    with pytest.raises(SystemExit):  # trace's arguments were never added
        parser.parse_args(["trace", "RUN"])
    assert callable(build_parser(["trace", "RUN"]).parse_args(["trace", "RUN"])._run)


def test_starting_a_pose_command_does_not_import_the_behavior_stack() -> None:
    probe = ("import sys; from agent.run import build_parser; build_parser(['eval', 'R', 'O']); "
             "print(sorted(m for m in ('torch', 'agent.commands.behavior', 'agent.commands.chat') "
             "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_reader_that_stops_reading_gets_no_traceback(tmp_path: Path) -> None:
    """``python -m agent.run ... | head`` that closes the pipe early: the files are written, quietly."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.run", "synth", "pose", "--out", str(tmp_path / "rec"),
         "--frames", "3", "--cameras", "3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait() == 1
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr
    assert (tmp_path / "rec" / "recording.toml").is_file()
