"""Benchmark of the behavior pipeline on simulated sessions with ground truth.

For each seed, animal count and input (keypoints + video, or video only) a
session is simulated, analysed with ``python -m agent.run behavior`` and
scored with ``eval-behavior``: clip boundary recall within 0.5 s (goal >=
0.9), frame accuracy after many-to-one label mapping (goal >= 0.8) and the
ratio of segment counts (goal within 2x of the truth). Writes a Markdown
table (``--table``) with the command that produced it.

Run: ``.venv/bin/python bench/bench_behavior.py --seeds 0 1 --clusters 10 20``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.run import main
from agent.synth_behavior import synthesize_behavior_session
from tools.behavior_sim import SimParams

GOALS = {"clip_boundary_recall": 0.9, "frame_accuracy": 0.8}


def _score(session: Path, out: Path, features: str, clusters: int) -> tuple[dict, float]:
    started = time.perf_counter()
    code = main(["behavior", str(session), "--out", str(out), "--features", features, "--clusters", str(clusters),
                 "--quiet", "--overwrite", "--no-clip-videos"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"behavior run failed on {session}")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["eval-behavior", str(session), str(out), "--json"])
    return json.loads(printed.getvalue()), seconds


def run_bench(seeds: list[int], animals: list[int], clusters: list[int], seconds: float, work: Path,
              keypoint_features: str) -> list[dict]:
    rows = []
    for n_animals in animals:
        for keypoints in (True, False):
            for seed in seeds:
                session = work / f"a{n_animals}-{'kp' if keypoints else 'video'}-s{seed}"
                if not session.exists():
                    synthesize_behavior_session(session, SimParams(n_animals=n_animals, seconds=seconds), seed=seed,
                                                keypoints=keypoints)
                for k in clusters:
                    features = keypoint_features if keypoints else "visual"
                    scores, wall = _score(session, work / f"{session.name}-k{k}", features, k)
                    rows.append({"animals": n_animals, "input": f"keypoints ({features})" if keypoints else "video only",
                                 "seed": seed, "clusters": k, "wall_s": wall, **scores})
                    print(json.dumps({k2: rows[-1][k2] for k2 in ("animals", "input", "seed", "clusters",
                                                                   "clip_boundary_recall", "frame_accuracy",
                                                                   "segment_count_ratio", "wall_s")}), file=sys.stderr)
    return rows


def table(rows: list[dict], command: str) -> str:
    lines = ["# Behavior pipeline on simulated sessions", "", f"Command: `{command}`", "",
             "Classical backend; 60 s sessions at 512 px, 30 fps; scores from `eval-behavior`. "
             "Goals: clip boundary recall (0.5 s) >= 0.9, frame accuracy (many-to-one) >= 0.8, "
             "segment count within 2x of the truth.", "",
             "| animals | input | K | seeds | clip boundary recall | frame accuracy | macro F1 | segment boundary F1 "
             "| segments / truth | wall s / run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["animals"], row["input"], row["clusters"]), []).append(row)
    keys = ("clip_boundary_recall", "frame_accuracy", "macro_f1", "segment_boundary_f1", "segment_count_ratio")
    for (n_animals, source, k), members in groups.items():
        means = " | ".join(f"{np.nanmean([m[key] for m in members]):.3f}" for key in keys)
        lines.append(f"| {n_animals} | {source} | {k} | {len(members)} | {means} | "
                     f"{np.mean([m['wall_s'] for m in members]):.1f} |")
    return "\n".join(lines) + "\n"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--animals", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--clusters", type=int, nargs="+", default=[10])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--keypoint-features", choices=("keypoint", "fused"), default="fused",
                        help="features clustered on sessions with keypoints (video-only sessions: visual)")
    parser.add_argument("--table", type=Path, default=Path("bench/results/behavior.md"))
    args = parser.parse_args()
    command = "python bench/bench_behavior.py " + shlex.join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-behavior-") as work:
        rows = run_bench(args.seeds, args.animals, args.clusters, args.seconds, Path(work), args.keypoint_features)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(table(rows, command))
    print(table(rows, command))


if __name__ == "__main__":
    cli()
