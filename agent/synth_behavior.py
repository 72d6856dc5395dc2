"""``python -m agent.run synth behavior``: a simulated multi-mouse session with ground truth.

Writes a behavior session (FORMATS.md section 3) from :mod:`tools.behavior_sim`:
``session.toml``, ``video.mp4`` (top view, OpenCV ``mp4v``), ``keypoints.h5``
(DeepLabCut multi-animal table; omitted with ``--no-keypoints``) and
``ground_truth.csv``. The session is assembled in a temporary folder beside
``--out`` and moved into place at the end, so a failure leaves nothing
half-written. Same seed, same session.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tomli_w

from agent.atomic import replaced_directory, write_text_atomic
from agent.errors import InputError
from tools.behavior_sim import (
    BODYPARTS,
    SimParams,
    SimulatedSession,
    render_background,
    render_frames,
    simulate_behavior,
)

SCORER = "bvlm_simulator"


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = SimParams()
    parser.add_argument("--out", required=True, type=Path, help="session directory to write")
    parser.add_argument("--animals", type=int, default=defaults.n_animals, help="number of mice")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="session length")
    parser.add_argument("--fps", type=float, default=defaults.fps, help="frame rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same session)")
    parser.add_argument("--size", type=int, default=defaults.size, help="width and height of the video, px")
    parser.add_argument("--no-keypoints", action="store_true", help="video only: no keypoints.h5")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    params = SimParams(n_animals=args.animals, seconds=args.seconds, fps=args.fps, size=args.size)
    try:
        params.check()
    except ValueError as exc:
        raise InputError("synth behavior", str(exc)) from None
    if not 0 <= args.seed < 2**32:
        raise InputError("--seed", f"must be 0..{2**32 - 1}, got {args.seed}")
    session = synthesize_behavior_session(args.out, params, seed=args.seed, keypoints=not args.no_keypoints,
                                          overwrite=args.overwrite)
    counts = pd.Series([b.label for b in session.bouts]).value_counts().sort_index()
    print(f"wrote {args.out}: {params.n_animals} animals, {session.n_frames} frames, "
          f"{len(session.bouts)} bouts ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def synthesize_behavior_session(
    out_dir: str | Path, params: SimParams | None = None, *, seed: int = 0, keypoints: bool = True,
    overwrite: bool = False,
) -> SimulatedSession:
    """Simulate and write a session directory; returns the simulation (with its ground truth).

    Raises
    ------
    InputError
        ``out_dir`` is a file, or a non-empty directory without ``overwrite``.
    """
    params = params or SimParams()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "is not empty; pass --overwrite to replace it")
    session = simulate_behavior(params, seed)
    animals = [f"mouse{i + 1}" for i in range(params.n_animals)]
    with replaced_directory(out) as staging:
        _write_video(staging / "video.mp4", session, seed)
        if keypoints:
            _write_keypoints(staging / "keypoints.h5", session, animals)
        write_text_atomic(staging / "ground_truth.csv", _ground_truth_csv(session, animals))
        manifest: dict[str, object] = {"fps": params.fps, "video": "video.mp4", "animals": animals}
        if keypoints:
            manifest["keypoints"] = "keypoints.h5"
        manifest["arena"] = {"food_zone": [round(v, 2) for v in session.food_zone]}
        write_text_atomic(staging / "session.toml", tomli_w.dumps(manifest))
    return session


def _write_video(path: Path, session: SimulatedSession, seed: int) -> None:
    background = render_background(session.size, session.food_zone, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), session.fps,
                             (session.size, session.size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    try:
        for frame in render_frames(session.keypoints, session.body_length_px, background):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()


def _write_keypoints(path: Path, session: SimulatedSession, animals: list[str]) -> None:
    """DeepLabCut multi-animal table: columns scorer / individuals / bodyparts / coords (x, y, likelihood)."""
    n_frames, n_animals, n_parts, _ = session.keypoints.shape
    likelihood = np.ones((n_frames, n_animals, n_parts, 1))
    values = np.concatenate([session.keypoints, likelihood], axis=-1).reshape(n_frames, -1)
    columns = pd.MultiIndex.from_product([[SCORER], animals, list(BODYPARTS), ["x", "y", "likelihood"]],
                                         names=["scorer", "individuals", "bodyparts", "coords"])
    pd.DataFrame(values, columns=columns).to_hdf(path, key="df_with_missing", mode="w")


def _ground_truth_csv(session: SimulatedSession, animals: list[str]) -> str:
    buffer = io.StringIO()
    buffer.write("animal,start_frame,end_frame,label\n")
    for bout in session.bouts:
        buffer.write(f"{animals[bout.animal]},{bout.start_frame},{bout.end_frame},{bout.label}\n")
    return buffer.getvalue()
