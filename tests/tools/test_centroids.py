"""Tests for tools/centroids.py on synthetic Gaussian spots with known sub-pixel centres."""

from __future__ import annotations

import numpy as np
import pytest

from tools.centroids import CentroidParams, Centroids, detect_centroids

SPOT_SIGMA_PX = 2.0


def render_spots(
    rng: np.random.Generator,
    xy: np.ndarray,
    amplitude: np.ndarray,
    shape: tuple[int, int] = (240, 320),
    noise: float = 3.0,
    background: float = 10.0,
    dtype: type = np.uint8,
) -> np.ndarray:
    """Gaussian spots sampled at pixel centres, plus Gaussian noise, rounded and clipped."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.full(shape, background, dtype=np.float64)
    for (x, y), peak in zip(np.asarray(xy), np.asarray(amplitude), strict=True):
        image += peak * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * SPOT_SIGMA_PX**2))
    image += rng.normal(0.0, noise, shape)
    return np.clip(np.rint(image), 0, np.iinfo(dtype).max).astype(dtype)


def spread_points(rng: np.random.Generator, n_points: int, shape=(240, 320)) -> np.ndarray:
    """``(n_points, 2)`` random sub-pixel positions at least 20 px apart and from the border."""
    height, width = shape
    grid = np.array([(x, y) for y in range(30, height - 20, 40) for x in range(30, width - 20, 40)])
    chosen = grid[rng.choice(len(grid), size=n_points, replace=False)]
    return chosen + rng.uniform(-8.0, 8.0, size=(n_points, 2))


def nearest_distance(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each true point, the distance to the nearest found centroid."""
    return np.linalg.norm(truth[:, None, :] - found[None, :, :], axis=2).min(axis=1)


def test_isolated_spots_are_found_within_a_tenth_of_a_pixel(rng):
    truth = spread_points(rng, 12)
    frame = render_spots(rng, truth, rng.uniform(60.0, 220.0, 12))
    centroids = detect_centroids(frame)
    assert len(centroids) == 12
    assert nearest_distance(centroids.xy, truth).max() < 0.1


def test_result_arrays_have_documented_shapes_and_types(rng):
    frame = render_spots(rng, spread_points(rng, 5), np.full(5, 120.0))
    centroids = detect_centroids(frame)
    assert centroids.xy.shape == (5, 2) and centroids.xy.dtype == np.float64
    assert centroids.intensity.shape == (5,) and np.all(centroids.intensity > 0)
    assert centroids.area.shape == (5,) and centroids.area.dtype == np.int64


def test_brighter_spot_has_more_intensity_and_area(rng):
    truth = np.array([[80.3, 120.6], [200.7, 120.2]])
    centroids = detect_centroids(render_spots(rng, truth, np.array([60.0, 200.0])))
    dim, bright = np.argsort(centroids.xy[:, 0])
    assert centroids.intensity[bright] > 2.5 * centroids.intensity[dim]
    assert centroids.area[bright] > centroids.area[dim]


@pytest.mark.parametrize("noise", [2.0, 6.0])
def test_noise_only_frames_give_no_spots(rng, noise):
    frame = render_spots(rng, np.zeros((0, 2)), np.zeros(0), noise=noise)
    assert len(detect_centroids(frame)) == 0


def test_empty_result_keeps_array_shapes():
    centroids = detect_centroids(np.zeros((50, 60), np.uint8))
    assert centroids.xy.shape == (0, 2)
    assert centroids.intensity.shape == (0,) and centroids.area.shape == (0,)


@pytest.mark.parametrize("separation_sigmas", [2.5, 3.0])
@pytest.mark.parametrize("second_amplitude", [150.0, 90.0])
def test_merged_spots_are_split(rng, separation_sigmas, second_amplitude):
    direction = np.array([np.cos(0.6), np.sin(0.6)])
    offset = direction * separation_sigmas * SPOT_SIGMA_PX / 2
    centre = np.array([160.4, 120.7])
    truth = np.array([centre - offset, centre + offset])
    frame = render_spots(rng, truth, np.array([150.0, second_amplitude]))
    assert len(detect_centroids(frame, CentroidParams(split_merged=False))) == 1
    centroids = detect_centroids(frame)
    assert len(centroids) == 2
    assert nearest_distance(centroids.xy, truth).max() < 1.0


@pytest.mark.parametrize("peak", [400.0, 2000.0])
def test_saturated_spot_stays_whole(rng, peak):
    truth = np.array([[150.3, 110.8]])
    frame = render_spots(rng, truth, np.array([peak]), noise=3.0)
    centroids = detect_centroids(frame)
    assert len(centroids) == 1
    assert nearest_distance(centroids.xy, truth).max() < 0.2


def test_spots_are_numbered_in_reading_order(rng):
    centroids = detect_centroids(render_spots(rng, spread_points(rng, 10), np.full(10, 150.0)))
    rounded = np.round(centroids.xy, 2)
    keys = list(zip(rounded[:, 1], rounded[:, 0], strict=True))
    assert len(keys) == 10 and keys == sorted(keys)


def test_translating_the_frame_translates_the_centroids(rng):
    frame = render_spots(rng, spread_points(rng, 8), rng.uniform(80.0, 200.0, 8))
    # A multiple of the background downsampling factor keeps the estimate aligned; the
    # new border changes the noise estimate a little, hence the 0.01 px tolerance.
    shift_x, shift_y = 8, 4
    shifted = np.full_like(frame, 10)
    shifted[shift_y:, shift_x:] = frame[:-shift_y, :-shift_x]
    original, moved = detect_centroids(frame), detect_centroids(shifted)
    np.testing.assert_allclose(moved.xy, original.xy + [shift_x, shift_y], atol=0.01)
    np.testing.assert_array_equal(moved.area, original.area)


def test_native_16_bit_data_with_little_noise_leaves_a_faint_glow_alone(rng):
    # 8-bit values scaled to 16 bits plus noise under one 8-bit level: the steps are 1, and
    # a floor of 12 raw units would let a glow 6 levels (of 8 bits) high through.
    frame = np.full((120, 160), 10.0)
    yy, xx = np.mgrid[:120, :160]
    frame += 6.0 * np.exp(-((yy - 40.0) ** 2 + (xx - 50.0) ** 2) / (2 * 4.0 ** 2))  # the glow
    frame += 190.0 * np.exp(-((yy - 80.0) ** 2 + (xx - 110.0) ** 2) / (2 * 1.5 ** 2))  # a dot
    as_uint8 = detect_centroids(np.round(frame).astype(np.uint8))
    noisy = np.round(frame * 257.0 + rng.integers(0, 200, frame.shape)).astype(np.uint16)
    as_uint16 = detect_centroids(noisy)
    assert len(as_uint8.xy) == 1
    np.testing.assert_allclose(as_uint16.xy, as_uint8.xy, atol=0.1)


def test_reruns_are_identical(rng):
    frame = render_spots(rng, spread_points(rng, 8), np.full(8, 150.0))
    first, second = detect_centroids(frame), detect_centroids(frame.copy())
    for name in ("xy", "intensity", "area"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


@pytest.mark.parametrize("scale", [256, 257, 16])
def test_uint16_frame_matches_scaled_uint8_frame(rng, scale):
    # 8- or 12-bit data stored as uint16 (steps of 256/257 or 16): the threshold floor
    # counts grey-level steps, so default parameters find the same spots.
    frame = render_spots(rng, spread_points(rng, 6), rng.uniform(80.0, 200.0, 6))
    as_uint8 = detect_centroids(frame)
    as_uint16 = detect_centroids(frame.astype(np.uint16) * scale)
    np.testing.assert_allclose(as_uint16.xy, as_uint8.xy, atol=1e-6)
    np.testing.assert_array_equal(as_uint16.area, as_uint8.area)
    np.testing.assert_allclose(as_uint16.intensity, as_uint8.intensity * scale, rtol=1e-5)


def test_a_clean_uint16_frame_of_two_levels_keeps_its_spots():
    # Background 0 and saturated spots: two grey levels say nothing about the bit depth.
    frame = np.zeros((40, 40), np.uint16)
    frame[9:12, 9:12] = 65535
    frame[25:28, 30:33] = 65535
    assert len(detect_centroids(frame)) == 2


def test_dark_8_bit_data_stored_as_uint16_keeps_its_threshold(rng):
    # A dark frame shows only a few grey levels (noise 0-2); scaled by 257 they must stay noise.
    frame = rng.integers(0, 3, (60, 60)).astype(np.uint8)
    frame[10:13, 10:13] = 120
    frame[40:43, 30:33] = 200
    as_uint8 = detect_centroids(frame)
    as_uint16 = detect_centroids(frame.astype(np.uint16) * 257)
    assert len(as_uint8) == 2
    np.testing.assert_allclose(as_uint16.xy, as_uint8.xy, atol=1e-6)


def test_given_background_removes_a_bright_gradient(rng):
    truth = spread_points(rng, 6)
    height, width = 240, 320
    gradient = np.tile(np.linspace(0.0, 120.0, width), (height, 1))
    clean = render_spots(rng, truth, np.full(6, 100.0), noise=2.0, background=0.0)
    frame = np.clip(clean + gradient, 0, 255).astype(np.uint8)
    centroids = detect_centroids(frame, background=gradient)
    assert len(centroids) == 6
    assert nearest_distance(centroids.xy, truth).max() < 0.1


def test_opening_background_handles_a_gradient_without_a_background_frame(rng):
    truth = spread_points(rng, 6)
    gradient = np.tile(np.linspace(0.0, 120.0, 320), (240, 1))
    clean = render_spots(rng, truth, np.full(6, 100.0), noise=2.0, background=0.0)
    frame = np.clip(clean + gradient, 0, 255).astype(np.uint8)
    centroids = detect_centroids(frame)
    assert len(centroids) == 6
    assert nearest_distance(centroids.xy, truth).max() < 0.15


def test_area_limits_drop_small_and_large_spots(rng):
    truth = spread_points(rng, 4)
    frame = render_spots(rng, truth, np.full(4, 150.0))
    area = detect_centroids(frame).area
    assert len(detect_centroids(frame, CentroidParams(max_area_px=int(area.min()) - 1))) == 0
    too_small = CentroidParams(min_area_px=int(area.max()) + 1, max_area_px=10_000)
    assert len(detect_centroids(frame, too_small)) == 0


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((4, 5, 3), np.uint8), r"\(H, W\).*\(4, 5, 3\)"),
        (np.zeros((4, 5), np.float32), "uint8 or uint16"),
    ],
)
def test_bad_frames_are_rejected(frame, match):
    with pytest.raises(ValueError, match=match):
        detect_centroids(frame)


def test_background_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        detect_centroids(np.zeros((4, 5), np.uint8), background=np.zeros((5, 4)))


def test_inconsistent_area_limits_are_rejected():
    with pytest.raises(ValueError, match="min_area_px"):
        CentroidParams(min_area_px=10, max_area_px=5)


def test_centroids_length_is_number_of_spots():
    centroids = Centroids(xy=np.zeros((3, 2)), intensity=np.ones(3), area=np.ones(3, np.int64))
    assert len(centroids) == 3


def _blob_response_near(residual: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                        sigma_px: float, reach_px: int) -> np.ndarray:
    """The blob response filtered on detect_centroids' box around ``(rows, cols)`` only, 0 elsewhere."""
    from tools.centroids import _blob_response, _response_box

    box = _response_box(residual.shape, rows, cols, sigma_px, reach_px)
    response = np.zeros_like(residual)
    response[box] = _blob_response(np.ascontiguousarray(residual[box]), sigma_px)
    return response


@pytest.mark.parametrize("corner", [(0, 0), (40, 60), (89, 119)])
def test_blob_response_near_the_foreground_equals_the_full_one(rng, corner):
    from tools.centroids import _blob_response

    residual = rng.normal(0, 5, (90, 120)).astype(np.float32)
    rows = np.clip(corner[0] + rng.integers(-6, 7, 30), 0, 89)
    cols = np.clip(corner[1] + rng.integers(-6, 7, 30), 0, 119)
    reach = 3
    near = _blob_response_near(residual, rows, cols, 1.5, reach)
    full = _blob_response(residual, 1.5)
    y0, x0 = max(0, rows.min() - reach), max(0, cols.min() - reach)
    box = (slice(y0, rows.max() + reach + 1), slice(x0, cols.max() + reach + 1))
    # Equal up to float32 rounding: OpenCV's vector loops may sum in another order on a box.
    np.testing.assert_allclose(near[box], full[box], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["ties", "noise", "nan", "small"])
def test_median_is_numpys_float(rng, kind):
    from tools.centroids import _median

    values = {
        "ties": np.where(rng.random((88, 128)) < 0.6, 0.0, rng.uniform(0, 0.4, (88, 128))),
        "noise": rng.normal(3.0, 2.0, (88, 128)),
        "nan": np.where(rng.random((88, 128)) < 0.01, np.nan, rng.normal(0, 1, (88, 128))),
        "small": rng.normal(0, 1, (7, 9)),
    }[kind].astype(np.float32)
    expected, found = np.median(values), _median(values)
    assert found.dtype == expected.dtype
    np.testing.assert_array_equal(found, expected)


def test_sparse_labelling_matches_whole_frame_components(rng):
    import cv2

    from tools.centroids import _label_components

    mask = (rng.random((120, 160)) < 0.04).astype(np.uint8)
    mask[50:53, 10:90] = 1  # a long component and far-apart rows and columns
    n_full, full = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    flat = np.flatnonzero(mask)
    rows, cols = np.divmod(flat, mask.shape[1])
    n_labels, labels = _label_components(rows, cols)
    assert n_labels == n_full
    pairs = np.unique(np.column_stack([full.ravel()[flat], labels]), axis=0)
    assert len(pairs) == n_full - 1  # the same partition of the pixels


def test_blob_response_rows_equal_the_box(rng):
    from tools.centroids import CentroidParams, _Background, _blob_response_rows

    frame = rng.integers(0, 60, (200, 160)).astype(np.uint8)
    rows = np.array([5, 6, 7, 60, 61, 150, 151, 152, 198])
    cols = np.array([30, 31, 30, 100, 101, 12, 13, 14, 150])
    params = CentroidParams()
    background = _Background(None, 0.0)
    found = _blob_response_rows(frame, background, rows, cols, params)
    box = _blob_response_near(frame.astype(np.float32), rows, cols, 1.0, 1)
    needed = np.unique(np.clip(np.concatenate([rows - 1, rows, rows + 1]), 0, 199))
    box_cols = slice(found.first_col, found.first_col + found.values.shape[1])
    np.testing.assert_array_equal(found.values[found.row_index[needed]], box[needed, box_cols])


@pytest.mark.parametrize(("shape", "spot_yx"), [((700, 1024), (697, 500)), ((8, 40), (4, 20))])
def test_a_spot_in_the_last_rows_or_a_frame_few_rows_tall(shape, spot_yx):
    # The rows around the spots are fewer than the filters' reach: detection still finds it.
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    spot = 200.0 * np.exp(-((rows - spot_yx[0]) ** 2 + (cols - spot_yx[1]) ** 2) / (2 * 1.2**2))
    found = detect_centroids(spot.astype(np.uint8))
    assert len(found) == 1
    np.testing.assert_allclose(found.xy[0], [spot_yx[1], spot_yx[0]], atol=0.05)


def test_candidates_under_a_vignetted_background_are_few_and_hold_the_foreground(rng):
    from tools.centroids import _candidates, _opening_background, _residual_in

    rows, cols = np.mgrid[0:700, 0:1024]
    ramp = 8.0 + 50.0 * cols / 1024  # dark on the left, bright on the right
    frame = ramp + rng.normal(0, 3, ramp.shape)
    for y, x in [(100, 80), (350, 512), (600, 990)]:
        frame += 150 * np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * 1.5**2))
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    background = _opening_background(frame, 32)
    threshold = 18.0
    candidates = _candidates(frame, background, threshold)
    # A bound per block: a bound over the whole frame would pass most of the bright side.
    assert candidates is not None and candidates.size < frame.size // 100
    residual = _residual_in(frame, background, (slice(None), slice(None)))
    assert set(np.flatnonzero(residual > threshold)) <= set(candidates.tolist())
