"""Tests of agent/behavior_results.py: clips.csv and segments.csv."""

from __future__ import annotations

import pytest

from agent.behavior_results import (
    ClipRow,
    SegmentRow,
    read_clips_csv,
    read_segments_csv,
    write_clips_csv,
    write_segments_csv,
)
from agent.errors import InputError

CLIPS = [ClipRow("mouse1-0000", "mouse1", 0, 45, 3, "chase", 'runs at 150 px/s, "fast"; nose 5 px'),
         ClipRow("mouse1-0001", "mouse1", 45, 90, 1, "huddle", "still\nsecond line")]
SEGMENTS = [SegmentRow("mouse1-s000", "mouse1", 0, 90, "oral_genital_contact", "x, y", ("mouse1-0000", "mouse1-0001"))]


def test_round_trip_keeps_every_field(tmp_path):
    write_clips_csv(tmp_path / "clips.csv", CLIPS, fps=30.0)
    write_segments_csv(tmp_path / "segments.csv", SEGMENTS, fps=30.0)
    assert read_clips_csv(tmp_path / "clips.csv") == CLIPS
    assert read_segments_csv(tmp_path / "segments.csv") == SEGMENTS


def test_layout_and_fixed_formatting(tmp_path):
    path = write_segments_csv(tmp_path / "segments.csv", SEGMENTS, fps=30.0)
    lines = path.read_text().splitlines()
    assert lines[0] == "segment_id,animal,start_frame,end_frame,start_s,end_s,label,description,clip_ids"
    assert lines[1] == 'mouse1-s000,mouse1,0,90,0.0,3.0,oral_genital_contact,"x, y",mouse1-0000;mouse1-0001'
    first = write_clips_csv(tmp_path / "a.csv", CLIPS, fps=30.0).read_bytes()
    assert write_clips_csv(tmp_path / "b.csv", CLIPS, fps=30.0).read_bytes() == first
    assert b"\r" not in first.replace(b"\n", b"")


@pytest.mark.parametrize("fps", [30.0, 29.97, 7.0, 2000.0])
def test_times_read_back_as_frame_over_fps_exactly(tmp_path, fps):
    """FORMATS.md: times in seconds are frame / fps (a reader comparing them exactly agrees)."""
    clips = [ClipRow(f"m-{i:04d}", "m", start, start + 23, 0, "chase", "") for i, start in enumerate(range(0, 2300, 23))]
    write_clips_csv(tmp_path / "clips.csv", clips, fps=fps)
    rows = [line.split(",") for line in (tmp_path / "clips.csv").read_text().splitlines()[1:]]
    assert all(float(row[4]) == int(row[2]) / fps and float(row[5]) == int(row[3]) / fps for row in rows)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("segment_id,animal\n", "missing column"),
        ("segment_id,animal,start_frame,end_frame,start_s,end_s,label,description,clip_ids\n"
         "s,m,5,3,0,0,chase,,\n", "start_frame < end_frame"),
        ("segment_id,animal,start_frame,end_frame,start_s,end_s,label,description,clip_ids\n"
         "s,m,0,3,0,0,Chase Now,,\n", "snake_case"),
        ("segment_id,animal,start_frame,end_frame,start_s,end_s,label,description,clip_ids\n"
         "s,m,0,30,0,1,chase,,\nt,m,20,40,0,1,huddle,,\n", "overlap"),
    ],
)
def test_bad_segments_raise_one_input_error(tmp_path, text, problem):
    path = tmp_path / "segments.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as caught:
        read_segments_csv(path)
    assert caught.value.path == str(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_clips_csv(tmp_path / "clips.csv")


def test_review_csv_lists_flagged_captions_and_merge_fallbacks(tmp_path):
    from agent.behavior_results import write_review_csv

    clips = [{"clip_id": "m1-0001", "animal": "mouse1", "start_frame": 30, "end_frame": 60},
             {"clip_id": "m1-0000", "animal": "mouse1", "start_frame": 0, "end_frame": 30}]
    captions = [{"clip_id": "m1-0001", "flagged": True, "reason": "caption_model: schema"},
                {"clip_id": "m1-0000", "flagged": False, "reason": None}]
    flags = [{"animal": "mouse1", "start_frame": 0, "end_frame": 60, "reason": "merge_model: overlap"}]
    lines = write_review_csv(tmp_path / "review.csv", captions, clips, flags).read_text().splitlines()
    assert lines[0] == "kind,id,animal,start_frame,end_frame,reason"
    assert lines[1:] == ["merge,,mouse1,0,60,merge_model: overlap", "caption,m1-0001,mouse1,30,60,caption_model: schema"]
    empty = write_review_csv(tmp_path / "empty.csv", captions[1:], clips, []).read_text().splitlines()
    assert empty == ["kind,id,animal,start_frame,end_frame,reason"]
