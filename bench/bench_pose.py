"""Benchmark the classical pose pipeline: 3D accuracy of the ablations, QC, speed against decoding.

Usage::

    .venv/bin/python bench/bench_pose.py [--frames 500] [--seeds 0 1 2] [--cameras 6]
                                         [--rig4-seed 0] [--work /tmp/bench-pose]
                                         [--report bench/results/pose.md]
                                         [--ablations full no-refine naive]

For each recording (``synth pose`` with real MausHaus3D motion; simulated once
into ``--work`` and reused), it times decoding the fluorescence streams (what
the classical pipeline reads) and all streams, runs the pipeline with
``--ablation full``, ``no-refine`` and ``naive``, and scores each result with
``eval`` (tools.pose_metrics). It also times decoding plus centroid
detection alone; the rest of the wall time, per frame, is what the graph,
the tracker and Stage 4 cost. The markdown table replaces the head of ``--report``
(the hand-written ``## `` sections below it stay: bench/report_file.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.allocator import keep_freed_memory  # noqa: E402
from agent.commands.eval_pose import score_results  # noqa: E402
from agent.pose_context import PoseContext  # noqa: E402
from agent.pose_pipeline import run_pose  # noqa: E402
from agent.recording import load_recording  # noqa: E402
from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording  # noqa: E402
from bench.report_file import write_report  # noqa: E402
from tools.centroids import detect_centroids  # noqa: E402

ABLATIONS = ("full", "no-refine", "naive")


def simulated_recording(work: Path, cameras: int, seed: int, frames: int,
                        motion: str = "real") -> Path:
    """The ``synth pose`` recording of ``cameras``, ``seed`` and ``motion`` in ``work``, simulated on first use."""
    suffix = "" if motion == "real" else f"-{motion}"
    recording_dir = work / f"synth-{cameras}cam-seed{seed}-{frames}f{suffix}"
    if not (recording_dir / "recording.toml").is_file():
        synthesize_pose_recording(recording_dir, SynthPoseOptions(
            frames=frames, cameras=cameras, seed=seed, motion=motion, overwrite=True))
    return recording_dir


def decode_seconds(recording_dir: Path, kinds: tuple[str, ...]) -> float:
    """Wall time to decode every frame of the ``kinds`` streams of every camera, in order."""
    recording = load_recording(recording_dir)
    started = time.perf_counter()
    for camera in recording.cameras:
        for kind in kinds:
            stream = getattr(recording, kind)(camera)
            for frame in range(recording.n_frames):
                stream.read(frame)
    recording.close()
    return time.perf_counter() - started


def detect_seconds(recording_dir: Path) -> float:
    """Wall time to decode every fluorescence frame and detect its centroids (the pipeline's floor)."""
    recording = load_recording(recording_dir)
    started = time.perf_counter()
    for camera in recording.cameras:
        stream = recording.fluorescence(camera)
        for frame in range(recording.n_frames):
            detect_centroids(stream.read(frame))
    recording.close()
    return time.perf_counter() - started


def bench_recording(recording_dir: Path, work: Path, ablations: tuple[str, ...] = ABLATIONS) -> list[dict]:
    """One row per ablation: accuracy, QC and timing."""
    fluorescence_s = decode_seconds(recording_dir, ("fluorescence",))
    all_s = decode_seconds(recording_dir, ("fluorescence", "reflectance"))
    detect_s = detect_seconds(recording_dir)
    recording = load_recording(recording_dir)
    rows = []
    for ablation in ablations:
        out = work / "runs" / f"{recording_dir.name}-{ablation}"
        summary = run_pose(recording_dir, out, PoseContext(ablation=ablation), overwrite=True,
                           quiet=True)
        metrics = score_results(recording, out)
        rows.append({
            "recording": recording_dir.name, "ablation": ablation,
            "mean_mm": metrics.mean_error_mm, "median_mm": metrics.median_error_mm,
            "within5": metrics.share_within_5mm, "triangulable": metrics.share_triangulable,
            "accuracy": metrics.assignment_accuracy,
            "qc_precision": metrics.qc_precision, "qc_recall": metrics.qc_recall,
            "wall_s": summary.wall_s, "decode_fluo_s": fluorescence_s, "decode_all_s": all_s,
            "detect_s": detect_s, "frames": summary.n_frames,
        })
        print(rows[-1], flush=True)
    return rows


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{scale * value:.{digits}f}"


def report(rows: list[dict], command: str) -> str:
    lines = [
        "# Pose pipeline benchmark (classical backend)", "", f"Command: `{command}`", "",
        "| recording | ablation | mean mm | median mm | within 5 mm | triangulable "
        "| 2D accuracy | QC precision "
        "| QC recall | wall s | decode fluo s | wall / decode fluo | wall / decode all "
        "| decode+detect s | graph ms/frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recording']} | {r['ablation']} | {_fmt(r['mean_mm'])} | {_fmt(r['median_mm'], digits=3)} "
            f"| {_fmt(r['within5'], 100, 1)}% | {_fmt(r['triangulable'], 100, 1)}% "
            f"| {_fmt(r['accuracy'], 100, 1)}% "
            f"| {_fmt(r['qc_precision'], 100, 1)}% | {_fmt(r['qc_recall'], 100, 1)}% "
            f"| {r['wall_s']:.1f} | {r['decode_fluo_s']:.1f} | {r['wall_s'] / r['decode_fluo_s']:.1f} "
            f"| {r['wall_s'] / r['decode_all_s']:.1f} | {r['detect_s']:.1f} "
            f"| {1000 * (r['wall_s'] - r['detect_s']) / r['frames']:.1f} |")
    full = {r["recording"]: r["mean_mm"] for r in rows if r["ablation"] == "full"}
    naive = {r["recording"]: r["mean_mm"] for r in rows if r["ablation"] == "naive"}
    lines += ["", "Full / naive mean 3D error: " + ", ".join(
        f"{name} {full[name] / naive[name]:.2f}" for name in full if naive.get(name))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--rig4-seed", type=int, default=0, help="seed of the 4-camera recording (-1: none)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-pose"))
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "bench" / "results" / "pose.md")
    parser.add_argument("--ablations", nargs="+", choices=ABLATIONS, default=list(ABLATIONS),
                        help="ablations to run (default all)")
    args = parser.parse_args()
    plan = [(args.cameras, seed) for seed in args.seeds]
    if args.rig4_seed >= 0:
        plan.append((4, args.rig4_seed))
    rows = []
    for cameras, seed in plan:
        recording_dir = simulated_recording(args.work, cameras, seed, args.frames)
        rows += bench_recording(recording_dir, args.work, tuple(args.ablations))
    command = ".venv/bin/python bench/bench_pose.py " + " ".join(sys.argv[1:])
    table = report(rows, command.strip())
    write_report(args.report, table)  # the notes below it stay
    print(table)


if __name__ == "__main__":
    keep_freed_memory()  # as `python -m agent.run` does
    main()
