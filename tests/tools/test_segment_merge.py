"""Tests of tools/segment_merge.py: merged segments tile the clips, chunked or in one pass."""

from __future__ import annotations

import pytest

from tools.segment_merge import CaptionedClip, merge_clips, tiling_problem


def _clips(spec):
    """Clips from ``[(length, label), ...]`` laid end to end."""
    clips, start = [], 0
    for index, (length, label) in enumerate(spec):
        clips.append(CaptionedClip(f"c{index}", start, start + length, label, f"clip {index}"))
        start += length
    return clips


def test_merge_joins_equal_labels_and_absorbs_short_runs():
    clips = _clips([(40, "locomotion"), (35, "locomotion"), (10, "stationary"), (60, "locomotion"),
                    (50, "huddle")])
    segments = merge_clips(clips, fps=30.0, min_segment_frames=30)
    assert [(s.start_frame, s.end_frame, s.label) for s in segments] == [(0, 145, "locomotion"),
                                                                          (145, 195, "huddle")]
    assert segments[0].clip_ids == ("c0", "c1", "c2", "c3")
    assert tiling_problem(segments, 0, 195) is None


def test_merge_closes_gaps_and_keeps_lone_short_clip():
    clips = [CaptionedClip("a", 0, 10, "chase", ""), CaptionedClip("b", 15, 60, "huddle", "")]
    segments = merge_clips(clips, 30.0, 5)
    assert tiling_problem(segments, 0, 60) is None
    assert merge_clips(clips[:1], 30.0, 30)[0].label == "chase"


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_merging_tiles_like_one_pass(rng, chunk):
    """Merging in chunks (each continuing the last segment) tiles the same frames, in the same order."""
    labels = ["locomotion", "huddle", "chase", "stationary"]
    clips = _clips([(int(rng.integers(10, 80)), labels[int(rng.integers(0, 4))]) for _ in range(25)])
    whole = merge_clips(clips, 30.0, 30)
    chunked = []
    for first in range(0, len(clips), chunk):
        previous = chunked.pop() if chunked else None
        chunked += merge_clips(clips[first:first + chunk], 30.0, 30, previous)
    assert tiling_problem(chunked, 0, clips[-1].end_frame) is None
    assert [c for s in chunked for c in s.clip_ids] == [c.clip_id for c in clips]
    assert len(chunked) <= 2 * len(whole) + 2


def test_merge_rejects_overlapping_clips():
    with pytest.raises(ValueError, match="overlap"):
        merge_clips([CaptionedClip("a", 0, 20, "chase", ""), CaptionedClip("b", 10, 30, "chase", "")], 30.0, 1)
