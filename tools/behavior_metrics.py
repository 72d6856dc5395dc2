"""Scores of a behavior segmentation against reference segments.

Segments are ``(animal, start_frame, end_frame, label)`` with ``end_frame``
exclusive; within one list an animal's segments must not overlap.

Definitions used throughout:

- A *boundary* of a segment list is a frame ``b`` of one animal where the
  label of frame ``b - 1`` differs from that of frame ``b``, both inside the
  animal's labelled extent; a frame without a segment counts as a label of its
  own, so a gap contributes its two edges. The extent's own first and last
  edges are not boundaries.
- Predicted labels are free names (cluster ids, captions). Each is mapped to
  the reference label it shares most frames with, pooled over all animals
  (many-to-one; ties go to the alphabetically first reference label); a
  predicted label sharing no frame with the reference stays unmapped and is
  always wrong.
- Frame scores count only frames that have a reference label; such a frame
  without a predicted label is wrong.
- A score whose denominator is zero is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Segment = tuple[str, int, int, str]


@dataclass(frozen=True)
class BehaviorMetrics:
    """All scores of :func:`evaluate_behavior`; see the module docstring for definitions."""

    clip_boundary_recall: float
    frame_accuracy: float
    macro_f1: float
    segment_boundary_f1: float
    segment_count_ratio: float
    coverage: float
    n_reference_segments: int
    n_predicted_segments: int
    n_clips: int
    label_mapping: tuple[tuple[str, str], ...]


def evaluate_behavior(
    reference: Sequence[Segment],
    predicted: Sequence[Segment],
    clips: Sequence[Segment],
    n_frames: Mapping[str, int],
    fps: float,
    tolerance_s: float = 0.5,
) -> BehaviorMetrics:
    """Score predicted segments and clips against reference segments.

    Parameters
    ----------
    reference, predicted, clips : Sequence[tuple[str, int, int, str]]
        ``(animal, start_frame, end_frame, label)``; clip labels are ignored.
    n_frames : Mapping[str, int]
        Frames analysed per animal; every segment must lie in ``[0, n_frames)``.
    fps : float
        Frames per second, to turn ``tolerance_s`` into frames.
    tolerance_s : float
        Largest distance of a matching boundary, in seconds.

    Returns
    -------
    BehaviorMetrics
    """
    for name, segments in (("reference", reference), ("predicted", predicted), ("clips", clips)):
        _check_segments(name, segments, n_frames)
    reference_frames, predicted_frames, _, _ = _frame_codes(reference, predicted)
    covered = sum(int((ref >= 0).sum()) for ref in reference_frames.values())
    both = sum(
        int(((ref >= 0) & (predicted_frames[animal] >= 0)).sum())
        for animal, ref in reference_frames.items()
    )
    return BehaviorMetrics(
        clip_boundary_recall=clip_boundary_recall(reference, clips, fps, tolerance_s),
        frame_accuracy=frame_accuracy_many_to_one(reference, predicted),
        macro_f1=macro_f1(reference, predicted),
        segment_boundary_f1=segment_boundary_f1(reference, predicted, fps, tolerance_s),
        segment_count_ratio=segment_count_ratio(reference, predicted),
        coverage=both / covered if covered else float("nan"),
        n_reference_segments=len(reference),
        n_predicted_segments=len(predicted),
        n_clips=len(clips),
        label_mapping=tuple(sorted(many_to_one_mapping(reference, predicted).items())),
    )


def many_to_one_mapping(
    reference: Sequence[Segment], predicted: Sequence[Segment]
) -> dict[str, str]:
    """Predicted label -> the reference label it overlaps most, pooled over animals."""
    overlap, _, ref_labels, pred_labels = _confusion(reference, predicted)
    return {
        pred_labels[column]: ref_labels[int(overlap[:, column].argmax())]
        for column in range(len(pred_labels))
        if overlap[:, column].sum() > 0
    }


def frame_accuracy_many_to_one(reference: Sequence[Segment], predicted: Sequence[Segment]) -> float:
    """Share of reference-labelled frames whose mapped predicted label is right."""
    mapped, ref_counts = _mapped_confusion(reference, predicted)
    total = ref_counts.sum()
    return float(np.trace(mapped) / total) if total else float("nan")


def macro_f1(reference: Sequence[Segment], predicted: Sequence[Segment]) -> float:
    """Mean over reference labels of the frame F1 after many-to-one mapping."""
    mapped, ref_counts = _mapped_confusion(reference, predicted)
    if ref_counts.size == 0:
        return float("nan")
    true_positive = np.diag(mapped)
    false_positive = mapped.sum(axis=0) - true_positive
    false_negative = ref_counts - true_positive
    f1 = 2 * true_positive / (2 * true_positive + false_positive + false_negative)
    return float(f1.mean())


def clip_boundary_recall(
    reference: Sequence[Segment], clips: Sequence[Segment], fps: float, tolerance_s: float = 0.5
) -> float:
    """Share of reference boundaries with a clip edge of the same animal within tolerance.

    Every internal clip edge counts, whatever the clusters on either side; a
    clip edge may serve several reference boundaries.
    """
    tolerance = tolerance_s * fps
    ref_boundaries = _boundaries(reference, by_label=True)
    clip_boundaries = _boundaries(clips, by_label=False)
    n_found = n_total = 0
    for animal, boundaries in ref_boundaries.items():
        edges = clip_boundaries.get(animal, np.zeros(0, dtype=np.int64))
        n_total += boundaries.size
        if edges.size:
            after = np.clip(np.searchsorted(edges, boundaries), 0, edges.size - 1)
            before = np.clip(after - 1, 0, edges.size - 1)
            nearest = np.minimum(
                np.abs(edges[after] - boundaries), np.abs(edges[before] - boundaries)
            )
            n_found += int((nearest <= tolerance).sum())
    return n_found / n_total if n_total else float("nan")


def segment_boundary_f1(
    reference: Sequence[Segment], predicted: Sequence[Segment], fps: float, tolerance_s: float = 0.5
) -> float:
    """F1 of predicted against reference boundaries, matched one-to-one within tolerance.

    Matching is greedy per animal: the closest pair first (ties: earlier
    reference, then earlier predicted boundary), each boundary used once.
    ``F1 = 2 * matched / (n_reference + n_predicted)``.
    """
    tolerance = tolerance_s * fps
    ref_boundaries = _boundaries(reference, by_label=True)
    pred_boundaries = _boundaries(predicted, by_label=True)
    matched = 0
    for animal, boundaries in ref_boundaries.items():
        if animal in pred_boundaries:
            matched += _greedy_matches(boundaries, pred_boundaries[animal], tolerance)
    n_ref = sum(b.size for b in ref_boundaries.values())
    n_pred = sum(b.size for b in pred_boundaries.values())
    return 2 * matched / (n_ref + n_pred) if n_ref + n_pred else float("nan")


def segment_count_ratio(reference: Sequence[Segment], predicted: Sequence[Segment]) -> float:
    """Number of predicted segments per reference segment (1 is ideal, >1 over-segments)."""
    return len(predicted) / len(reference) if reference else float("nan")


def _greedy_matches(reference: np.ndarray, predicted: np.ndarray, tolerance: float) -> int:
    """Count of one-to-one matches between two sorted boundary arrays."""
    low = np.searchsorted(predicted, reference - tolerance, side="left")
    high = np.searchsorted(predicted, reference + tolerance, side="right")
    ref_index = np.repeat(np.arange(reference.size), high - low)
    pred_index = np.concatenate(
        [np.arange(lo, hi) for lo, hi in zip(low, high, strict=True)] or [[]]
    )
    pred_index = pred_index.astype(np.int64)
    distance = np.abs(reference[ref_index] - predicted[pred_index])
    order = np.lexsort((pred_index, ref_index, distance))
    used_ref = np.zeros(reference.size, dtype=bool)
    used_pred = np.zeros(predicted.size, dtype=bool)
    for ref, pred in zip(ref_index[order].tolist(), pred_index[order].tolist(), strict=True):
        if not used_ref[ref] and not used_pred[pred]:
            used_ref[ref] = used_pred[pred] = True
    return int(used_ref.sum())


def _boundaries(segments: Sequence[Segment], by_label: bool) -> dict[str, np.ndarray]:
    """Animal -> sorted internal boundaries; ``by_label=False`` keeps every edge."""
    by_animal: dict[str, list[Segment]] = {}
    for segment in segments:
        by_animal.setdefault(segment[0], []).append(segment)
    boundaries = {}
    for animal, items in by_animal.items():
        items.sort(key=lambda segment: segment[1])
        found: list[int] = []
        for (_, _, end, label), (_, next_start, _, next_label) in zip(
            items[:-1], items[1:], strict=True
        ):
            if next_start < end:
                raise ValueError(f"segments of {animal} overlap at frame {next_start}")
            if next_start > end:
                found += [end, next_start]
            elif not by_label or label != next_label:
                found.append(end)
        boundaries[animal] = np.array(found, dtype=np.int64)
    return boundaries


def _frame_codes(
    reference: Sequence[Segment], predicted: Sequence[Segment]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str], list[str]]:
    """Per animal, ``(n,)`` label codes of both lists (-1 = no segment) on a common length."""
    ref_labels = sorted({segment[3] for segment in reference})
    pred_labels = sorted({segment[3] for segment in predicted})
    length: dict[str, int] = {}
    for animal, _, end, _ in [*reference, *predicted]:
        length[animal] = max(length.get(animal, 0), end)
    ref_frames = _fill(reference, ref_labels, length)
    pred_frames = _fill(predicted, pred_labels, length)
    return ref_frames, pred_frames, ref_labels, pred_labels


def _fill(
    segments: Sequence[Segment], labels: list[str], length: dict[str, int]
) -> dict[str, np.ndarray]:
    codes = {label: index for index, label in enumerate(labels)}
    frames = {animal: np.full(n, -1, dtype=np.int64) for animal, n in length.items()}
    for animal, start, end, label in segments:
        if (frames[animal][start:end] >= 0).any():
            raise ValueError(f"segments of {animal} overlap in [{start}, {end})")
        frames[animal][start:end] = codes[label]
    return frames


def _confusion(
    reference: Sequence[Segment], predicted: Sequence[Segment]
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``(n_ref_labels, n_pred_labels)`` frame overlaps and ``(n_ref_labels,)`` frame counts."""
    ref_frames, pred_frames, ref_labels, pred_labels = _frame_codes(reference, predicted)
    n_ref, n_pred = len(ref_labels), len(pred_labels)
    overlap = np.zeros(n_ref * n_pred, dtype=np.int64)
    ref_counts = np.zeros(n_ref, dtype=np.int64)
    for animal, ref in ref_frames.items():
        pred = pred_frames[animal]
        both = (ref >= 0) & (pred >= 0)
        overlap += np.bincount(ref[both] * n_pred + pred[both], minlength=n_ref * n_pred)
        ref_counts += np.bincount(ref[ref >= 0], minlength=n_ref)
    return overlap.reshape(n_ref, n_pred), ref_counts, ref_labels, pred_labels


def _mapped_confusion(
    reference: Sequence[Segment], predicted: Sequence[Segment]
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_ref_labels, n_ref_labels)`` overlaps after mapping, and reference frame counts."""
    overlap, ref_counts, _, _ = _confusion(reference, predicted)
    to_reference = np.zeros((overlap.shape[1], overlap.shape[0]), dtype=np.int64)
    has_overlap = overlap.sum(axis=0) > 0
    columns = np.flatnonzero(has_overlap)
    to_reference[columns, overlap[:, columns].argmax(axis=0)] = 1
    return overlap @ to_reference, ref_counts


def _check_segments(name: str, segments: Sequence[Segment], n_frames: Mapping[str, int]) -> None:
    for animal, start, end, label in segments:
        if animal not in n_frames:
            raise ValueError(f"{name}: animal {animal!r} has no frame count")
        if not 0 <= start < end <= n_frames[animal]:
            raise ValueError(
                f"{name}: segment ({animal}, {start}, {end}, {label}) is not inside "
                f"[0, {n_frames[animal]})"
            )
