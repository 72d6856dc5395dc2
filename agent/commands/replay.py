"""``python -m agent.run replay RUN_DIR --out NEW_DIR [--from NODE|FRAME]``.

Without ``--from`` and without new settings: re-executes the finished run
from its recorded input, settings and model-call log (no server), writes the
results to NEW_DIR and checks that they are byte for byte the original's
(exit 1 if not). With ``--from`` it forks: behavior runs re-run NODE and
everything after it, pose runs track again from FRAME on, from the original
run's checkpoint, optionally with ``--prompts`` or another backend; new model
calls go to that backend. A corrupt or foreign RUN_DIR is one ``error:``
line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.replay import BEHAVIOR_NODES, load_recorded_run, replay


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished run directory written by pose or behavior")
    parser.add_argument("--out", type=Path, required=True, help="new run directory")
    parser.add_argument("--from", dest="start", metavar="NODE|FRAME",
                        help=f"fork: behavior node to re-run from ({', '.join(BEHAVIOR_NODES)}) "
                             "or pose frame to track again from")
    parser.add_argument("--prompts", dest="prompts_dir", help="folder replacing prompts/ (same file names)")
    parser.add_argument("--backend", choices=("classical", "openai", "hybrid"), help="another backend")
    parser.add_argument("--base-url", help="OpenAI-compatible server for new model calls")
    parser.add_argument("--model", dest="vlm_model", help="served vision-language model")
    parser.add_argument("--llm-model", help="text model (behavior merging)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")


def run(args: argparse.Namespace) -> int:
    source = load_recorded_run(args.run_dir)
    settings = {"backend": args.backend, "base_url": args.base_url, "vlm_model": args.vlm_model,
                "llm_model": args.llm_model, "prompts_dir": args.prompts_dir}
    outcome = replay(source, args.out, start=args.start, settings=settings, overwrite=args.overwrite)
    if outcome.differing:
        print(f"replay into {outcome.out_dir} differs from {source.run_dir.path} in: "
              f"{', '.join(outcome.differing)}", file=sys.stderr)
        return 1
    if outcome.differing is not None:
        print(f"replayed {outcome.kind} run {source.run_dir.path} into {outcome.out_dir}: results identical")
    elif args.start is not None:
        fork = outcome.fork or {}
        where = f"node {fork['node']}" if "node" in fork else f"frame {fork.get('frame')}"
        print(f"forked {outcome.kind} run {source.run_dir.path} from {where} into {outcome.out_dir}")
    else:
        print(f"re-ran {outcome.kind} run {source.run_dir.path} with new settings into {outcome.out_dir}")
    return 0
