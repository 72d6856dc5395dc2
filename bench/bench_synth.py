"""Time ``synth pose`` end to end (simulation, rendering, encoding) and check spot accuracy.

Usage::

    .venv/bin/python bench/bench_synth.py [--frames 500] [--cameras 6] [--motion real]
                                          [--format video] [--width 1024] [--height 700]

Writes into a temporary folder that is deleted afterwards. Prints the wall
time, the output size, the mean number of cameras that see each dot, and how
far the intensity-weighted centroid of each isolated spot, read back from the
encoded stream, lies from the true projection (every 10th frame).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.recording import Recording, load_recording  # noqa: E402
from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording  # noqa: E402

WINDOW = 4  # half-width of the centroid window, pixels
ISOLATION_PX = 12.0


def centroid_errors(recording: Recording, frame_step: int = 10) -> np.ndarray:
    """Distance (px) from each isolated visible spot's centroid to its true projection."""
    errors = []
    for camera_index, camera in enumerate(recording.cameras):
        for frame in range(0, recording.n_frames, frame_step):
            image = recording.fluorescence(camera).read(frame).astype(np.float64)
            truth = recording.ground_truth_2d[frame, camera_index]
            shown = recording.ground_truth_visible[frame, camera_index]
            for keypoint in np.flatnonzero(shown):
                gaps = np.linalg.norm(truth - truth[keypoint], axis=1)
                gaps[keypoint] = np.inf
                x, y = np.rint(truth[keypoint]).astype(int)
                inside = (
                    WINDOW <= x < image.shape[1] - WINDOW and WINDOW <= y < image.shape[0] - WINDOW
                )
                if gaps.min() < ISOLATION_PX or not inside:
                    continue
                patch = image[y - WINDOW : y + WINDOW + 1, x - WINDOW : x + WINDOW + 1]
                weights = np.clip(patch - np.median(image), 0.0, None)
                ys, xs = np.mgrid[y - WINDOW : y + WINDOW + 1, x - WINDOW : x + WINDOW + 1]
                centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
                errors.append(np.linalg.norm(centroid - truth[keypoint]))
    return np.array(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=700)
    parser.add_argument("--motion", choices=("real", "walker"), default="real")
    parser.add_argument("--format", choices=("video", "images"), default="video")
    args = parser.parse_args()
    options = SynthPoseOptions(
        frames=args.frames, cameras=args.cameras, width=args.width, height=args.height,
        motion=args.motion, format=args.format,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        out = synthesize_pose_recording(Path(scratch) / "rec", options)
        total_s = time.perf_counter() - started
        size_mb = sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) / 1e6
        recording = load_recording(out)
        cameras_per_dot = recording.ground_truth_visible.sum(axis=1).mean()
        errors = centroid_errors(recording)
        recording.close()
    images = 2 * options.frames * options.cameras
    print(f"options: {options}")
    print(f"synth pose: {total_s:.1f} s for {images} images ({1000 * total_s / images:.1f} ms "
          f"per image), output {size_mb:.0f} MB")  # fmt: skip
    print(f"cameras seeing a dot, mean over frames and keypoints: {cameras_per_dot:.2f}")
    print(f"isolated spot centroid error: median {np.median(errors):.3f} px, "
          f"p95 {np.percentile(errors, 95):.3f} px over {len(errors)} spots")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
