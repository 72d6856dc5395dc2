"""Benchmark of tools/dec.py: DEC training time against session length.

Synthetic features (3 animals, 30 features, 30 fps) switch between 10 motifs
every 1-4 s, like pose features of distinct behaviours. Run from the repo root:

    .venv/bin/python bench/bench_dec.py [--minutes 5 10 30] [--repeats 1]

Prints one Markdown table row per length: wall and CPU seconds of fit_dec with
default DecParams, the self-training iterations run, and the share of frames
whose cluster is the motif's majority cluster (a sanity check, not a score).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tools.dec import DecParams, fit_dec

FPS = 30.0
N_ANIMALS, N_FEATURES, N_MOTIFS = 3, 30, 10


def synthetic_features(n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(T, 3, 30)`` motif features with noise, and the motif of every frame ``(T, 3)``."""
    means = rng.normal(0.0, 2.0, size=(N_MOTIFS, N_FEATURES))
    motifs = np.empty((n_frames, N_ANIMALS), dtype=np.int64)
    for animal in range(N_ANIMALS):
        lengths = rng.integers(int(FPS), int(4 * FPS), size=n_frames // int(FPS) + 1)
        motifs[:, animal] = np.repeat(rng.integers(N_MOTIFS, size=lengths.size), lengths)[:n_frames]
    noise = rng.normal(0.0, 0.7, size=(n_frames, N_ANIMALS, N_FEATURES))
    return (means[motifs] + noise).astype(np.float32), motifs


def majority_agreement(labels: np.ndarray, motifs: np.ndarray) -> float:
    agree = 0
    for motif in range(N_MOTIFS):
        in_motif = labels[motifs == motif]
        agree += np.bincount(in_motif).max() if in_motif.size else 0
    return agree / labels.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 30])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print("| minutes | frames x animals | wall s | CPU s | finetune iters | majority agreement |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for minutes in args.minutes:
        features, motifs = synthetic_features(int(minutes * 60 * FPS), np.random.default_rng(0))
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fit_dec(features, DecParams())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"| {minutes:g} | {motifs.size} | {wall:.1f} | {cpu:.1f} | "
                f"{len(result.finetune_losses)} | {majority_agreement(result.labels, motifs):.3f} |"
            )


if __name__ == "__main__":
    main()
