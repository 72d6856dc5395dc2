"""Behavior results (FORMATS.md section 4): ``clips.csv`` and ``segments.csv``.

Writers render the whole file in memory with fixed formatting (seconds with
3 decimals, ``\\n`` line endings, rows in the given order) and write it
atomically, so the same rows give byte-identical files. Readers validate
the header and every row and raise one :class:`~agent.errors.InputError`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.atomic import write_text_atomic
from agent.errors import InputError

CLIPS_FILE = "clips.csv"
SEGMENTS_FILE = "segments.csv"
REVIEW_FILE = "review.csv"
REVIEW_COLUMNS = ["kind", "id", "animal", "start_frame", "end_frame", "reason"]
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


@dataclass(frozen=True)
class ClipRow:
    """One row of ``clips.csv``; frames ``[start_frame, end_frame)``."""

    clip_id: str
    animal: str
    start_frame: int
    end_frame: int
    cluster: int
    label: str
    description: str


@dataclass(frozen=True)
class SegmentRow:
    """One row of ``segments.csv``; ``clip_ids`` in time order."""

    segment_id: str
    animal: str
    start_frame: int
    end_frame: int
    label: str
    description: str
    clip_ids: tuple[str, ...]


CLIP_COLUMNS = ["clip_id", "animal", "start_frame", "end_frame", "start_s", "end_s", "cluster", "label",
                "description"]
SEGMENT_COLUMNS = ["segment_id", "animal", "start_frame", "end_frame", "start_s", "end_s", "label",
                   "description", "clip_ids"]


def _seconds(frame: int, fps: float) -> str:
    """``frame / fps`` as Python writes the double: read back, it equals a reader's own ``frame / fps``
    (FORMATS.md: times in seconds are ``frame / fps``; three decimals were up to 0.5 ms off)."""
    return repr(frame / fps)


def _render(columns: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_clips_csv(path: str | Path, clips: Sequence[ClipRow], fps: float) -> Path:
    """Write ``clips.csv`` atomically; rows in the given order."""
    rows = [[c.clip_id, c.animal, c.start_frame, c.end_frame, _seconds(c.start_frame, fps),
             _seconds(c.end_frame, fps), c.cluster, c.label, c.description] for c in clips]
    return write_text_atomic(path, _render(CLIP_COLUMNS, rows))


def write_segments_csv(path: str | Path, segments: Sequence[SegmentRow], fps: float) -> Path:
    """Write ``segments.csv`` atomically; ``clip_ids`` joined by ``;``."""
    rows = [[s.segment_id, s.animal, s.start_frame, s.end_frame, _seconds(s.start_frame, fps),
             _seconds(s.end_frame, fps), s.label, s.description, ";".join(s.clip_ids)] for s in segments]
    return write_text_atomic(path, _render(SEGMENT_COLUMNS, rows))


def write_review_csv(path: str | Path, captions: Sequence[dict], clips: Sequence[dict], merge_flags: Sequence[dict]) -> Path:
    """``review.csv`` (an optional extension of FORMATS.md section 4): what to review.

    One row per clip whose caption is flagged (``kind`` ``caption``, ``id`` the
    clip id) and per merge chunk that fell back to the classical merge
    (``kind`` ``merge``, ``id`` empty), with the machine-readable reason.
    Written even when empty, so its absence never means "nothing flagged".
    """
    frames = {clip["clip_id"]: clip for clip in clips}
    rows: list[list[object]] = []
    for caption in captions:
        if caption.get("flagged"):
            clip = frames[caption["clip_id"]]
            rows.append(["caption", caption["clip_id"], clip["animal"], clip["start_frame"], clip["end_frame"],
                         caption.get("reason") or "flagged"])
    rows += [["merge", "", f["animal"], f["start_frame"], f["end_frame"], f["reason"]] for f in merge_flags]
    rows.sort(key=lambda row: (str(row[2]), int(row[3]), str(row[0]), str(row[1])))
    return write_text_atomic(path, _render(REVIEW_COLUMNS, rows))


def _read_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing column(s) {missing}; expected {columns}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV: {exc}") from None


def _frames(path: Path, line: int, row: dict[str, str]) -> tuple[int, int]:
    try:
        start, end = int(row["start_frame"]), int(row["end_frame"])
    except (TypeError, ValueError):
        raise InputError(path, f"line {line}: start_frame and end_frame must be integers") from None
    if not 0 <= start < end:
        raise InputError(path, f"line {line}: needs 0 <= start_frame < end_frame, got {start}, {end}")
    return start, end


def _label(path: Path, line: int, label: str) -> str:
    if not _SNAKE_CASE.match(label or ""):
        raise InputError(path, f"line {line}: label {label!r} is not lower snake_case")
    return label


def read_clips_csv(path: str | Path) -> list[ClipRow]:
    """Read and validate ``clips.csv``."""
    path = Path(path)
    clips = []
    for line, row in enumerate(_read_rows(path, CLIP_COLUMNS), start=2):
        start, end = _frames(path, line, row)
        try:
            cluster = int(row["cluster"]) if row["cluster"] not in ("", None) else -1
        except ValueError:
            raise InputError(path, f"line {line}: cluster must be an integer") from None
        clips.append(ClipRow(row["clip_id"], row["animal"], start, end, cluster,
                             _label(path, line, row["label"]), row["description"] or ""))
    return clips


def read_segments_csv(path: str | Path) -> list[SegmentRow]:
    """Read and validate ``segments.csv``; segments of one animal must not overlap."""
    path = Path(path)
    segments = []
    for line, row in enumerate(_read_rows(path, SEGMENT_COLUMNS), start=2):
        start, end = _frames(path, line, row)
        clip_ids = tuple(i for i in (row["clip_ids"] or "").split(";") if i)
        segments.append(SegmentRow(row["segment_id"], row["animal"], start, end,
                                   _label(path, line, row["label"]), row["description"] or "", clip_ids))
    by_animal: dict[str, list[SegmentRow]] = {}
    for segment in segments:
        by_animal.setdefault(segment.animal, []).append(segment)
    for animal, rows in by_animal.items():
        rows = sorted(rows, key=lambda s: s.start_frame)
        for before, after in zip(rows, rows[1:], strict=False):
            if after.start_frame < before.end_frame:
                raise InputError(path, f"segments of {animal} overlap at frame {after.start_frame}")
    return segments

