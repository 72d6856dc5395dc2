"""Benchmark of tools/clip_video.py: cutting clip videos from the MABe 60 s session.

Three animals, 2 s clips covering the whole timeline for each (90 clips), 10 fps
output, focal centroid and the two other animals drawn. Compares the one-pass
cut_clip_videos with calling write_clip_video once per clip. Run from the
repo root (needs ../shared/data):

    .venv/bin/python bench/bench_clips.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tools.clip_video import ClipVideoRequest, cut_clip_videos, write_clip_video

SESSION = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mabe22-triplets-EGS8X2MN4SSUGFWAV976"
)
FPS, CLIP_FRAMES, VIDEO_SECONDS = 30.0, 60, 60.0


def clip_requests() -> list[ClipVideoRequest]:
    """2 s clips per animal over the session, tracks = mean of the 12 keypoints."""
    table = pd.read_hdf(SESSION / "keypoints.h5")
    animals = sorted(table.columns.get_level_values("individuals").unique())
    tracks = {}
    for animal in animals:
        coords = table.xs(animal, level="individuals", axis=1)
        tracks[animal] = np.stack(
            [
                coords.xs(axis_name, level="coords", axis=1).mean(axis=1).to_numpy()
                for axis_name in "xy"
            ],
            axis=1,
        )
    n_frames = len(table)
    requests = []
    for animal in animals:
        for start in range(0, n_frames, CLIP_FRAMES):
            end = min(start + CLIP_FRAMES, n_frames)
            requests.append(
                ClipVideoRequest(
                    clip_id=f"{animal}_{start:05d}",
                    start_frame=start,
                    end_frame=end,
                    focal_track=tracks[animal][start:end],
                    focal_name=animal,
                    other_tracks={o: tracks[o][start:end] for o in animals if o != animal},
                    label="cluster 3",
                )
            )
    return requests


def timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    requests = clip_requests()
    video = SESSION / "video.mp4"
    print(f"{len(requests)} clips of {CLIP_FRAMES} frames, {VIDEO_SECONDS:g} s of video")
    print("| method | wall s | CPU s | x real time (wall) | x real time (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out_dir:
            wall, cpu = timed(lambda: cut_clip_videos(video, out_dir, requests, FPS))
        print(
            f"| cut_clip_videos (one pass) | {wall:.2f} | {cpu:.2f} | "
            f"{VIDEO_SECONDS / wall:.1f} | {VIDEO_SECONDS / cpu:.1f} |"
        )
    with tempfile.TemporaryDirectory() as out_dir:

        def one_by_one() -> None:
            for clip in requests:
                write_clip_video(
                    video,
                    Path(out_dir) / f"{clip.clip_id}.mp4",
                    clip.start_frame,
                    clip.end_frame,
                    FPS,
                    focal_track=clip.focal_track,
                    focal_name=clip.focal_name,
                    other_tracks=clip.other_tracks,
                    label=clip.label,
                )

        wall, cpu = timed(one_by_one)
    print(
        f"| write_clip_video per clip | {wall:.2f} | {cpu:.2f} | "
        f"{VIDEO_SECONDS / wall:.1f} | {VIDEO_SECONDS / cpu:.1f} |"
    )


if __name__ == "__main__":
    main()
