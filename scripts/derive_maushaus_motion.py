"""Regenerate ``tools/data/maushaus_qd12.npz`` from the MausHaus3D tracker output.

Source: AmadeusGPT repository ``examples/MausHaus3D/`` (Apache-2.0), copied to
``../shared/data/maushaus3d-motion/keypoints_3d.h5`` (pandas HDF5, key ``df``,
30 bodyparts, cm). The script maps 12 bodyparts to the quantum-dot keypoints,
converts to mm, repairs the tracking (:func:`tools.motion.repair_motion`),
puts the floor at z = 0 (nothing below it) and centres the motion in the arena.

Usage::

    .venv/bin/python scripts/derive_maushaus_motion.py [SOURCE_H5] [OUT_NPZ]
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.atomic import write_bytes_atomic  # noqa: E402
from tools.motion import QD_KEYPOINTS, repair_motion  # noqa: E402

DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "maushaus3d-motion" / "keypoints_3d.h5"
DEFAULT_OUT = REPO_ROOT / "tools" / "data" / "maushaus_qd12.npz"

# Quantum-dot keypoint -> MausHaus3D bodypart (the mapping the data README suggests).
BODYPART_OF = {
    "ear_L": "lefteartip",
    "ear_R": "righteartip",
    "back_top": "spine1",
    "back_middle": "spine3",
    "back_bottom": "spine6",
    "forepaw_L": "leftFOREleg",
    "forepaw_R": "rightFOREleg",
    "hindpaw_L": "leftHINDleg",
    "hindpaw_R": "rightHINDleg",
    "tail_base": "tailbase",
    "tail_middle": "tail2",
    "tail_tip": "tail5",
}
# QD dots sit on top of the paws: a paw resting on the floor has its dot this high.
PAW_DOT_HEIGHT_MM = 3.0


def load_maushaus(path: Path) -> np.ndarray:
    """The 12 mapped bodyparts as ``(n_frames, 12, 3)`` in mm; missing points are (0, 0, 0)."""
    table = pd.read_hdf(path, "df")
    bodyparts = table.columns.get_level_values(1)
    coords = table.columns.get_level_values(2)
    columns = [
        np.flatnonzero((bodyparts == BODYPART_OF[name]) & (coords == axis))[0]
        for name in QD_KEYPOINTS
        for axis in "xyz"
    ]
    return table.to_numpy(dtype=np.float64)[:, columns].reshape(len(table), 12, 3) * 10.0


def derive(source: Path) -> np.ndarray:
    """Repaired, floored and centred QD motion ``(n_frames, 12, 3)`` float32, mm."""
    index = {name: i for i, name in enumerate(QD_KEYPOINTS)}
    motion = repair_motion(
        load_maushaus(source),
        spine=(index["back_top"], index["back_middle"], index["back_bottom"]),
        pairs=[
            (index["ear_L"], index["ear_R"]),
            (index["forepaw_L"], index["forepaw_R"]),
            (index["hindpaw_L"], index["hindpaw_R"]),
        ],
        tail_chain=[index["tail_base"], index["tail_middle"], index["tail_tip"]],
    )
    paws = motion[:, [index[k] for k in ("forepaw_L", "forepaw_R", "hindpaw_L", "hindpaw_R")]]
    floor = np.percentile(paws[..., 2], 2.0)
    motion[..., 2] += PAW_DOT_HEIGHT_MM - floor
    # The tracker sometimes puts a paw under the floor; nothing can go there.
    motion[..., 2] = np.maximum(motion[..., 2], PAW_DOT_HEIGHT_MM)
    low, high = motion[..., :2].min(axis=(0, 1)), motion[..., :2].max(axis=(0, 1))
    motion[..., :2] -= (low + high) / 2.0
    return motion.astype(np.float32)


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    motion = derive(source)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, points_mm=motion, keypoints=np.array(QD_KEYPOINTS))
    write_bytes_atomic(out, buffer.getvalue())
    print(f"wrote {out}: {motion.shape}, {out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
