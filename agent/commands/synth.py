"""``python -m agent.run synth {pose,behavior}``: simulated inputs with ground truth."""

from __future__ import annotations

import argparse
import importlib

_KINDS = {
    "pose": ("agent.synth_pose", "a multi-camera quantum-dot recording (FORMATS.md section 1)"),
    "behavior": ("agent.synth_behavior", "a multi-animal top-view session (FORMATS.md section 3)"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="synth_kind", metavar="KIND", required=True)
    for name, (module_name, help_text) in _KINDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        sub = kinds.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_synth_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._synth_run(args) or 0)
