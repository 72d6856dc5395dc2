"""``python -m agent.run synth pose``: simulate a quantum-dot multi-camera recording.

Writes a recording directory exactly as FORMATS.md section 1 describes, with
ground truth: a ring of cameras films a mouse moving with real (MausHaus3D,
repaired) or procedural motion. Occlusion is physical (:mod:`tools.qd_render`),
and ``ground_truth_2d.csv`` marks visible exactly the dots that were drawn.
Same options and seed give byte-identical CSV, TOML and JSON files.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import tomli_w

from agent.atomic import replaced_directory, write_json_atomic, write_text_atomic
from agent.calibration import dump_calibration
from agent.errors import InputError
from agent.recording import check_regions
from tools import qd_render
from tools.camera import camera_centres
from tools.geometry import CameraGroup, project
from tools.motion import QD_KEYPOINTS, QD_REGIONS, pingpong_indices, walk_procedural

FPS = 30.0
SEED_FRAMES = (0, 1, 2)  # labelled in seeds.csv unless --seed-frames says otherwise
SEED_LABEL_NOISE_PX = 1.0
# Grey levels of the capsules in reflectance frames (dark mouse, pale tail and paws).
_CAPSULE_SHADES = np.array([45, 40, 50, 55, 60, 115, 125] + [70] * 4 + [95] * 4, dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class SynthPoseOptions:
    """What to simulate. Field names match the CLI options."""

    frames: int = 500
    cameras: int = 6
    seed: int = 0
    width: int = 1024
    height: int = 700
    dropout: float = 0.02
    spurious: float = 1.0
    blur: float = 1.5
    elevation: tuple[float, float] = (35.0, 55.0)
    format: str = "video"
    motion: str = "real"
    seed_frames: tuple[int, ...] = SEED_FRAMES
    # (region, keypoints) pairs naming a subset of QD_KEYPOINTS; None: all 12 in QD_REGIONS.
    regions: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    overwrite: bool = False

    @property
    def layout(self) -> dict[str, tuple[str, ...]]:
        """The recording's regions; its keypoints are their members in ``QD_KEYPOINTS`` order."""
        return dict(self.regions) if self.regions is not None else dict(QD_REGIONS)

    @property
    def kept(self) -> np.ndarray:
        """Indices into ``QD_KEYPOINTS`` of the recording's keypoints."""
        members = {name for names in self.layout.values() for name in names}
        return np.array([i for i, name in enumerate(QD_KEYPOINTS) if name in members], dtype=int)


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = SynthPoseOptions()
    parser.add_argument("--out", required=True, type=Path, help="recording directory to write")
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per stream")
    parser.add_argument("--cameras", type=int, default=defaults.cameras, help="cameras on the ring")
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed (same seed, same recording)"
    )
    parser.add_argument("--width", type=int, default=defaults.width, help="image width in pixels")
    parser.add_argument(
        "--height", type=int, default=defaults.height, help="image height in pixels"
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=defaults.dropout,
        help="chance that a visible dot is missing from a frame anyway",
    )
    parser.add_argument(
        "--spurious",
        type=float,
        default=defaults.spurious,
        help="mean number of spurious spots per fluorescence frame",
    )
    parser.add_argument("--blur", type=float, default=defaults.blur, help="spot sigma in pixels")
    parser.add_argument(
        "--elevation", type=float, nargs=2, default=list(defaults.elevation), metavar=("LOW", "HIGH"),
        help="cameras' angles above the horizon, degrees (each drawn between LOW and HIGH; "
        "default 35 55; 60 80 looks down on the animal)",
    )
    parser.add_argument(
        "--format",
        choices=("video", "images"),
        default=defaults.format,
        help="streams as .mp4 videos or folders of PNG images",
    )
    parser.add_argument(
        "--motion",
        choices=("real", "walker"),
        default=defaults.motion,
        help="real: the shipped MausHaus3D mouse (ping-pong beyond 1000 frames); "
        "walker: procedural motion of any length",
    )
    parser.add_argument(
        "--seed-frames", type=int, nargs="+", default=list(defaults.seed_frames), metavar="FRAME",
        help="frames labelled in seeds.csv (at least 3; default 0 1 2)",
    )
    parser.add_argument(
        "--regions", type=Path, default=None, metavar="TOML",
        help="a TOML file whose [regions] table names some of the 12 quantum-dot keypoints per "
        "region (for example 8 keypoints in 3 regions); only their dots are drawn",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace files in a non-empty --out"
    )


def run(args: argparse.Namespace) -> int:
    options = SynthPoseOptions(
        frames=args.frames,
        cameras=args.cameras,
        seed=args.seed,
        width=args.width,
        height=args.height,
        dropout=args.dropout,
        spurious=args.spurious,
        blur=args.blur,
        elevation=tuple(args.elevation),
        format=args.format,
        motion=args.motion,
        seed_frames=tuple(args.seed_frames),
        regions=None if args.regions is None else read_regions(args.regions),
        overwrite=args.overwrite,
    )
    out = synthesize_pose_recording(args.out, options)
    print(f"wrote {out}")
    return 0


def read_regions(path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``[regions]`` table of ``path``: each region's keypoints, names of ``QD_KEYPOINTS``.

    Raises
    ------
    InputError
        An unreadable file or TOML, or a table :func:`layout_keypoints` refuses.
    """
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("regions")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"cannot be read as TOML ({exc})") from None
    layout_keypoints(path, table)
    return tuple((region, tuple(members)) for region, members in table.items())


def layout_keypoints(where: str | Path, regions: object) -> list[str]:
    """The keypoints of a ``regions`` table (region -> list of names), in ``QD_KEYPOINTS`` order.

    Checked as a recording's regions are (:func:`agent.recording.check_regions`:
    a non-empty table of non-empty lists, each name one of ``QD_KEYPOINTS`` and
    in one region only), and at least 2 keypoints; :class:`InputError` naming
    ``where`` otherwise.
    """
    named = ({name for members in regions.values() if isinstance(members, list)
              for name in members if isinstance(name, str)} if isinstance(regions, dict) else set())
    keypoints = [name for name in QD_KEYPOINTS if name in named]
    check_regions(where, regions, keypoints)
    if len(keypoints) < 2:
        raise InputError(where, "needs at least 2 keypoints")
    return keypoints


def _check_options(out_dir: Path, options: SynthPoseOptions) -> None:
    problems = [
        (options.frames < len(SEED_FRAMES), f"--frames must be at least {len(SEED_FRAMES)}"),
        (len(set(options.seed_frames)) < 3, "--seed-frames needs at least 3 different frames"),
        (not all(0 <= f < options.frames for f in options.seed_frames),
         "--seed-frames must lie in [0, --frames)"),
        (options.cameras < 2, "--cameras must be at least 2"),
        (not 0 <= options.seed < 2**32, f"--seed must be 0..{2**32 - 1}"),
        (min(options.width, options.height) < 64, "--width and --height must be at least 64"),
        # The mp4 encoder rounds odd sizes down, and the calibration would disagree with the video.
        (options.format == "video" and (options.width % 2 or options.height % 2),
         "--width and --height must be even for --format video (or use --format images)"),
        (not 0.0 <= options.dropout < 1.0, "--dropout must be in [0, 1)"),
        (not 0.0 <= options.spurious <= 100.0, "--spurious must be in [0, 100]"),
        (not 0.2 <= options.blur <= 20.0, "--blur must be in [0.2, 20] pixels"),
        (not 0.0 <= options.elevation[0] <= options.elevation[1] <= 89.0,
         "--elevation needs 0 <= LOW <= HIGH <= 89 degrees"),
        (options.format not in ("video", "images"), "--format must be video or images"),
        (options.motion not in ("real", "walker"), "--motion must be real or walker"),
    ]
    if options.regions is not None:
        layout_keypoints("synth pose --regions",
                         {region: list(members) for region, members in options.regions})
    for failed, problem in problems:
        if failed:
            raise InputError("synth pose", problem)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not options.overwrite:
        raise InputError(out_dir, "exists and is not empty (pass --overwrite to replace it)")


def load_shipped_motion() -> np.ndarray:
    """The repaired MausHaus3D motion ``(1000, 12, 3)`` mm (scripts/derive_maushaus_motion.py)."""
    data = (resources.files("tools") / "data" / "maushaus_qd12.npz").read_bytes()
    with np.load(io.BytesIO(data)) as archive:
        return archive["points_mm"].astype(np.float64)


def _motion(options: SynthPoseOptions, seed: np.random.SeedSequence) -> np.ndarray:
    """True 3D keypoints ``(n_frames, 12, 3)`` mm, rounded as written to ground_truth.csv."""
    if options.motion == "walker":
        points = walk_procedural(options.frames, int(seed.generate_state(1)[0]), fps=FPS)
    else:
        source = load_shipped_motion()
        points = source[pingpong_indices(len(source), options.frames)]
    # Everything downstream uses exactly the values the CSV holds.
    return np.round(points, 4)


@dataclass(frozen=True, eq=False)
class _Scene:
    """Everything about the simulated session except the pixels."""

    points: np.ndarray  # (n_frames, 12, 3) mm
    group: CameraGroup
    points_2d: np.ndarray  # (n_cameras, n_frames, 12, 2) px
    visible: np.ndarray  # (n_cameras, n_frames, 12) bool: drawn in the fluorescence frame
    peaks: np.ndarray  # (n_cameras, n_frames, 12) spot peak intensity
    sigmas: np.ndarray  # (n_cameras, 12) spot sigma px
    starts: np.ndarray  # (n_frames, n_capsules, 3)
    ends: np.ndarray


def _build_scene(options: SynthPoseOptions, seeds: list[np.random.SeedSequence]) -> _Scene:
    """Motion, rig, visibility (occlusion, image bounds, dropout) and spot brightness."""
    points = _motion(options, seeds[0])
    n_frames = len(points)
    rig_rng, dot_rng = np.random.default_rng(seeds[1]), np.random.default_rng(seeds[2])
    step = max(1, n_frames // 200)
    group = qd_render.make_rig(
        options.cameras, (options.width, options.height), points[::step].reshape(-1, 3), rig_rng,
        options.elevation,
    )
    axes = qd_render.body_axes(points)
    normals = qd_render.qd_normals(points, axes)
    starts, ends = qd_render.body_capsules(points, axes, normals)
    unoccluded = qd_render.visible_dots(
        points, normals, starts, ends, camera_centres(group)
    )
    points_2d = project(group, points.reshape(-1, 3)).reshape(len(group), n_frames, 12, 2)
    in_image = np.all(
        (points_2d >= 0.0) & (points_2d <= [options.width - 1, options.height - 1]), axis=-1
    )
    dropped = dot_rng.random(unoccluded.shape) < options.dropout
    base = dot_rng.uniform(140.0, 255.0, (len(group), 1, 12))
    peaks = base * dot_rng.uniform(0.8, 1.0, unoccluded.shape)
    sigmas = options.blur * dot_rng.uniform(0.85, 1.15, (len(group), 12))
    # Keypoints left out of the layout carry no dot (drawn after every random draw, so the
    # rest of the recording is the one the full layout gives).
    in_layout = np.isin(np.arange(len(QD_KEYPOINTS)), options.kept)
    return _Scene(
        points, group, points_2d, unoccluded & in_image & ~dropped & in_layout, peaks, sigmas,
        starts, ends,
    )


def synthesize_pose_recording(out_dir: str | Path, options: SynthPoseOptions) -> Path:
    """Simulate a recording into ``out_dir`` (FORMATS.md section 1) and return its path.

    Raises
    ------
    InputError
        An option out of range, or ``out_dir`` not empty without ``overwrite``.
    """
    out_dir = Path(out_dir)
    _check_options(out_dir, options)
    seeds = np.random.SeedSequence(options.seed).spawn(4 + options.cameras)
    scene = _build_scene(options, seeds)
    # Written beside out_dir and swapped in: an interrupted --overwrite leaves the old recording
    # (files of the user's that are not the recording's stay).
    with replaced_directory(out_dir, keep_others=True) as staging:
        _write_recording(staging, scene, seeds, options)
    return out_dir


def _write_recording(out_dir: Path, scene: _Scene, seeds: list[np.random.SeedSequence],
                     options: SynthPoseOptions) -> None:
    """Every file of the recording of ``scene`` into the empty ``out_dir``."""
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    camera_seeds = seeds[4:]
    # Each camera has its own generator and files, so threads cannot change the result.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(
            pool.map(
                lambda index: _render_camera(scene, index, camera_seeds[index], options, videos),
                range(options.cameras),
            )
        )
    _write_tables(out_dir, scene, np.random.default_rng(seeds[3]), options.seed_frames,
                  options.kept)
    dump_calibration(scene.group, out_dir / "calibration.toml")
    write_json_atomic(out_dir / "synth.json", _summary(scene, options))
    manifest = {
        "fps": FPS,
        "units": "mm",
        "cameras": scene.group.names,
        "keypoints": [QD_KEYPOINTS[k] for k in options.kept],
        "regions": {name: list(members) for name, members in options.layout.items()},
    }
    write_text_atomic(out_dir / "recording.toml", tomli_w.dumps(manifest))


def _summary(scene: _Scene, options: SynthPoseOptions) -> dict:
    """Provenance and what was simulated (no timestamps: identical runs give identical files)."""
    cameras_per_keypoint = scene.visible.sum(axis=0).mean(axis=0)
    kept = options.kept
    return {
        "generator": "agent.synth_pose",
        # A full layout's and the default rig's options read as before those options existed.
        "options": {key: value for key, value in asdict(options).items()
                    if key != "overwrite" and not (key == "regions" and value is None)
                    and not (key == "elevation" and value == SynthPoseOptions().elevation)},
        "motion_source": "MausHaus3D (AmadeusGPT examples, Apache-2.0), repaired"
        if options.motion == "real"
        else "procedural walker",
        "mean_cameras_seeing_keypoint": {
            QD_KEYPOINTS[k]: round(float(cameras_per_keypoint[k]), 3) for k in kept
        },
        "visible_fraction": round(float(scene.visible[:, :, kept].mean()), 4),
    }


def _write_tables(out_dir: Path, scene: _Scene, label_rng: np.random.Generator,
                  seed_frames: tuple[int, ...] = SEED_FRAMES,
                  kept: np.ndarray | None = None) -> None:
    """ground_truth.csv, ground_truth_2d.csv and seeds.csv of the ``kept`` keypoints (fixed float formatting)."""
    kept = np.arange(len(QD_KEYPOINTS)) if kept is None else kept
    header = ["fnum"] + [f"{QD_KEYPOINTS[k]}_{axis}" for k in kept for axis in "xyz"]
    lines = [",".join(header)]
    for frame, row in enumerate(scene.points[:, kept].reshape(len(scene.points), -1)):
        lines.append(f"{frame}," + ",".join(f"{value:.4f}" for value in row))
    write_text_atomic(out_dir / "ground_truth.csv", "\n".join(lines) + "\n")

    names = scene.group.names
    lines = ["frame,camera,keypoint,x,y,visible"]
    for frame in range(len(scene.points)):
        for camera, name in enumerate(names):
            for keypoint in kept:
                x, y = scene.points_2d[camera, frame, keypoint]
                shown = int(scene.visible[camera, frame, keypoint])
                lines.append(f"{frame},{name},{QD_KEYPOINTS[keypoint]},{x:.4f},{y:.4f},{shown}")
    write_text_atomic(out_dir / "ground_truth_2d.csv", "\n".join(lines) + "\n")

    seed_frames = sorted(set(seed_frames))
    noise = label_rng.normal(0.0, SEED_LABEL_NOISE_PX, scene.points_2d[:, seed_frames].shape)
    labels = scene.points_2d[:, seed_frames] + noise
    lines = ["frame,camera,keypoint,x,y"]
    for column, frame in enumerate(seed_frames):
        for camera, name in enumerate(names):
            for keypoint in np.flatnonzero(scene.visible[camera, frame]):
                x, y = labels[camera, column, keypoint]
                lines.append(f"{frame},{name},{QD_KEYPOINTS[keypoint]},{x:.3f},{y:.3f}")
    write_text_atomic(out_dir / "seeds.csv", "\n".join(lines) + "\n")


class _StreamWriter:
    """One stream written under a temporary name and renamed into place when complete."""

    def __init__(self, videos: Path, stem: str, options: SynthPoseOptions) -> None:
        self.videos, self.stem, self.as_video = videos, stem, options.format == "video"
        self.size = (options.width, options.height)
        self.partial = videos / (f".{stem}.partial.mp4" if self.as_video else f".{stem}.partial")
        self.final = videos / (f"{stem}.mp4" if self.as_video else stem)
        self.count = 0
        self.writer: cv2.VideoWriter | None = None

    def __enter__(self) -> _StreamWriter:
        _remove(self.partial)
        if self.as_video:
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.writer = cv2.VideoWriter(str(self.partial), fourcc, FPS, self.size, False)
            if not self.writer.isOpened():
                raise InputError(
                    self.final, "OpenCV cannot write mp4v video here; use --format images"
                )
        else:
            self.partial.mkdir(parents=True)
        return self

    def write(self, frame: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.write(frame)
        elif not cv2.imwrite(str(self.partial / f"{self.count:06d}.png"), frame):
            raise InputError(self.partial, "cannot write PNG image")
        self.count += 1

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self.writer is not None:
            self.writer.release()
        if exc_type is not None:
            _remove(self.partial)
            return
        for stale in (
            self.videos / self.stem,
            self.videos / f"{self.stem}.mp4",
            self.videos / f"{self.stem}.avi",
        ):
            _remove(stale)  # an older stream of another format would make the camera ambiguous
        os.replace(self.partial, self.final)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _render_camera(
    scene: _Scene, index: int, seed: np.random.SeedSequence, options: SynthPoseOptions, videos: Path
) -> None:
    """Render and write both streams of camera ``index``."""
    rng = np.random.default_rng(seed)
    camera = scene.group.cameras[index]
    half_extent = 50.0 * np.ceil((np.abs(scene.points[..., :2]).max() + 80.0) / 50.0)
    reflectance_pool = qd_render.noisy_copies(
        qd_render.floor_background(camera, half_extent, rng), 4, 3.0, rng
    )
    dark = np.full((options.height, options.width), 6, dtype=np.uint8)
    fluorescence_pool = qd_render.noisy_copies(dark, 4, 2.0, rng)
    ends_px, radii_px, depth = qd_render.project_capsules(camera, scene.starts, scene.ends)
    far_to_near = np.argsort(-depth, axis=1, kind="stable")
    with (
        _StreamWriter(videos, f"{camera.name}-reflectance", options) as reflectance,
        _StreamWriter(videos, f"{camera.name}-fluorescence", options) as fluorescence,
    ):
        for frame in range(len(scene.points)):
            centers, peaks, sigmas = _frame_spots(scene, index, frame, rng, options)
            pool_index = rng.integers(len(fluorescence_pool), size=2)
            fluorescence.write(
                qd_render.render_spots(fluorescence_pool[pool_index[0]], centers, peaks, sigmas)
            )
            order = far_to_near[frame]
            reflectance.write(
                qd_render.render_capsules(
                    reflectance_pool[pool_index[1]],
                    ends_px[frame, order],
                    radii_px[frame, order],
                    _CAPSULE_SHADES[order],
                )
            )


def _frame_spots(
    scene: _Scene, index: int, frame: int, rng: np.random.Generator, options: SynthPoseOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots of one fluorescence frame: the visible dots plus spurious ones.

    Returns ``centers (n_spots, 2)``, ``peaks (n_spots,)``, ``sigmas (n_spots,)``.
    About a third of the spurious spots land near the animal, where they
    compete with the dots.
    """
    shown = scene.visible[index, frame]
    n_spurious = rng.poisson(options.spurious)
    near = rng.random(n_spurious) < 0.35
    body = scene.points_2d[index, frame, QD_KEYPOINTS.index("back_middle")]
    anywhere = rng.uniform([0.0, 0.0], [options.width - 1.0, options.height - 1.0], (n_spurious, 2))
    around = body + rng.normal(0.0, 0.06 * options.width, (n_spurious, 2))
    spurious = np.where(near[:, None], around, anywhere)
    centers = np.concatenate([scene.points_2d[index, frame, shown], spurious])
    peaks = np.concatenate([scene.peaks[index, frame, shown], rng.uniform(50.0, 230.0, n_spurious)])
    sigmas = np.concatenate(
        [scene.sigmas[index, shown], options.blur * rng.uniform(0.7, 1.6, n_spurious)]
    )
    return centers, peaks, sigmas
