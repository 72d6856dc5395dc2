"""Benchmark the label-more-frames loop: pose, `suggest`, label the suggested frames, pose again.

Usage::

    .venv/bin/python bench/bench_suggest.py [--frames 500] [--seeds 0 1 2 3 7 10 11 12 13]
                                            [--rig4-seeds 0 5 8] [--rounds 1]
                                            [--work /tmp/bench-suggest]
                                            [--report bench/results/pose-suggest.md]

For each recording (``synth pose`` with the shipped real motion, seed frames
0 1 2) it runs the classical pipeline, asks
:func:`agent.commands.suggest.suggest_from_results` which frames to label
next, simulates the recording again with those frames added to
``--seed-frames`` (the simulator labels them as it labels every seed frame:
the true 2D points of the visible dots plus 1 px of noise; the videos are
the same), runs the pipeline again and scores every run with ``eval``
(:mod:`tools.pose_metrics`). ``--rounds`` repeats the loop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.allocator import keep_freed_memory  # noqa: E402
from agent.commands.eval_pose import score_results  # noqa: E402
from agent.commands.suggest import suggest_from_results  # noqa: E402
from agent.pose_context import PoseContext  # noqa: E402
from agent.pose_pipeline import run_pose  # noqa: E402
from agent.recording import load_recording  # noqa: E402
from agent.synth_pose import SEED_FRAMES, SynthPoseOptions, synthesize_pose_recording  # noqa: E402
from bench.report_file import write_report  # noqa: E402


def bench_recording(work: Path, frames: int, cameras: int, seed: int, rounds: int) -> list[dict]:
    """One row per round (0: the seed frames alone) for one simulated recording."""
    seed_frames = list(SEED_FRAMES)
    rows = []
    for round_index in range(rounds + 1):
        name = f"synth-{cameras}cam-seed{seed}-{frames}f-labels{'_'.join(map(str, seed_frames))}"
        recording_dir, out = work / name, work / "runs" / name
        if not (recording_dir / "recording.toml").is_file():
            synthesize_pose_recording(recording_dir, SynthPoseOptions(
                frames=frames, cameras=cameras, seed=seed, seed_frames=tuple(seed_frames),
                overwrite=True))
        run_pose(recording_dir, out, PoseContext(), overwrite=True, quiet=True)
        recording = load_recording(recording_dir)
        metrics = score_results(recording, out)
        recording.close()
        suggestion = suggest_from_results(out).suggestion
        rows.append({"recording": f"{cameras} cameras seed {seed}", "round": round_index,
                     "seed_frames": list(seed_frames), "within5": metrics.share_within_5mm,
                     "mean_mm": metrics.mean_error_mm, "qc_precision": metrics.qc_precision,
                     "qc_recall": metrics.qc_recall,
                     "suggested": None if suggestion is None else suggestion.frames})
        print(rows[-1], flush=True)
        if suggestion is None:
            break
        seed_frames = sorted(set(seed_frames) | set(suggestion.frames))
    return rows


def report(rows: list[dict], command: str) -> str:
    lines = ["# Labelling the frames `suggest` picks (classical backend)", "",
             f"Command: `{command}`", "",
             "| recording | round | seed frames | within 5 mm | mean mm | QC precision | QC recall "
             "| suggested next |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recording']} | {r['round']} | {' '.join(map(str, r['seed_frames']))} "
                     f"| {100 * r['within5']:.1f}% | {r['mean_mm']:.2f} "
                     f"| {100 * r['qc_precision']:.1f}% | {100 * r['qc_recall']:.1f}% "
                     f"| {' '.join(map(str, r['suggested'] or [])) or '-'} |")
    by_round: dict[int, list[dict]] = {}
    for r in rows:
        by_round.setdefault(r["round"], []).append(r)
    lines.append("")
    for round_index, members in sorted(by_round.items()):
        lines.append(
            f"Round {round_index} ({len(members)} recordings): within 5 mm "
            f"{100 * sum(r['within5'] for r in members) / len(members):.2f}%, mean error "
            f"{sum(r['mean_mm'] for r in members) / len(members):.2f} mm, QC recall >= 0.9 on "
            f"{sum(r['qc_recall'] >= 0.9 for r in members)}, precision >= 0.5 on "
            f"{sum(r['qc_precision'] >= 0.5 for r in members)}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 7, 10, 11, 12, 13])
    parser.add_argument("--rig4-seeds", type=int, nargs="*", default=[0, 5, 8])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-suggest"))
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "bench" / "results" / "pose-suggest.md")
    args = parser.parse_args()
    plan = [(6, seed) for seed in args.seeds] + [(4, seed) for seed in args.rig4_seeds]
    rows = []
    for cameras, seed in plan:
        rows += bench_recording(args.work, args.frames, cameras, seed, args.rounds)
    command = ".venv/bin/python bench/bench_suggest.py " + " ".join(sys.argv[1:])
    table = report(rows, command.strip())
    write_report(args.report, table)  # the notes below it stay
    print(table)


if __name__ == "__main__":
    keep_freed_memory()  # as `python -m agent.run` does
    main()
