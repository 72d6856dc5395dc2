"""``python -m agent.run pose [RECORDING --out DIR]``: the 4-stage pose pipeline.

Without a recording it runs the demo: a synthetic recording is simulated into
``./data/demo-pose`` on first use (then reused) and tracked into
``./runs/demo-pose`` (replacing the previous demo run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.commands.suggest import suggest_from_results
from agent.config import given_settings, resolve_context
from agent.errors import InputError
from agent.pose_context import PoseContext
from agent.pose_pipeline import run_pose, summary_lines

DEMO_RECORDING = Path("data/demo-pose")
DEMO_RUN = Path("runs/demo-pose")
DEMO_FRAMES = 200


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", nargs="?", type=Path,
                        help="recording directory (FORMATS.md section 1); omit for the demo")
    parser.add_argument("--out", type=Path, help="output directory (required with a recording)")
    parser.add_argument("--backend", choices=("classical", "openai", "hybrid"),
                        help="perception for stages 1-3 (default classical)")
    parser.add_argument("--base-url", help="OpenAI-compatible server for openai/hybrid, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", dest="vlm_model", help="served vision-language model (openai/hybrid)")
    parser.add_argument("--prompts", dest="prompts_dir", help="folder replacing prompts/ (same file names)")
    parser.add_argument("--structured", choices=("json_schema", "function_calling"),
                        help="how structured answers are requested (default json_schema; "
                             "function_calling for servers that reject json_schema)")
    parser.add_argument("--max-model-retries", type=int,
                        help="retries of an invalid model answer before it is flagged (default 2)")
    parser.add_argument("--ablation", choices=("full", "no-refine", "naive"),
                        help="full (default), no-refine (skip Stage 4) or naive (no regions, no Stage 4)")
    parser.add_argument("--max-frames", type=int, help="track only the first N frames")
    parser.add_argument("--max-retries", type=int, help="retries of stages 1-3 per frame (default 2)")
    parser.add_argument("--max-concurrency", type=int, help="parallel graph tasks (default 8)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# The PoseContext settings the command line sets (each flag's dest is the setting's name).
FLAGS = {"backend": "--backend", "base_url": "--base-url", "vlm_model": "--model",
         "prompts_dir": "--prompts", "structured": "--structured",
         "max_model_retries": "--max-model-retries", "ablation": "--ablation",
         "max_frames": "--max-frames", "max_retries": "--max-retries",
         "max_concurrency": "--max-concurrency"}


def run(args: argparse.Namespace) -> int:
    cli = {name: getattr(args, name) for name in FLAGS}
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames", "must be at least 1")
    ctx = resolve_context(PoseContext, cli)
    if args.recording is None:
        # The demo replaces its own results, not a --out of the user's.
        recording, out = _demo_recording(), args.out or DEMO_RUN
        overwrite = args.overwrite or (args.out is None and not args.resume)
    else:
        if args.out is None:
            raise InputError("--out", "required when a recording is given")
        recording, out, overwrite = args.recording, args.out, args.overwrite
    summary = run_pose(recording, out, ctx, resume=args.resume, overwrite=overwrite, quiet=args.quiet,
                       given=given_settings(ctx, cli, FLAGS))
    print("\n".join(summary_lines(summary)))
    try:
        suggestion = suggest_from_results(out).suggestion
    except (InputError, ValueError):  # a hint only: the run itself has succeeded
        suggestion = None
    if suggestion is not None:
        frames = " ".join(str(frame) for frame in suggestion.frames)
        print(f"flagged labels rise from frame {suggestion.onset}: labelling frames {frames} "
              f"would re-anchor the tracker (python -m agent.run suggest {out})")
    return 0


def _demo_recording() -> Path:
    from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording

    if not (DEMO_RECORDING / "recording.toml").is_file():
        print(f"simulating a demo recording into {DEMO_RECORDING} (first use only) ...")
        synthesize_pose_recording(DEMO_RECORDING, SynthPoseOptions(frames=DEMO_FRAMES, overwrite=True))
    return DEMO_RECORDING
