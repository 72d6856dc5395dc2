"""Time detect_centroids on 1024x700 fluorescence frames against decoding one mp4 frame.

Usage::

    .venv/bin/python bench/bench_centroids.py [--frames 200] [--repeats 5]

Renders ``--frames`` synthetic uint8 frames (12 Gaussian spots, sigma 2 px, on a
dim vignetted background with Gaussian noise), times ``detect_centroids`` on
each (default parameters, with and without splitting, and with a given median
background), then writes the same frames to an mp4 (``mp4v``) in a temporary
directory and times decoding them with ``cv2.VideoCapture``. Prints a Markdown
table of per-frame milliseconds (mean, median and 90th percentile over the
frames; each frame's time is its best of ``--repeats`` passes).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tools.centroids import CentroidParams, detect_centroids

WIDTH, HEIGHT = 1024, 700
N_SPOTS = 12
SPOT_SIGMA_PX = 2.0


def render_frames(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n_frames, H, W)`` uint8 frames and their ``(H, W)`` noise-free background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    radius2 = ((cols - WIDTH / 2) / WIDTH) ** 2 + ((rows - HEIGHT / 2) / HEIGHT) ** 2
    background = 8.0 + 14.0 * np.exp(-4.0 * radius2)
    frames = np.empty((n_frames, HEIGHT, WIDTH), np.uint8)
    half = int(4 * SPOT_SIGMA_PX)
    for index in range(n_frames):
        image = background + rng.normal(0.0, 3.0, (HEIGHT, WIDTH)).astype(np.float32)
        centres = rng.uniform([20, 20], [WIDTH - 20, HEIGHT - 20], size=(N_SPOTS, 2))
        for (x, y), peak in zip(centres, rng.uniform(60, 220, N_SPOTS), strict=True):
            window = (slice(int(y) - half, int(y) + half + 1), slice(int(x) - half, int(x) + half + 1))
            spot = np.exp(-((cols[window] - x) ** 2 + (rows[window] - y) ** 2) / (2 * SPOT_SIGMA_PX**2))
            image[window] += peak * spot
        frames[index] = np.clip(np.rint(image), 0, 255)
    return frames, background


def per_frame_ms(run: Callable[[int], object], n_frames: int, repeats: int) -> np.ndarray:
    """Per-frame milliseconds, elementwise best of ``repeats`` passes over all frames."""
    best = np.full(n_frames, np.inf)
    for _ in range(repeats):
        for index in range(n_frames):
            start = time.perf_counter()
            run(index)
            best[index] = min(best[index], (time.perf_counter() - start) * 1e3)
    return best


def decode_ms(frames: np.ndarray, repeats: int) -> np.ndarray:
    """Per-frame milliseconds to decode ``frames`` written as an mp4 (grab + retrieve)."""
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "fluorescence.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        writer.release()
        best = np.full(frames.shape[0], np.inf)
        for _ in range(repeats):
            capture = cv2.VideoCapture(path)
            for index in range(frames.shape[0]):
                start = time.perf_counter()
                ok, _ = capture.read()
                best[index] = min(best[index], (time.perf_counter() - start) * 1e3)
                if not ok:
                    raise RuntimeError(f"could not decode frame {index} of {path}")
            capture.release()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frames, background = render_frames(args.frames, args.seed)
    no_split = CentroidParams(split_merged=False)
    cases = {
        "detect_centroids (default)": lambda i: detect_centroids(frames[i]),
        "detect_centroids (split_merged=False)": lambda i: detect_centroids(frames[i], no_split),
        "detect_centroids (background given)": lambda i: detect_centroids(frames[i],
                                                                          background=background),
    }
    found = np.mean([len(detect_centroids(frame)) for frame in frames])
    print(f"{args.frames} frames {WIDTH}x{HEIGHT} uint8, {N_SPOTS} spots each "
          f"(mean found {found:.2f}), OpenCV threads {cv2.getNumThreads()}\n")
    print("| step | mean ms/frame | median | p90 |\n| --- | --- | --- | --- |")
    rows = {name: per_frame_ms(run, args.frames, args.repeats) for name, run in cases.items()}
    rows["decode 1 mp4v frame (cv2.VideoCapture.read)"] = decode_ms(frames, args.repeats)
    for name, timings in rows.items():
        print(f"| {name} | {timings.mean():.2f} | {np.median(timings):.2f} "
              f"| {np.percentile(timings, 90):.2f} |")


if __name__ == "__main__":
    main()
