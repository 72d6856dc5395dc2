"""The work behind each node of :mod:`graphs.behavior`, with its file IO.

Arrays never enter graph state: each step saves them as ``.npz`` in the
run's cache directory and returns paths and small summaries. The math is in
``tools/`` (features, DEC, clips, rules); this module chooses inputs, reads
and writes files, and builds backend requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.backends.behavior_base import BehaviorBackend, CaptionedClip, ClipRequest, MergeRequest
from agent.behavior_results import ClipRow, SegmentRow
from agent.errors import InputError
from agent.session import Session, iter_frames
from tools.behavior_rules import session_body_length, summarize_clip, tracks_kinematics
from tools.clip_video import ClipVideoRequest, cut_clip_videos
from tools.clips import change_scores, cut_clips, smooth_labels
from tools.dec import DecInputError, DecParams, fit_dec
from tools.feature_fusion import fuse, match_tracks_to_keypoints
from tools.features import fill_missing, keypoint_features, kinematics
from tools.visual_features import visual_features
from tools.visual_tracking import track_blobs

# Half-width of the window comparing the state before and after a frame (change scores).
CHANGE_WINDOW_S = 0.5


def resolve_features_mode(session: Session, requested: str) -> str:
    """``keypoint``, ``visual``, ``fused`` or ``session`` (features.npy) for a ``requested`` mode.

    ``auto``: the session's features.npy when given, else fused with
    keypoints, else visual. Keypoint and fused features need keypoints.
    """
    if requested == "auto":
        if session.features is not None:
            return "session"
        return "fused" if session.keypoints is not None else "visual"
    if requested in ("keypoint", "fused") and session.keypoints is None:
        raise InputError(session.root / "session.toml", f"--features {requested} needs keypoints; the session has none")
    return requested


def extract_features(session: Session, mode: str, cache_dir: Path) -> dict[str, Any]:
    """Compute the clustering features and the kinematics for the rules; save both in ``cache_dir``.

    Kinematics come from keypoints when the session has them, else from blob
    tracks of the video. Returns paths and a small summary.
    """
    tracks = None
    if mode in ("visual", "fused") or session.keypoints is None:
        tracks = track_blobs(lambda: iter_frames(session.video_path, 0, session.n_frames), len(session.animals))
    if session.keypoints is not None:
        kin = kinematics(session.keypoints, session.bodyparts, session.fps, session.food_zone)
        if tracks is not None:  # blob tracks follow the keypoint animals' order
            order = match_tracks_to_keypoints(tracks.centroid, np.stack([kin["centre_x"], kin["centre_y"]], axis=-1))
            tracks = dataclasses.replace(tracks, **{f.name: getattr(tracks, f.name)[:, order]
                                                    for f in dataclasses.fields(tracks)})
    else:
        kin = tracks_kinematics(tracks.centroid, tracks.orientation, tracks.elongation, tracks.area,
                                session.fps, session.food_zone, bend=tracks.bend)
    if mode == "session":
        values = fill_missing(session.features)
        names = [f"feature{i}" for i in range(session.features.shape[2])]
    elif mode == "keypoint":
        feature_set = keypoint_features(session.keypoints, session.bodyparts, session.fps, session.food_zone)
        values, names = feature_set.values, feature_set.names
    else:
        visual = visual_features(tracks, session.fps, session.food_zone)
        if mode == "fused":
            keypoint = keypoint_features(session.keypoints, session.bodyparts, session.fps, session.food_zone)
            visual = fuse(keypoint, visual)
        values, names = visual.values, visual.names
    cache_dir.mkdir(parents=True, exist_ok=True)
    features_path = cache_dir / "features.npz"
    kinematics_path = cache_dir / "kinematics.npz"
    np.savez_compressed(features_path, values=np.asarray(values, dtype=np.float32), names=np.array(names))
    np.savez_compressed(kinematics_path, **kin)
    return {
        "mode": mode,
        "kinematics_from": "keypoints" if session.keypoints is not None else "video",
        "n_features": int(values.shape[2]),
        "features_path": str(features_path),
        "kinematics_path": str(kinematics_path),
    }


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file written by a step."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def cluster_features(features_path: str, n_clusters: int, seed: int, pretrain_iters: int,
                     finetune_iters: int, cache_dir: Path, source: str,
                     animals: Sequence[str]) -> dict[str, Any]:
    """Run DEC on the saved features; save labels ``(T, A)`` and soft assignments ``(T, A, K)``.

    DEC sees the animals in the order of their names, so the order
    ``session.toml`` lists them in does not change the clusters.

    Raises
    ------
    InputError
        ``K`` is larger than the data allows (names ``source``).
    """
    values = load_arrays(features_path)["values"]
    params = DecParams(n_clusters=n_clusters, seed=seed, pretrain_iters=pretrain_iters,
                       finetune_iters=finetune_iters)
    by_name = np.argsort(np.asarray(animals, dtype=str), kind="stable")
    try:
        result = fit_dec(values[:, by_name], params)
    except DecInputError as exc:
        raise InputError(source, f"cannot cluster: {exc}") from None
    as_listed = np.argsort(by_name)
    path = cache_dir / "dec.npz"
    np.savez_compressed(path, labels=result.labels[:, as_listed],
                        soft=result.soft_assignments[:, as_listed])
    used = np.unique(result.labels)
    return {"path": str(path), "n_clusters": n_clusters, "clusters_used": int(used.size),
            "converged": bool(result.converged)}


def _state_signals(soft: np.ndarray, kin: Mapping[str, np.ndarray], index: int, body_length: float) -> np.ndarray:
    """``(n_frames, n_clusters + 3)`` signals whose change marks a new behaviour of animal ``index``.

    The DEC soft assignment, log speed and the distance to the nearest other
    animal in body lengths (contact), so long clips are split where the
    kinematic or social state changes even when DEC kept one label.
    """
    scale = body_length if np.isfinite(body_length) and body_length > 0 else 1.0
    speed = np.log1p(np.nan_to_num(kin["speed"][:, index]) / scale)
    nearest = kin.get("nearest_distance")
    near = np.zeros_like(speed) if nearest is None else np.minimum(np.nan_to_num(nearest[:, index] / scale, nan=5.0), 5.0)
    bend = np.nan_to_num(kin["bend"][:, index]) if "bend" in kin else np.zeros_like(speed)
    return np.column_stack([soft, speed, near, bend])


def plan_clips(
    session_meta: Mapping[str, Any], dec_path: str, kinematics_path: str, settings: Mapping[str, float],
    clips_dir: Path | None, video_path: str,
) -> list[dict[str, Any]]:
    """Cut every animal's cluster labels into clips, summarize each, cut clip videos.

    Returns
    -------
    list of dict
        :class:`ClipRequest` fields, per animal in time order.
    """
    dec = load_arrays(dec_path)
    kin = load_arrays(kinematics_path)
    animals, fps = list(session_meta["animals"]), float(session_meta["fps"])
    reference = session_body_length(kin)
    min_run = max(1, round(settings["smooth_min_run_s"] * fps))
    clips: list[dict[str, Any]] = []
    video_requests = []
    centre = np.stack([kin["centre_x"], kin["centre_y"]], axis=-1)
    for index, animal in enumerate(animals):
        labels = smooth_labels(dec["labels"][:, index], dec["soft"][:, index], min_run)
        change = change_scores(_state_signals(dec["soft"][:, index], kin, index, reference),
                               max(1, round(CHANGE_WINDOW_S * fps)))
        spans = cut_clips(labels, fps, settings["min_clip_s"], settings["max_clip_s"], change)
        for number, span in enumerate(spans):
            clip_id = f"{animal}-{number:04d}"
            summary = summarize_clip(kin, index, span.start_frame, span.end_frame, fps, animals, reference)
            video = str(clips_dir / f"{clip_id}.mp4") if clips_dir is not None else None
            clips.append(ClipRequest(clip_id=clip_id, animal=animal, start_frame=span.start_frame,
                                     end_frame=span.end_frame, fps=fps, cluster=span.cluster,
                                     video_path=video, features=summary).model_dump())
            frames = slice(span.start_frame, span.end_frame)
            video_requests.append(ClipVideoRequest(
                clip_id=clip_id, start_frame=span.start_frame, end_frame=span.end_frame,
                focal_track=centre[frames, index], focal_name=animal,
                other_tracks={name: centre[frames, other] for other, name in enumerate(animals) if other != index},
            ))
    if clips_dir is not None:
        cut_clip_videos(video_path, clips_dir, video_requests, fps, settings["fps_out"])
    return clips


def merge_animal(
    backend: BehaviorBackend, animal: str, fps: float, clips: Sequence[Mapping[str, Any]],
    captions: Mapping[str, Mapping[str, Any]], chunk_clips: int,
) -> list[dict[str, Any]]:
    """Merge one animal's captioned clips in chunks of ``chunk_clips``; each chunk continues the last segment."""
    ordered = sorted(clips, key=lambda c: c["start_frame"])
    captioned = [CaptionedClip(clip_id=c["clip_id"], start_frame=c["start_frame"], end_frame=c["end_frame"],
                               label=captions[c["clip_id"]]["label"],
                               description=captions[c["clip_id"]]["description"]) for c in ordered]
    segments: list = []
    for first in range(0, len(captioned), chunk_clips):
        previous = segments.pop() if segments else None
        request = MergeRequest(animal=animal, fps=fps, clips=captioned[first:first + chunk_clips], previous=previous)
        segments.extend(backend.merge_segments(request))
    return [{"animal": animal, **segment.model_dump()} for segment in segments]


def result_rows(
    clips: Sequence[Mapping[str, Any]], captions: Mapping[str, Mapping[str, Any]],
    segments: Sequence[Mapping[str, Any]], animals: Sequence[str],
) -> tuple[list[ClipRow], list[SegmentRow]]:
    """Rows of clips.csv and segments.csv, per animal (session order) then time."""
    order = {name: i for i, name in enumerate(animals)}
    clip_rows = [
        ClipRow(c["clip_id"], c["animal"], c["start_frame"], c["end_frame"], c["cluster"],
                captions[c["clip_id"]]["label"], captions[c["clip_id"]]["description"])
        for c in sorted(clips, key=lambda c: (order[c["animal"]], c["start_frame"]))
    ]
    segment_rows = []
    counters: dict[str, int] = {}
    for s in sorted(segments, key=lambda s: (order[s["animal"]], s["start_frame"])):
        number = counters.get(s["animal"], 0)
        counters[s["animal"]] = number + 1
        segment_rows.append(SegmentRow(f"{s['animal']}-s{number:03d}", s["animal"], s["start_frame"],
                                       s["end_frame"], s["label"], s["description"], tuple(s["clip_ids"])))
    return clip_rows, segment_rows
