"""The behavior perception Protocol: the stage verbs ``caption_clips`` and ``merge_segments``.

Every behavior backend (``classical`` now; a model backend later) implements
:class:`BehaviorBackend`. Requests and answers are pydantic models, so a
model backend can hand the answer schemas to a structured-output call and
the graph never parses text. A backend that cannot give a valid answer
returns it ``flagged`` with a ``reason``; it never raises for a bad answer
and never passes error text on as a caption.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

SNAKE_CASE = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
SummaryValue = float | int | str | None


class ClipRequest(BaseModel):
    """One clip to caption: frames ``[start_frame, end_frame)`` of one animal."""

    model_config = ConfigDict(frozen=True)

    clip_id: str
    animal: str
    start_frame: int = Field(ge=0)
    end_frame: int = Field(gt=0)
    fps: float = Field(gt=0)
    cluster: int = Field(description="DEC cluster covering most of the clip")
    video_path: str | None = Field(default=None, description="short clip video around the animal")
    features: dict[str, SummaryValue] = Field(
        default_factory=dict, description="kinematic summary (tools.behavior_rules.summarize_clip)"
    )


class ClipCaption(BaseModel):
    """The answer for one clip."""

    label: str = Field(pattern=SNAKE_CASE, description="behavior label, lower snake_case")
    description: str = Field(description="what the animal does, with numbers where known")
    flagged: bool = Field(default=False, description="the caption should be reviewed")
    reason: str | None = Field(default=None, description="short machine-readable reason when flagged")


class CaptionedClip(BaseModel):
    """A clip with its caption, as the merge stage sees it."""

    model_config = ConfigDict(frozen=True)

    clip_id: str
    start_frame: int = Field(ge=0)
    end_frame: int = Field(gt=0)
    label: str = Field(pattern=SNAKE_CASE)
    description: str


class MergedSegment(BaseModel):
    """A segment of one animal built from consecutive clips; frames ``[start_frame, end_frame)``."""

    start_frame: int = Field(ge=0)
    end_frame: int = Field(gt=0)
    label: str = Field(pattern=SNAKE_CASE)
    description: str
    clip_ids: list[str]


class MergeRequest(BaseModel):
    """One chunk of one animal's captioned clips, in time order.

    ``previous`` is the last segment of the preceding chunk (long sessions
    are merged in chunks); the answer starts with it, extended when the
    chunk continues it, and replaces it.
    """

    animal: str
    fps: float = Field(gt=0)
    clips: list[CaptionedClip]
    previous: MergedSegment | None = None


@runtime_checkable
class BehaviorBackend(Protocol):
    """What the behavior graph needs from a perception backend."""

    name: str

    def caption_clips(self, requests: list[ClipRequest]) -> list[ClipCaption]:
        """One caption per request, in request order."""
        ...

    def merge_segments(self, request: MergeRequest) -> list[MergedSegment]:
        """Segments that tile ``[first clip start (or previous start), last clip end)`` exactly."""
        ...
