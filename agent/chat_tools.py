"""Typed, read-only tools over one finished results directory.

The same tools serve the model-driven chat (as LangChain tools) and the
offline slash commands. They only read files inside the results directory,
never write, never run code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from agent.errors import InputError
from tools import segment_stats

MAX_ROWS = 40


class SegmentFilter(BaseModel):
    """Which segments to list."""

    animal: str | None = Field(default=None, description="animal name, e.g. mouse2")
    label: str | None = Field(default=None, description="behavior label, e.g. chase")
    start_s: float | None = Field(default=None, description="only segments ending after this time (s)")
    end_s: float | None = Field(default=None, description="only segments starting before this time (s)")


class AnimalFilter(BaseModel):
    """Optionally one animal."""

    animal: str | None = Field(default=None, description="animal name; all animals when omitted")


class SegmentId(BaseModel):
    """One segment."""

    segment_id: str = Field(description="segment id as in segments.csv")


class NoArguments(BaseModel):
    """This tool takes no arguments."""


class FlaggedFilter(BaseModel):
    """Which flagged labels to list (pose runs)."""

    keypoint: str | None = Field(default=None, description="keypoint name; all when omitted")
    reason: str | None = Field(default=None, description="QC reason, e.g. reprojection")


def _table(frame: pd.DataFrame, empty: str) -> str:
    if frame.empty:
        return empty
    shown = frame.head(MAX_ROWS)
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.2f}")
    if len(frame) > MAX_ROWS:
        text += f"\n... {len(frame) - MAX_ROWS} more rows (narrow the question)"
    return text


def _read_csv(path: Path, required: set[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"segment_id": str, "clip_id": str, "clip_ids": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read as CSV: {exc}") from None
    missing = required - set(frame.columns)
    if missing:
        raise InputError(path, f"lacks columns {', '.join(sorted(missing))}: not a results file of this tool")
    return frame


@dataclass
class ResultsView:
    """A finished results directory, loaded once (behavior or pose)."""

    root: Path
    kind: str
    segments: pd.DataFrame | None = None
    clips: pd.DataFrame | None = None
    qc: pd.DataFrame | None = None

    @classmethod
    def open(cls, path: str | Path) -> ResultsView:
        root = Path(path)
        if not root.is_dir():
            raise InputError(root, "results directory not found")
        if (root / "segments.csv").is_file():
            segments = _read_csv(root / "segments.csv", {"segment_id", "animal", "start_frame", "end_frame", "start_s", "end_s", "label", "description", "clip_ids"})
            clips = None
            if (root / "clips.csv").is_file():
                clips = _read_csv(root / "clips.csv", {"clip_id", "animal", "start_s", "end_s", "label", "description"})
            return cls(root, "behavior", segments=segments.fillna({"description": "", "clip_ids": ""}), clips=clips)
        if (root / "qc.csv").is_file():
            qc = _read_csv(root / "qc.csv", {"frame", "keypoint", "error_px", "ncams", "flagged", "reason"})
            for column, allowed in (("flagged", "0 or 1"), ("frame", "a frame number")):
                values = pd.to_numeric(qc[column], errors="coerce")
                bad = ~(values.isin([0, 1]) if column == "flagged" else (values >= 0) & (values % 1 == 0))
                if bad.any():
                    line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
                    raise InputError(root / "qc.csv", f"{column} must be {allowed}, got {qc[column].iloc[line - 2]!r} "
                                                      f"on line {line}")
            return cls(root, "pose", qc=qc.fillna({"reason": ""}))
        raise InputError(root, "holds neither segments.csv (behavior run) nor qc.csv (pose run)")

    # -- behavior ---------------------------------------------------------------
    def _need(self, kind: str) -> None:
        if self.kind != kind:
            raise ValueError(f"this is a {self.kind} run; that question needs a {kind} run")

    def _check_known(self, what: str, value: str | None, column: pd.Series) -> None:
        """Refuse a name the run does not hold: a filter on it would answer for nothing (or, dropped, for all)."""
        known = sorted(set(column.astype(str)) - {""})
        if value is not None and value not in known:
            raise ValueError(f"no {what} {value!r} in this run; its {what}s: {', '.join(known) or 'none'}")

    def list_segments(self, animal: str | None = None, label: str | None = None, start_s: float | None = None, end_s: float | None = None) -> str:
        self._need("behavior")
        self._check_known("animal", animal, self.segments["animal"])
        self._check_known("label", label, self.segments["label"])
        table = segment_stats.filter_segments(self.segments, animal, label, start_s, end_s)
        columns = ["segment_id", "animal", "start_s", "end_s", "label"]
        return _table(table[columns], "no segment matches")

    def time_budget(self, animal: str | None = None) -> str:
        self._need("behavior")
        self._check_known("animal", animal, self.segments["animal"])
        table = segment_stats.time_budget(self.segments)
        if animal is not None:
            table = table[table["animal"] == animal]
        return _table(table, "no segments")

    def transitions(self, animal: str | None = None) -> str:
        self._need("behavior")
        self._check_known("animal", animal, self.segments["animal"])
        return _table(segment_stats.transitions(self.segments, animal), "no transitions")

    def co_occurrence(self) -> str:
        self._need("behavior")
        return _table(segment_stats.co_occurrence(self.segments), "no social behaviors overlap between animals")

    def segment_detail(self, segment_id: str) -> str:
        self._need("behavior")
        rows = self.segments[self.segments["segment_id"].astype(str) == str(segment_id)]
        if rows.empty:
            return f"no segment with id {segment_id}"
        row = rows.iloc[0]
        lines = [
            f"segment {row.segment_id}: {row.animal} {row.label} {row.start_s:.2f}-{row.end_s:.2f} s (frames {row.start_frame}-{row.end_frame})",
            f"description: {row.description}",
        ]
        clip_ids = [c for c in str(row.clip_ids).split(";") if c]
        for clip_id in clip_ids:
            detail = f"clip {clip_id}"
            if self.clips is not None:
                match = self.clips[self.clips["clip_id"].astype(str) == clip_id]
                if not match.empty:
                    clip = match.iloc[0]
                    detail += f" {clip.start_s:.2f}-{clip.end_s:.2f} s {clip.label}: {clip.description}"
            files = sorted((self.root / "clips").glob(f"{clip_id}.*")) if (self.root / "clips").is_dir() else []
            if files:
                detail += f" [watch: {files[0].relative_to(self.root)}]"
            lines.append(detail)
        return "\n".join(lines)

    # -- pose -------------------------------------------------------------------
    def flagged_labels(self, keypoint: str | None = None, reason: str | None = None) -> str:
        self._need("pose")
        self._check_known("keypoint", keypoint, self.qc["keypoint"])
        table = self.qc[self.qc["flagged"].astype(int) == 1]
        reasons = table["reason"].astype(str)
        # One reason per label, matched whole: "order" must not also list "tail_order".
        if reason is not None and not (reasons == reason).any():
            known = sorted(set(reasons) - {""})
            raise ValueError(f"no label is flagged for {reason!r} in this run; its reasons: {', '.join(known) or 'none'}")
        if keypoint is not None:
            table = table[table["keypoint"] == keypoint]
        if reason is not None:
            table = table[table["reason"].astype(str) == reason]
        summary = f"{len(table)} flagged labels in {table['frame'].nunique()} frames\n"
        return summary + _table(table[["frame", "keypoint", "error_px", "ncams", "reason"]], "none flagged")

    def keypoint_errors(self) -> str:
        self._need("pose")
        keypoints = list(dict.fromkeys(self.qc["keypoint"].astype(str)))
        frames = np.unique(self.qc["frame"].to_numpy())
        error = np.full((len(frames), len(keypoints)), np.nan)
        flagged = np.zeros((len(frames), len(keypoints)), dtype=bool)
        rows = np.searchsorted(frames, self.qc["frame"].to_numpy())
        cols = self.qc["keypoint"].astype(str).map({k: i for i, k in enumerate(keypoints)}).to_numpy()
        error[rows, cols] = pd.to_numeric(self.qc["error_px"], errors="coerce").to_numpy()
        flagged[rows, cols] = self.qc["flagged"].astype(int).to_numpy() == 1
        return _table(segment_stats.keypoint_error_stats(error, flagged, keypoints), "no keypoints")

    # -- as tools -----------------------------------------------------------------
    def tools(self) -> list[BaseTool]:
        """The tools that fit this run's kind, for ``bind_tools``."""
        def tool(func: Callable[..., str], schema: type[BaseModel], description: str) -> BaseTool:
            def guarded(**kwargs: object) -> str:
                try:
                    return func(**kwargs)
                except ValueError as exc:
                    return f"cannot answer: {exc}"
            return StructuredTool.from_function(guarded, name=func.__name__, description=description, args_schema=schema)

        if self.kind == "behavior":
            return [
                tool(self.list_segments, SegmentFilter, "List segments (id, animal, start_s, end_s, label), filtered by animal, label and time range."),
                tool(self.time_budget, AnimalFilter, "Time budget per animal and label: total seconds, share, bout count and bout durations."),
                tool(self.transitions, AnimalFilter, "Counts of transitions between labels for consecutive segments of each animal."),
                tool(self.co_occurrence, NoArguments, "Seconds during which two animals show (social) behaviors at the same time."),
                tool(self.segment_detail, SegmentId, "One segment's full description, its source clips and the clip file to watch."),
            ]
        return [
            tool(self.flagged_labels, FlaggedFilter, "Labels flagged by QC (frame, keypoint, error, cameras, reason)."),
            tool(self.keypoint_errors, NoArguments, "Per-keypoint reprojection error statistics and flagged share."),
        ]
