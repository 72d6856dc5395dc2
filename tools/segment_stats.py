"""Statistics over finished behavior segments (pure functions on tables).

A segments table has the columns of FORMATS.md section 4's ``segments.csv``:
``segment_id, animal, start_frame, end_frame, start_s, end_s, label,
description, clip_ids``. Durations are ``end_s - start_s`` seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

SOCIAL_LABELS = frozenset(
    {"chase", "huddle", "oral_genital_contact", "oral_oral_contact", "approach", "follow", "social_contact"}
)


def filter_segments(
    segments: pd.DataFrame,
    animal: str | None = None,
    label: str | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> pd.DataFrame:
    """Segments of ``animal`` with ``label`` that overlap ``[start_s, end_s)``, in time order."""
    keep = np.ones(len(segments), dtype=bool)
    if animal is not None:
        keep &= (segments["animal"] == animal).to_numpy()
    if label is not None:
        keep &= (segments["label"] == label).to_numpy()
    if start_s is not None:
        keep &= (segments["end_s"] > start_s).to_numpy()
    if end_s is not None:
        keep &= (segments["start_s"] < end_s).to_numpy()
    return segments[keep].sort_values(["start_s", "animal", "segment_id"], kind="stable")


def time_budget(segments: pd.DataFrame) -> pd.DataFrame:
    """Per animal and label: total seconds, share of the animal's time, bouts, bout durations.

    Returns columns ``animal, label, total_s, share, bouts, mean_bout_s,
    median_bout_s, max_bout_s`` sorted by animal then descending total.
    """
    durations = segments.assign(duration_s=segments["end_s"] - segments["start_s"])
    grouped = durations.groupby(["animal", "label"], sort=True)["duration_s"]
    table = grouped.agg(total_s="sum", bouts="count", mean_bout_s="mean", median_bout_s="median", max_bout_s="max")
    table = table.reset_index()
    per_animal = durations.groupby("animal")["duration_s"].sum()
    table["share"] = table["total_s"] / table["animal"].map(per_animal)
    table = table.sort_values(["animal", "total_s", "label"], ascending=[True, False, True], kind="stable")
    columns = ["animal", "label", "total_s", "share", "bouts", "mean_bout_s", "median_bout_s", "max_bout_s"]
    return table[columns].reset_index(drop=True)


def transitions(segments: pd.DataFrame, animal: str | None = None) -> pd.DataFrame:
    """Counts of label ``from -> to`` between consecutive segments of each animal.

    Returns columns ``animal, from_label, to_label, count`` (most frequent first).
    """
    rows = []
    selected = segments if animal is None else segments[segments["animal"] == animal]
    for name, group in selected.sort_values(["animal", "start_frame"], kind="stable").groupby("animal", sort=True):
        labels = group["label"].to_list()
        rows.extend((name, a, b) for a, b in zip(labels[:-1], labels[1:], strict=True) if a != b)
    table = pd.DataFrame(rows, columns=["animal", "from_label", "to_label"])
    counted = table.value_counts().rename("count").reset_index()
    return counted.sort_values(["count", "animal", "from_label", "to_label"], ascending=[False, True, True, True], kind="stable").reset_index(drop=True)


def co_occurrence(segments: pd.DataFrame, social_only: bool = True) -> pd.DataFrame:
    """Seconds during which animal A shows ``label_a`` while animal B shows ``label_b``.

    Only pairs of different animals, A < B by name; with ``social_only`` at least
    one of the two labels is social. Returns ``animal_a, label_a, animal_b,
    label_b, overlap_s`` sorted by descending overlap.
    """
    records = segments[["animal", "label", "start_s", "end_s"]].to_numpy()
    animals = records[:, 0].astype(str)
    pair = animals[:, None] < animals[None, :]
    start = np.maximum(records[:, 2].astype(float)[:, None], records[:, 2].astype(float)[None, :])
    end = np.minimum(records[:, 3].astype(float)[:, None], records[:, 3].astype(float)[None, :])
    overlap = np.clip(end - start, 0.0, None)
    labels = records[:, 1].astype(str)
    social = np.isin(labels, list(SOCIAL_LABELS))
    keep = pair & (overlap > 0)
    if social_only:
        keep &= social[:, None] | social[None, :]
    i, j = np.nonzero(keep)
    table = pd.DataFrame(
        {"animal_a": animals[i], "label_a": labels[i], "animal_b": animals[j], "label_b": labels[j], "overlap_s": overlap[i, j]}
    )
    table = table.groupby(["animal_a", "label_a", "animal_b", "label_b"], sort=True)["overlap_s"].sum().reset_index()
    return table.sort_values(["overlap_s", "animal_a", "animal_b"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


def keypoint_error_stats(error_px: np.ndarray, flagged: np.ndarray, keypoints: list[str]) -> pd.DataFrame:
    """Per keypoint: mean, median and 95th percentile reprojection error and flagged share.

    Parameters
    ----------
    error_px : np.ndarray
        ``(n_frames, n_keypoints)`` mean reprojection error, NaN where untriangulated.
    flagged : np.ndarray
        ``(n_frames, n_keypoints)`` bool, QC flags.
    keypoints : list[str]
        Names, ``n_keypoints`` long.
    """
    if error_px.shape != flagged.shape or error_px.shape[1] != len(keypoints):
        raise ValueError(f"error_px {error_px.shape} and flagged {flagged.shape} must be (n_frames, {len(keypoints)})")
    finite = np.isfinite(error_px)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN keypoints give NaN statistics
        stats = {
            "keypoint": keypoints,
            "mean_error_px": np.nanmean(error_px, axis=0),
            "median_error_px": np.nanmedian(error_px, axis=0),
            "p95_error_px": np.nanpercentile(error_px, 95, axis=0),
            "triangulated_share": finite.mean(axis=0),
            "flagged_share": flagged.astype(bool).mean(axis=0),
        }
    return pd.DataFrame(stats)
