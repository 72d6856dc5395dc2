"""Quality control of one tracked frame: which keypoints to retry, flag, and how much to trust.

Pure arrays in, arrays out. A keypoint is flagged with the first reason that
applies, in this order:

``unassigned``
    no camera has a label for it;
``few_cameras``
    it could not be triangulated, or fewer than ``min_cameras`` cameras
    agree on its 3D point (its views are retried; a triangulated label the
    body vouches for, deviation under ``confirm_body_deviation``, is not
    flagged after the retries);
``reprojection``
    its mean reprojection error, or the error in one of its labelled views,
    is over the threshold;
``low_margin``
    in some camera the assignment was nearly a tie with another centroid;
``jump``
    its 3D point lies far from the motion prediction.

Those five are retried through stages 1-3 where a view is to blame. Three
more only ask for review (a wrong label that every camera repeats passes
every geometric check; the body is what still sees it):

``body``
    its distances to the other regions' keypoints are far from the body's
    (:func:`tools.body_distances.body_deviation`, in tolerances; the caller
    gives NaN for keypoints the body cannot judge);
``few_cameras``
    fewer than ``review_min_cameras`` cameras confirm it and the body does
    not vouch for it;
``unchecked``
    the body has no reference for the keypoint (the seed frames never
    triangulated it), so nothing can tell whether it took another's dot;
``reacquired``
    the keypoint was lost for a while and found again, maybe on another
    keypoint's dot: its labels ask for review until the body vouches for
    one (the caller says which keypoints were found again);
``side``
    one of a left/right pair whose sides are a guess the body cannot check
    (mirror twins sit at the same distances): the body moved a point into
    the pair from another group (a forepaw's label onto a hindpaw), a
    twin came back while the other was lost or had just moved away, or
    one moved far while the other was lost (the caller says which
    keypoints, leaving out a pair whose order across the body vouches for
    it in this frame); both ask for review while the pair stays tracked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reasons whose views may be retried, in order of precedence; then the review-only ones.
RETRY_REASONS = ("unassigned", "few_cameras", "reprojection", "low_margin", "jump")
REASONS = (*RETRY_REASONS, "body", "unchecked", "reacquired", "side")


@dataclass(frozen=True)
class QualityParams:
    """Thresholds of :func:`assess_frame`.

    Attributes
    ----------
    max_error_px : float
        Largest mean reprojection error (pixels) of an accepted keypoint.
    max_view_error_px : float
        Largest reprojection error (pixels) of any single labelled view.
    min_cameras : int
        Fewest agreeing cameras of an accepted keypoint; below it the
        keypoint's views are retried.
    review_min_cameras : int
        Fewest agreeing cameras of a label that needs no review; below it
        the keypoint is flagged ``few_cameras`` but not retried, unless the
        body confirms it. At most ``min_cameras`` means no extra flags.
    max_body_deviation : float
        Largest body deviation (tolerances) of a label that needs no review.
    confirm_body_deviation : float
        A triangulated label with a body deviation under this needs no
        review for being confirmed by few cameras (it is still retried).
    min_margin_px : float
        Smallest assignment margin (pixels) of an accepted label.
    max_jump_mm : float
        Largest distance (calibration units) from the motion prediction.
    error_scale_px : float
        The score decays as ``exp(-error / error_scale_px)``.
    """

    max_error_px: float = 2.0
    max_view_error_px: float = 2.5
    min_cameras: int = 3
    review_min_cameras: int = 3
    max_body_deviation: float = 1.2
    confirm_body_deviation: float = 0.5
    min_margin_px: float = 2.0
    max_jump_mm: float = 15.0
    error_scale_px: float = 4.0


@dataclass(frozen=True)
class FrameQuality:
    """Result of :func:`assess_frame`.

    Attributes
    ----------
    flagged : np.ndarray
        ``(n_keypoints,)`` bool, the label should be reviewed.
    reason : np.ndarray
        ``(n_keypoints,)`` str, one of :data:`REASONS`, ``""`` where not flagged.
    retry : np.ndarray
        ``(n_cameras, n_keypoints)`` bool, views of flagged keypoints worth
        another assignment: unlabelled, badly reprojected or ambiguous.
    score : np.ndarray
        ``(n_keypoints,)`` confidence in [0, 1], 0 where untriangulated.
    """

    flagged: np.ndarray
    reason: np.ndarray
    retry: np.ndarray
    score: np.ndarray


def assess_frame(points_3d: np.ndarray, ncams: np.ndarray, mean_error_px: np.ndarray,
                 error_px: np.ndarray, margin_px: np.ndarray, predicted_3d: np.ndarray,
                 params: QualityParams = QualityParams(), body_deviation: np.ndarray | None = None,
                 body_known: np.ndarray | None = None,
                 reacquired: np.ndarray | None = None,
                 side_unsure: np.ndarray | None = None) -> FrameQuality:
    """Flag, score and choose views to retry for one frame.

    Parameters
    ----------
    points_3d : np.ndarray
        ``(n_keypoints, 3)`` triangulated points, NaN where missing.
    ncams : np.ndarray
        ``(n_keypoints,)`` cameras used for each point.
    mean_error_px : np.ndarray
        ``(n_keypoints,)`` mean reprojection error over the cameras used, NaN where none.
    error_px : np.ndarray
        ``(n_cameras, n_keypoints)`` reprojection error of each view's label,
        NaN where the view has no label; a label with an untriangulated
        point has error ``inf``.
    margin_px : np.ndarray
        ``(n_cameras, n_keypoints)`` assignment margins, NaN where unlabelled.
    predicted_3d : np.ndarray
        ``(n_keypoints, 3)`` motion prediction, NaN where unknown.
    params : QualityParams
        Thresholds.
    body_deviation, body_known : np.ndarray or None
        ``(n_keypoints,)`` :func:`tools.body_distances.body_deviation` (NaN
        where unknown) and :func:`tools.body_distances.known_keypoints`;
        None (no body model): no ``body`` or ``unchecked`` flags and no
        confirmation by the body.
    reacquired : np.ndarray or None
        ``(n_keypoints,)`` bool, found again after being lost (None: none).
    side_unsure : np.ndarray or None
        ``(n_keypoints,)`` bool, its side of a left/right pair guessed (None: none).
    """
    n_keypoints = np.shape(points_3d)[0]
    _check("points_3d", points_3d, (n_keypoints, 3))
    _check("ncams", ncams, (n_keypoints,))
    _check("mean_error_px", mean_error_px, (n_keypoints,))
    n_cameras = np.shape(error_px)[0] if np.ndim(error_px) == 2 else -1
    _check("error_px", error_px, (n_cameras, n_keypoints))
    _check("margin_px", margin_px, (n_cameras, n_keypoints))
    _check("predicted_3d", predicted_3d, (n_keypoints, 3))
    deviation = np.full(n_keypoints, np.nan) if body_deviation is None else body_deviation
    known = np.ones(n_keypoints, bool) if body_known is None else np.asarray(body_known, bool)
    _check("body_deviation", deviation, (n_keypoints,))
    _check("body_known", known, (n_keypoints,))
    found_again = np.zeros(n_keypoints, bool) if reacquired is None else np.asarray(reacquired, bool)
    _check("reacquired", found_again, (n_keypoints,))
    unsure_side = np.zeros(n_keypoints, bool) if side_unsure is None else np.asarray(side_unsure, bool)
    _check("side_unsure", unsure_side, (n_keypoints,))
    labelled = ~np.isnan(error_px)
    triangulated = np.all(np.isfinite(points_3d), axis=1)
    view_error = np.where(labelled, error_px, 0.0)
    mean_error = np.where(triangulated, mean_error_px, np.nan)
    jump = np.linalg.norm(points_3d - predicted_3d, axis=1)
    bad_view = labelled & (view_error > params.max_view_error_px)
    ambiguous = labelled & (np.nan_to_num(margin_px, nan=np.inf) < params.min_margin_px)
    conditions = [
        ~labelled.any(axis=0),
        ~triangulated | (np.asarray(ncams) < params.min_cameras),
        (np.nan_to_num(mean_error) > params.max_error_px) | bad_view.any(axis=0),
        ambiguous.any(axis=0),
        np.nan_to_num(jump) > params.max_jump_mm,
    ]
    reason = np.select(conditions, RETRY_REASONS, default="").astype(object).astype(str)
    retry = (reason != "")[None, :] & (~labelled | bad_view | ambiguous)
    vouched = np.nan_to_num(deviation, nan=np.inf) < params.confirm_body_deviation
    reason = np.where((reason == "few_cameras") & triangulated & vouched, "", reason)
    review = np.select(
        [np.nan_to_num(deviation) > params.max_body_deviation,
         (np.asarray(ncams) < params.review_min_cameras) & ~vouched,
         triangulated & ~known,
         triangulated & found_again & ~vouched,
         triangulated & unsure_side],
        ["body", "few_cameras", "unchecked", "reacquired", "side"], default="")
    reason = np.where(reason == "", review, reason)
    flagged = reason != ""
    score = label_score(points_3d, mean_error, ncams, flagged, params)
    return FrameQuality(flagged=flagged, reason=reason, retry=retry, score=score)


def label_score(points_3d: np.ndarray, mean_error_px: np.ndarray, ncams: np.ndarray,
                flagged: np.ndarray, params: QualityParams = QualityParams()) -> np.ndarray:
    """``(n_keypoints,)`` confidence in [0, 1]: decays with the mean reprojection error, grows
    with the cameras up to ``params.min_cameras``, halved where flagged, 0 where untriangulated."""
    triangulated = np.all(np.isfinite(points_3d), axis=1)
    score = np.where(triangulated, np.exp(-np.nan_to_num(mean_error_px) / params.error_scale_px),
                     0.0)
    score = score * np.minimum(1.0, np.asarray(ncams) / params.min_cameras)
    return np.round(np.where(flagged, 0.5 * score, score), 6)


def _check(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if np.shape(array) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {np.shape(array)}")
