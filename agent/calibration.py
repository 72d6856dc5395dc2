"""Read and write ``calibration.toml`` (aniposelib's ``CameraGroup.dump`` format).

Cameras are matched to the manifest by ``name``, never by table order.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tomli_w

from agent.atomic import write_text_atomic
from agent.errors import InputError
from agent.toml_files import read_toml
from tools.geometry import Camera, CameraGroup

_REQUIRED = ("name", "size", "matrix", "distortions", "rotation", "translation")


def _camera_from_table(path: Path, table_name: str, table: dict) -> Camera:
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        raise InputError(path, f"table [{table_name}] lacks {', '.join(missing)}")
    try:
        size = tuple(int(v) for v in table["size"])
        matrix = np.asarray(table["matrix"], dtype=np.float64)
        dist = np.asarray(table["distortions"], dtype=np.float64).ravel()
        rvec = np.asarray(table["rotation"], dtype=np.float64).ravel()
        tvec = np.asarray(table["translation"], dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"table [{table_name}] has a non-numeric value: {exc}") from None
    if len(size) != 2 or matrix.shape != (3, 3) or rvec.shape != (3,) or tvec.shape != (3,):
        raise InputError(
            path,
            f"table [{table_name}] needs size (2), matrix (3x3), rotation (3), translation (3); "
            f"got size {len(size)}, matrix {matrix.shape}, rotation {rvec.shape}, "
            f"translation {tvec.shape}",
        )
    if dist.shape[0] > 5:
        raise InputError(path, f"table [{table_name}] has {dist.shape[0]} distortions, expected 5")
    dist = np.pad(dist, (0, 5 - dist.shape[0]))
    if not all(np.all(np.isfinite(a)) for a in (matrix, dist, rvec, tvec)):
        raise InputError(path, f"table [{table_name}] has a NaN or infinite value")
    # A pinhole camera matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with positive focal lengths.
    if not (matrix[0, 0] > 0 and matrix[1, 1] > 0 and np.allclose(matrix[2], [0, 0, 1])
            and np.allclose(matrix[1, 0], 0)):
        raise InputError(path, f"table [{table_name}] matrix must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                               f"with fx, fy > 0, got {matrix.tolist()}")
    rotation = cv2.Rodrigues(rvec)[0]
    if not (np.all(np.isfinite(rotation)) and np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)):
        raise InputError(path, f"table [{table_name}] rotation is not a rotation (Rodrigues vector in "
                               f"radians), got {rvec.tolist()}")
    return Camera(str(table["name"]), (size[0], size[1]), matrix, dist, rvec, tvec)


def load_calibration(path: str | Path, camera_names: list[str] | None = None) -> CameraGroup:
    """Load a calibration; with ``camera_names``, return those cameras in that order.

    Raises
    ------
    InputError
        Missing or unparseable file, malformed table, or a requested camera absent.
    """
    path = Path(path)
    data = read_toml(path)
    cameras = [
        _camera_from_table(path, key, value)
        for key, value in data.items()
        if key != "metadata" and isinstance(value, dict)
    ]
    if not cameras:
        raise InputError(path, "no camera tables found")
    if len({camera.name for camera in cameras}) != len(cameras):
        raise InputError(path, "two camera tables share a name")
    group = CameraGroup(tuple(cameras))
    return group if camera_names is None else select_cameras(group, camera_names, path)


def select_cameras(group: CameraGroup, camera_names: list[str], path: str | Path) -> CameraGroup:
    """The cameras of ``group`` named ``camera_names``, in that order; InputError naming ``path``
    (the calibration) where one is absent."""
    by_name = {camera.name: camera for camera in group.cameras}
    missing = [name for name in camera_names if name not in by_name]
    if missing:
        raise InputError(path, f"no calibration for camera(s) {', '.join(missing)} named in the manifest")
    return CameraGroup(tuple(by_name[name] for name in camera_names))


def dump_calibration(group: CameraGroup, path: str | Path) -> Path:
    """Write ``group`` in aniposelib's format (tables ``cam_0``, ``cam_1``, ... in group order)."""
    document: dict = {}
    for index, camera in enumerate(group.cameras):
        document[f"cam_{index}"] = {
            "name": camera.name,
            "size": [int(camera.size[0]), int(camera.size[1])],
            "matrix": [[float(v) for v in row] for row in camera.matrix],
            "distortions": [float(v) for v in camera.dist],
            "rotation": [float(v) for v in camera.rvec],
            "translation": [float(v) for v in camera.tvec],
        }
    document["metadata"] = {}
    return write_text_atomic(path, tomli_w.dumps(document))
