"""Command-line entry: ``python -m agent.run SUBCOMMAND ...``.

Each subcommand lives in its own module under ``agent/commands/`` with two
functions, ``configure(parser)`` and ``run(args) -> int``. This file only
dispatches and turns :class:`~agent.errors.InputError` into one clear line on
stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from agent.allocator import keep_freed_memory
from agent.errors import InputError

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("agent.commands.synth", "simulate a recording (pose) or a session (behavior) with ground truth"),
    "pose": ("agent.commands.pose", "run the 4-stage pose pipeline on a recording"),
    "eval": ("agent.commands.eval_pose", "score pose results against a recording's ground truth"),
    "suggest": ("agent.commands.suggest", "which frames of a pose run to label next"),
    "behavior": ("agent.commands.behavior", "run the behavior pipeline on a session"),
    "eval-behavior": ("agent.commands.eval_behavior", "score behavior results against ground_truth.csv"),
    "chat": ("agent.commands.chat", "ask questions about finished results"),
    "replay": ("agent.commands.replay", "re-execute a finished run from its checkpoints and call log"),
    "trace": ("agent.commands.trace", "print the node-by-node trace of a run"),
    "compare": ("agent.commands.compare", "put two runs side by side"),
}


def _command_module(name: str) -> object | None:
    """The module of subcommand ``name``, or None where it is not installed."""
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (its first argument that is not an option), if any."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The CLI parser for ``argv``: only the subcommand it names is imported and configured.

    Importing every command module (the behavior ones pull in torch and
    LangChain) cost about 3 s on every start; the others are listed by name
    and help only.
    """
    parser = argparse.ArgumentParser(
        prog="python -m agent.run",
        description="BehaviorVLM agent: label-light pose estimation and behavior understanding.",
    )
    chosen = _chosen_command(argv)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module_name, help_text) in COMMANDS.items():
        module = _command_module(name) if name == chosen else None
        if name == chosen and module is None:
            continue  # not installed: not offered
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if module is not None:
            module.configure(sub)  # type: ignore[attr-defined]
            sub.set_defaults(_run=module.run)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # `... | head` stopped reading: the command's files are written; nothing to report.
        # Later writes (the interpreter's last flush) go nowhere, as Python's docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Only the pipelines checkpoint their work.
        resumable = args.command in ("pose", "behavior")
        print("interrupted; finished work is saved (rerun with --resume to continue)" if resumable
              else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    keep_freed_memory()
    raise SystemExit(main())
