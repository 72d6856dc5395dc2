"""Benchmark the pose pipeline on recordings unlike the benchmark's: resolution, spots, clutter, seeds, rig size.

Usage::

    .venv/bin/python bench/bench_pose_conditions.py [--frames 300] [--seeds 0 1] [--jobs 2]
                                                    [--conditions NAME ...]
                                                    [--work /tmp/bench-pose-conditions]
                                                    [--report bench/results/pose-conditions.md]

The other pose benchmarks simulate ``synth pose``'s defaults: 1024x700
images, spots of sigma 1.5 px, one spurious spot a frame, 2% of visible dots
missing anyway, 6 or 4 cameras. A lab's recording can differ in each, and
the tracker's settings were tuned on those defaults, so each condition here
changes one or two of them, or moves the seed labels as a hand's clicks would
(``CONDITIONS``), and the report shows what that costs. For every condition and seed a recording is simulated into
``--work`` (reused when present), ``pose`` runs on it with the default
settings in its own process (``--jobs`` at a time) and ``eval``'s metrics
are taken, with the share of keypoint-frames whose dot 2 or more cameras
show (the most that can be within 5 mm) and the tracker's gate from
``run.json``. The markdown table replaces the head of ``--report`` (the
``## `` sections below it stay: bench/report_file.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording  # noqa: E402
from bench.bench_pose_sweep import meets_qc_goal, run_and_score, score_plan  # noqa: E402
from bench.report_file import write_report  # noqa: E402

# Condition name -> the synth pose options it changes (the rest are the defaults), or
# seed_noise_px (condition_recording).
CONDITIONS: dict[str, dict[str, float | int | tuple[float, float]]] = {
    "defaults": {},
    "2x resolution": {"width": 2048, "height": 1400},
    "0.625x resolution": {"width": 640, "height": 448},
    "spots of sigma 3 px": {"blur": 3.0},
    "5 spurious spots a frame": {"spurious": 5.0},
    "10% dropout": {"dropout": 0.1},
    "seed labels 2 px off": {"seed_noise_px": 2.0},
    "4 cameras, 2x resolution": {"cameras": 4, "width": 2048, "height": 1400},
    "3 cameras": {"cameras": 3},
    "5 cameras": {"cameras": 5},
    "8 cameras": {"cameras": 8},
    "cameras 15-30 degrees up": {"elevation": (15.0, 30.0)},
    "cameras 60-80 degrees up": {"elevation": (60.0, 80.0)},
}


def recording_name(name: str, seed: int, frames: int) -> str:
    """The folder name of condition ``name``'s recording: the options it changes, seed and length."""
    changes = "-".join(f"{key}{'-'.join(f'{v:g}' for v in value) if isinstance(value, tuple) else value}"
                       for key, value in CONDITIONS[name].items())
    return f"synth-{changes or 'defaults'}-seed{seed}-{frames}f"


def condition_recording(work: Path, name: str, seed: int, frames: int) -> Path:
    """The recording of condition ``name`` and ``seed`` in ``work``, simulated on first use.

    ``seed_noise_px`` is not a simulator option: the seed labels (exact
    projections) are moved by Gaussian noise of that sigma per axis, as a
    hand's clicks would be.
    """
    recording_dir = work / recording_name(name, seed, frames)
    if not (recording_dir / "recording.toml").is_file():
        options = dict(CONDITIONS[name])
        seed_noise_px = float(options.pop("seed_noise_px", 0.0))
        synthesize_pose_recording(recording_dir, SynthPoseOptions(
            frames=frames, seed=seed, overwrite=True, **options))  # type: ignore[arg-type]
        if seed_noise_px:
            add_seed_noise(recording_dir / "seeds.csv", seed_noise_px, seed)
    return recording_dir


def add_seed_noise(seeds_csv: Path, sigma_px: float, seed: int) -> None:
    """Move every label of ``seeds_csv`` by Gaussian noise of ``sigma_px`` per axis (seeded)."""
    seeds = pd.read_csv(seeds_csv)
    noise = np.random.default_rng(seed).normal(0.0, sigma_px, (len(seeds), 2))
    seeds[["x", "y"]] = (seeds[["x", "y"]].to_numpy() + noise).round(3)
    seeds.to_csv(seeds_csv, index=False)


def score_condition(recording: Path, name: str, seed: int) -> dict:
    """Run ``pose`` on the ``recording`` of condition ``name`` and ``seed`` and score it."""
    out = recording.parent / "runs" / recording.name
    row = run_and_score(recording, out)
    run_json = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return {"condition": name, "seed": seed, "gate_px": run_json["tracker_gate_px"], **row}


def report(rows: list[dict], command: str) -> str:
    lines = ["# Pose pipeline under other recording conditions (classical backend, full)", "",
             f"Command: `{command}`", "",
             "| condition | seed | gate px | within 5 mm | most possible | mean mm | 2D accuracy "
             "| QC recall | QC precision |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['condition']} | {r['seed']} | {r['gate_px']:.1f} | "
                     f"{100 * r['within5']:.1f}% | {100 * r['triangulable']:.1f}% | "
                     f"{r['mean_mm']:.2f} | {100 * r['accuracy']:.1f}% | {r['qc_recall']:.3f} | "
                     f"{r['qc_precision']:.3f} |")
    lines += ["", "| condition | recordings | mean within 5 mm | mean of most possible "
              "| mean error mm | QC goal met |", "|---|---|---|---|---|---|"]
    for name in CONDITIONS:
        group = [r for r in rows if r["condition"] == name]
        if not group:
            continue
        goal = sum(meets_qc_goal(r) for r in group)
        lines.append(f"| {name} | {len(group)} | "
                     f"{100 * sum(r['within5'] for r in group) / len(group):.2f}% | "
                     f"{100 * sum(r['triangulable'] for r in group) / len(group):.2f}% | "
                     f"{sum(r['mean_mm'] for r in group) / len(group):.2f} | {goal} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    parser.add_argument("--jobs", type=int, default=2, help="pose runs at a time")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-pose-conditions"))
    parser.add_argument("--report", type=Path,
                        default=REPO_ROOT / "bench" / "results" / "pose-conditions.md")
    args = parser.parse_args()
    plan = [(name, seed) for name in args.conditions for seed in args.seeds]
    rows = score_plan(plan, lambda item: condition_recording(args.work, *item, args.frames),
                      lambda item, recording: score_condition(recording, *item), args.jobs)
    command = ".venv/bin/python bench/bench_pose_conditions.py " + " ".join(sys.argv[1:])
    write_report(args.report, report(rows, command.strip()))
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
