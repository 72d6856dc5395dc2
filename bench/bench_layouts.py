"""Benchmark the pose pipeline on other keypoint layouts: 8 keypoints in 3 regions, and more.

FORMATS.md allows any keypoints in any regions. This simulates recordings
of the shipped real motion with a subset of the 12 quantum-dot keypoints
grouped into other regions (``synth pose --regions``), runs the full
pipeline on each and scores it with ``eval`` (tools.pose_metrics). Each
layout also runs with neutral names (``point0`` ... ``point7``), which show
no left/right twins, so that what the twin and side checks add or cost on
that layout can be read off. Recordings are cached under ``--work``.
Results go to ``bench/results/pose-layouts.md`` (the table on top; notes
below it are kept).

    .venv/bin/python bench/bench_layouts.py --frames 300 --seeds 11 13 --rig4-seed 12
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from pathlib import Path

import tomli_w

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.allocator import keep_freed_memory  # noqa: E402
from agent.commands.eval_pose import score_results  # noqa: E402
from agent.pose_context import PoseContext  # noqa: E402
from agent.pose_pipeline import run_pose  # noqa: E402
from agent.recording import load_recording  # noqa: E402
from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording  # noqa: E402
from bench.report_file import write_report  # noqa: E402

LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "back-bottom-with-hind-paws": {
        "front": ("ear_L", "ear_R", "back_top"),
        "rear": ("back_bottom", "hindpaw_L", "hindpaw_R"),
        "tail": ("tail_base", "tail_tip"),
    },
    "no-paws": {
        "ears": ("ear_L", "ear_R"),
        "back": ("back_top", "back_middle", "back_bottom"),
        "tail": ("tail_base", "tail_middle", "tail_tip"),
    },
    "four-paws": {
        "head": ("ear_L", "ear_R"),
        "paws": ("forepaw_L", "forepaw_R", "hindpaw_L", "hindpaw_R"),
        "back": ("back_top", "back_bottom"),
    },
    "ears-with-back-top": {
        "head": ("ear_L", "ear_R", "back_top"),
        "paws": ("forepaw_L", "forepaw_R", "hindpaw_L", "hindpaw_R"),
        "tail": ("tail_base",),
    },
}
FILES_WITH_NAMES = ("seeds.csv", "ground_truth_2d.csv")


def neutral_copy(recording_dir: Path, out: Path) -> Path:
    """The recording with its keypoints renamed ``point0`` ... (no left/right twins), videos shared."""
    if (out / "recording.toml").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    manifest = tomllib.loads((recording_dir / "recording.toml").read_text(encoding="utf-8"))
    names = {name: f"point{i}" for i, name in enumerate(manifest["keypoints"])}
    manifest["keypoints"] = [names[name] for name in manifest["keypoints"]]
    manifest["regions"] = {region: [names[name] for name in members]
                           for region, members in manifest["regions"].items()}
    (out / "recording.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    shutil.copy(recording_dir / "calibration.toml", out / "calibration.toml")
    (out / "videos").unlink(missing_ok=True)
    (out / "videos").symlink_to((recording_dir / "videos").resolve())
    for file in FILES_WITH_NAMES:
        lines = (recording_dir / file).read_text(encoding="utf-8").splitlines()
        renamed = [lines[0]]
        for line in lines[1:]:
            fields = line.split(",")
            fields[2] = names[fields[2]]  # frame,camera,keypoint,...
            renamed.append(",".join(fields))
        (out / file).write_text("\n".join(renamed) + "\n", encoding="utf-8")
    header, *rows = (recording_dir / "ground_truth.csv").read_text(encoding="utf-8").splitlines()
    columns = [column if column == "fnum" else f"{names[column[:-2]]}{column[-2:]}"
               for column in header.split(",")]
    (out / "ground_truth.csv").write_text("\n".join([",".join(columns), *rows]) + "\n",
                                          encoding="utf-8")
    return out


def bench_recording(recording_dir: Path, work: Path) -> dict:
    """Within 5 mm, mean error and QC of the full pipeline on ``recording_dir``."""
    out = work / "runs" / recording_dir.name
    summary = run_pose(recording_dir, out, PoseContext(), overwrite=True, quiet=True)
    metrics = score_results(load_recording(recording_dir), out)
    row = {"recording": recording_dir.name, "within5": metrics.share_within_5mm,
           "mean_mm": metrics.mean_error_mm, "triangulable": metrics.share_triangulable,
           "qc_precision": metrics.qc_precision, "qc_recall": metrics.qc_recall,
           "wall_s": summary.wall_s}
    print(row, flush=True)
    return row


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report(rows: list[tuple[str, str, dict, dict]], command: str) -> str:
    lines = [
        "# Pose pipeline on other keypoint layouts (classical backend)",
        "",
        f"Command: `{command}`",
        "",
        "Each recording runs with the layout's names and again with neutral names (no twins).",
        "",
        "| layout | recording | within 5 mm | neutral names | mean mm | neutral | "
        "triangulable | QC precision | QC recall | neutral QC precision / recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layout, recording, named, neutral in rows:
        lines.append(
            f"| {layout} | {recording} | {_ratio(named['within5'])} | {_ratio(neutral['within5'])} "
            f"| {named['mean_mm']:.2f} | {neutral['mean_mm']:.2f} | {_ratio(named['triangulable'])} "
            f"| {named['qc_precision']:.3f} | {named['qc_recall']:.3f} "
            f"| {neutral['qc_precision']:.3f} / {neutral['qc_recall']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 13])
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--rig4-seed", type=int, default=12, help="seed of the 4-camera recordings (-1: none)")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-layouts"))
    parser.add_argument("--report", type=Path,
                        default=REPO_ROOT / "bench" / "results" / "pose-layouts.md")
    args = parser.parse_args()
    plan = [(args.cameras, seed) for seed in args.seeds]
    if args.rig4_seed >= 0:
        plan.append((4, args.rig4_seed))
    rows = []
    for layout in args.layouts:
        regions = tuple((region, members) for region, members in LAYOUTS[layout].items())
        for cameras, seed in plan:
            recording_dir = args.work / f"{layout}-{cameras}cam-seed{seed}-{args.frames}f"
            if not (recording_dir / "recording.toml").is_file():
                synthesize_pose_recording(recording_dir, SynthPoseOptions(
                    frames=args.frames, cameras=cameras, seed=seed, regions=regions,
                    overwrite=True))
            neutral_dir = neutral_copy(recording_dir, args.work / f"{recording_dir.name}-neutral")
            rows.append((layout, f"{cameras} cameras, seed {seed}",
                         bench_recording(recording_dir, args.work),
                         bench_recording(neutral_dir, args.work)))
    command = ".venv/bin/python bench/bench_layouts.py " + " ".join(sys.argv[1:])
    table = report(rows, command.strip())
    write_report(args.report, table)
    print(table)


if __name__ == "__main__":
    keep_freed_memory()  # as `python -m agent.run` does
    main()
