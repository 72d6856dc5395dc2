"""Classical merging of one animal's captioned clips into labelled segments (Stage merge_segments).

:func:`merge_clips` absorbs very short clips into a neighbour and joins
neighbours with the same label into segments that tile the animal's
timeline exactly; :func:`tiling_problem` says why segments do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tools.behavior_text import describe_segment


@dataclass(frozen=True)
class CaptionedClip:
    """A clip of one animal with its caption; frames ``[start_frame, end_frame)``."""

    clip_id: str
    start_frame: int
    end_frame: int
    label: str
    description: str


@dataclass(frozen=True)
class SegmentSpan:
    """A merged segment of one animal; frames ``[start_frame, end_frame)``.

    ``parts`` holds the descriptions of its clips, from which ``description``
    is rebuilt when a later chunk extends the segment.
    """

    start_frame: int
    end_frame: int
    label: str
    description: str
    clip_ids: tuple[str, ...]
    parts: tuple[str, ...] = ()


def merge_clips(
    clips: Sequence[CaptionedClip], fps: float, min_segment_frames: int, previous: SegmentSpan | None = None
) -> list[SegmentSpan]:
    """Merge one animal's captioned clips, in time order, into segments that tile them.

    Neighbours with the same label are joined into runs; then, shortest
    first, a run shorter than ``min_segment_frames`` joins a neighbour (the
    one whose label it shares with the other side, else the longer one),
    and runs with equal labels are joined again. Gaps between clips are
    closed by extending the earlier segment, so segments cover
    ``[clips[0].start_frame, clips[-1].end_frame)`` without overlap.

    Parameters
    ----------
    clips : sequence of CaptionedClip
        One animal's clips, sorted by start frame, not overlapping.
    fps : float
        Frame rate, for durations in descriptions.
    min_segment_frames : int
        Shortest segment; shorter runs of clips are absorbed.
    previous : SegmentSpan, optional
        Last segment of the previous chunk of a long session; it comes back
        first, extended when the chunk continues it.

    Returns
    -------
    list of SegmentSpan
    """
    ordered = list(clips)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.start_frame < before.end_frame:
            raise ValueError(f"clips {before.clip_id} and {after.clip_id} overlap or are not in order")
    runs: list[_Run] = [] if previous is None else [_Run(previous.label, [], previous)]
    for clip in ordered:
        runs.append(_Run(clip.label, [clip]))
    runs = _join_equal(runs)
    while len(runs) > 1:
        short = [i for i, run in enumerate(runs) if run.frames < min_segment_frames]
        if not short:
            break
        index = min(short, key=lambda i: (runs[i].frames, i))
        runs[index].label = _absorbing_label(runs, index)
        runs = _join_equal(runs)
    return _close_gaps([run.segment(fps) for run in runs])


@dataclass
class _Run:
    """Consecutive clips (after ``base``, the previous chunk's last segment) that share a label."""

    label: str
    clips: list[CaptionedClip]
    base: SegmentSpan | None = None

    @property
    def start(self) -> int:
        return self.base.start_frame if self.base else self.clips[0].start_frame

    @property
    def frames(self) -> int:
        end = self.clips[-1].end_frame if self.clips else self.base.end_frame  # type: ignore[union-attr]
        return end - self.start

    def segment(self, fps: float) -> SegmentSpan:
        clip_ids = (self.base.clip_ids if self.base else ()) + tuple(c.clip_id for c in self.clips)
        parts = (self.base.parts if self.base else ()) + tuple(c.description for c in self.clips)
        end = self.start + self.frames
        description = describe_segment(self.label, self.start, end, fps, parts, len(clip_ids))
        return SegmentSpan(self.start, end, self.label, description, clip_ids, parts)


def _join_equal(runs: list[_Run]) -> list[_Run]:
    joined: list[_Run] = []
    for run in runs:
        if joined and joined[-1].label == run.label:
            joined[-1].clips.extend(run.clips)
        else:
            joined.append(run)
    return joined


def _absorbing_label(runs: list[_Run], index: int) -> str:
    left = runs[index - 1] if index > 0 else None
    right = runs[index + 1] if index + 1 < len(runs) else None
    if left is None or right is None:
        return (left or right).label  # type: ignore[union-attr]
    return left.label if left.frames >= right.frames else right.label


def _close_gaps(segments: list[SegmentSpan]) -> list[SegmentSpan]:
    closed: list[SegmentSpan] = []
    for segment in segments:
        if closed and closed[-1].end_frame != segment.start_frame:
            last = closed.pop()
            closed.append(SegmentSpan(last.start_frame, segment.start_frame, last.label,
                                      last.description, last.clip_ids, last.parts))
        closed.append(segment)
    return closed


def tiling_problem(segments: Sequence[SegmentSpan], start_frame: int, end_frame: int) -> str | None:
    """Why ``segments`` do not tile ``[start_frame, end_frame)`` exactly, or None when they do."""
    if not segments:
        return "no segments"
    if segments[0].start_frame != start_frame or segments[-1].end_frame != end_frame:
        return (f"segments cover [{segments[0].start_frame}, {segments[-1].end_frame}), "
                f"expected [{start_frame}, {end_frame})")
    for before, after in zip(segments, segments[1:], strict=False):
        if before.end_frame != after.start_frame:
            return f"gap or overlap between frames {before.end_frame} and {after.start_frame}"
    for segment in segments:
        if segment.end_frame <= segment.start_frame:
            return f"empty segment at frame {segment.start_frame}"
    return None
