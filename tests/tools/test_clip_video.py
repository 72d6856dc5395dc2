"""Tests of tools/clip_video.py: clip videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.clip_video import ClipVideoRequest, cut_clip_videos, write_clip_video


def write_counter_video(path: Path, n_frames: int, size: tuple[int, int]) -> None:
    """Frame ``i`` is uniformly grey at level ``8 * i``: frames stay apart despite compression."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for index in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 8 * index, dtype=np.uint8))
    writer.release()


def read_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def request(clip_id: str, start: int, end: int, track_columns: int = 2) -> ClipVideoRequest:
    track = np.full((end - start, track_columns), 40.0)
    if track_columns == 4:
        track[:, 2:] = 60.0
    return ClipVideoRequest(
        clip_id=clip_id,
        start_frame=start,
        end_frame=end,
        focal_track=track,
        focal_name="mouse1",
        other_tracks={"mouse2": np.full((end - start, 2), np.nan)},
        label="cluster 1",
    )


def corner_grey(frame: np.ndarray) -> float:
    """Mean of the bottom-right corner, away from the markers and the caption band."""
    return float(frame[60:, 75:].mean())


def test_cut_clip_videos_samples_the_right_frames_at_10_fps(tmp_path):
    video = tmp_path / "video.mp4"
    write_counter_video(video, 32, (96, 80))
    source_grey = np.array([corner_grey(frame) for frame in read_all(video)])
    clips = [request("b", 2, 32), request("a", 0, 21, track_columns=4)]
    paths = cut_clip_videos(video, tmp_path / "clips", clips, fps_in=30.0)
    assert [path.name for path in paths] == ["b.mp4", "a.mp4"]
    for clip, path in zip(clips, paths, strict=True):
        frames = read_all(path)
        sampled = range(clip.start_frame, clip.end_frame, 3)
        assert len(frames) == len(sampled)
        assert frames[0].shape == (80, 96, 3)
        # Each written frame is closest to the source frame it should show.
        nearest = [int(np.abs(source_grey - corner_grey(frame)).argmin()) for frame in frames]
        assert nearest == list(sampled)
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["a.mp4", "b.mp4"]


def test_write_clip_video_downscales_large_videos(tmp_path):
    video = tmp_path / "big.mp4"
    write_counter_video(video, 8, (1024, 600))
    out = write_clip_video(
        video,
        tmp_path / "clip.mp4",
        2,
        8,
        fps_in=30.0,
        fps_out=30.0,
        focal_track=np.full((6, 2), 500.0),
        label="rest",
    )
    frames = read_all(out)
    assert len(frames) == 6
    assert frames[0].shape == (300, 512, 3)


def test_a_clip_outside_the_video_writes_nothing(tmp_path):
    video = tmp_path / "video.mp4"
    write_counter_video(video, 20, (64, 64))
    with pytest.raises(ValueError, match="not inside the video"):
        cut_clip_videos(
            video, tmp_path / "clips", [request("ok", 0, 10), request("x", 15, 25)], 30.0
        )
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").iterdir())


def test_cut_clip_videos_on_real_session(shared_data, tmp_path):
    video = shared_data / "mabe22-triplets-EGS8X2MN4SSUGFWAV976" / "video.mp4"
    paths = cut_clip_videos(video, tmp_path, [request("late", 1700, 1760)], fps_in=30.0)
    frames = read_all(paths[0])
    assert len(frames) == 20
    assert frames[0].shape == (512, 512, 3)


def test_a_failure_mid_pass_leaves_no_files(tmp_path, monkeypatch):
    import tools.clip_video

    video = tmp_path / "video.mp4"
    write_counter_video(video, 20, (64, 64))
    calls = []

    def annotate_then_fail(*args):
        calls.append(args)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return args[0]

    monkeypatch.setattr(tools.clip_video, "_annotate", annotate_then_fail)
    with pytest.raises(RuntimeError):
        cut_clip_videos(video, tmp_path / "clips", [request("a", 0, 6), request("b", 6, 20)], 30.0)
    assert list((tmp_path / "clips").iterdir()) == []
