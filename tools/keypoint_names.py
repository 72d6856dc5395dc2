"""What keypoint names say about the body: left and right twins, the ears, and the tail's chain.

A recording's keypoints are data (FORMATS.md), so the left and right
members of a pair (``forepaw_L``/``forepaw_R``, ``left ear``/``right ear``,
``L_hip``/``R_hip``) are found by the naming conventions of DeepLabCut and
Anipose projects, not by a fixed list. Pure functions on strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_SEPARATOR = r"[\s_\-.]"
# (pattern, group of the side, group of the rest); tried in order on the lower-cased name.
# A single-letter side needs a separator, so that "tail" or "ear" never reads as a side.
_SIDE_PATTERNS = (
    (re.compile(rf"^(left|right){_SEPARATOR}*(.+)$"), 1, 2),
    (re.compile(rf"^(.+?){_SEPARATOR}*(left|right)$"), 2, 1),
    (re.compile(rf"^(l|r){_SEPARATOR}+(.+)$"), 1, 2),
    (re.compile(rf"^(.+?){_SEPARATOR}+(l|r)$"), 2, 1),
)


def _side_and_body_part(name: str) -> tuple[str, str] | None:
    """``("l" | "r", body part)`` for a sided name, None for a midline one."""
    lowered = name.strip().lower()
    for pattern, side_group, rest_group in _SIDE_PATTERNS:
        match = pattern.match(lowered)
        if match:
            body_part = re.sub(rf"{_SEPARATOR}+", "", match.group(rest_group))
            return match.group(side_group)[0], body_part
    return None


def mirror_groups(keypoints: Sequence[str]) -> np.ndarray:
    """``(n_keypoints,)`` group of each keypoint: a left/right pair shares one, every other keypoint has its own.

    The group is the index of the pair's first keypoint in ``keypoints``
    (a keypoint's own index when it has no twin). A name pairs with the one
    name of the other side and the same body part; a side named twice pairs
    with nothing.

    Examples
    --------
    >>> mirror_groups(["ear_L", "ear_R", "back", "Left Paw", "right_paw"]).tolist()
    [0, 0, 2, 3, 3]
    """
    groups = np.arange(len(keypoints))
    sided: dict[tuple[str, str], list[int]] = {}
    for index, name in enumerate(keypoints):
        parsed = _side_and_body_part(name)
        if parsed is not None:
            sided.setdefault(parsed, []).append(index)
    for (side, body_part), indices in sided.items():
        twins = sided.get(("r", body_part), []) if side == "l" else []
        if len(indices) == 1 and len(twins) == 1:
            first = min(indices[0], twins[0])
            groups[indices[0]] = groups[twins[0]] = first
    return groups


def twin_indices(groups: np.ndarray) -> np.ndarray:
    """``(n_keypoints,)`` index of each keypoint's twin in :func:`mirror_groups`' ``groups``; its own index where it has none.

    Examples
    --------
    >>> twin_indices(np.array([0, 0, 2, 3, 3])).tolist()
    [1, 0, 2, 4, 3]
    """
    groups = np.asarray(groups)
    twin = np.arange(groups.size)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if members.size == 2:
            twin[members] = members[::-1]
    return twin


def left_twins(keypoints: Sequence[str], groups: np.ndarray) -> np.ndarray:
    """``(n_keypoints,)`` bool: the left keypoint of each pair of :func:`mirror_groups`' ``groups``.

    Examples
    --------
    >>> names = ["ear_L", "ear_R", "back", "Left Paw", "right_paw"]
    >>> left_twins(names, mirror_groups(names)).tolist()
    [True, False, False, True, False]
    """
    paired = twin_indices(groups) != np.arange(len(keypoints))
    return np.array([bool(is_paired) and _side_and_body_part(name)[0] == "l"
                     for name, is_paired in zip(keypoints, paired, strict=True)], dtype=bool)


def ear_pair(keypoints: Sequence[str]) -> tuple[int, int] | None:
    """``(left, right)`` indices of the ears where the names show one left/right pair of them, else None.

    Examples
    --------
    >>> ear_pair(["nose", "Left Ear", "right_ear", "tail_base"])
    (1, 2)
    >>> ear_pair(["ear_L", "back"]) is None
    True
    """
    twins = twin_indices(mirror_groups(keypoints))
    ears = [index for index, name in enumerate(keypoints) if twins[index] != index
            and _side_and_body_part(name)[1] in ("ear", "ears")]
    if len(ears) != 2:
        return None
    left = [index for index in ears if _side_and_body_part(keypoints[index])[0] == "l"]
    return (left[0], int(twins[left[0]])) if len(left) == 1 else None


# Words that place a tail keypoint along the tail (DeepLabCut, Anipose and MABe names:
# "tail_base", "tailbase", "Tail Middle", "tail_mid", "tail_tip", "tailend").
_TAIL_PLACES = (("base", "root", "start"), ("middle", "mid", "center", "centre"), ("tip", "end"))
_TAIL = re.compile(rf"^tail{_SEPARATOR}*(?P<place>[a-z]+)$|^(?P<place_first>[a-z]+){_SEPARATOR}*tail$")


def tail_chain(keypoints: Sequence[str]) -> tuple[int, int, int] | None:
    """``(tip, middle, base)`` indices of the tail's keypoints where the names show one of each, else None.

    The order of a chain of keypoints cannot be learned from a run that
    kept two of them exchanged, nor from seed frames that caught the tail
    curled, so it is read from the names.

    Examples
    --------
    >>> tail_chain(["ear_L", "tail_base", "Tail Mid", "tail_tip"])
    (3, 2, 1)
    >>> tail_chain(["tail_base", "tail_tip"]) is None
    True
    """
    found: list[list[int]] = [[], [], []]
    for index, name in enumerate(keypoints):
        match = _TAIL.match(name.strip().lower())
        if match is None:
            continue
        place = match.group("place") or match.group("place_first")
        for position, words in enumerate(_TAIL_PLACES):
            if place in words:
                found[position].append(index)
    if any(len(indices) != 1 for indices in found):
        return None
    (base,), (middle,), (tip,) = found
    return tip, middle, base
