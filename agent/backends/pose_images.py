"""The images the model pose backend sends, cut from the recording's streams.

Every request about one camera and frame looks at the *animal's view*: the
frame cropped to the box of everything known about the animal there (the
rolling window's labels and the prediction), grown by a quarter of its size
on each side (at least 32 px) and snapped to a 32-px grid. A model answers in
the pixels of the images it sees, so each image comes with the box it was cut
from and the backend converts answers back to full-image pixels (FORMATS.md). Keeping the view cropped
keeps images small (cheap to encode, fewer image tokens) and keeps the
mouse large in them.

* Stage 1: the reflectance view of each exemplar frame with every region's
  box drawn in its own named colour, then the target frame's view. The same
  images serve every region of the camera, so a server with prefix caching
  (vLLM) encodes them once; only the closing text names the region asked for.
* Stage 2: crops of the *composite* frame (reflectance in grey, fluorescence
  in magenta, so quantum dots show on the animal) around the region in each
  exemplar, its labelled dots marked with their keypoint names, then the
  target crop with its centroids numbered.
* Stage 3: the composite view of the target frame with every free centroid
  numbered, proposed labels written beside their centroids.

Decoded frames are kept in a small thread-safe LRU cache (:class:`FrameCache`):
the regions and stages of one frame, and the next frames' exemplars, reuse them.
The cache reads through streams of its own, one frame ahead in a background
thread (frame ``t + 1`` is decoded while frame ``t``'s requests are in
flight), and keeps the drawn images that do not depend on the target frame's
answers (exemplar images, the Stage 1 target view), so that an exemplar
frame, reused by the next three target frames, is drawn and encoded once.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from agent.backends.pose_base import AssignWithinRegionRequest, CameraView, Centroid, centroid_xy
from agent.recording import Recording
from agent.streams import FrameStream, open_stream
from tools.overlays import draw_numbered_spots, draw_region_boxes
from tools.regions import Box, box_of_points, pad_box

# Region boxes take these colours (BGR) in the order of the recording's regions.
NAMED_COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("orange", (0, 165, 255)), ("blue", (255, 128, 0)), ("green", (0, 200, 0)),
    ("magenta", (255, 0, 255)), ("yellow", (0, 255, 255)), ("cyan", (255, 255, 0)),
    ("red", (60, 60, 255)), ("white", (255, 255, 255)),
)
VIEW_MARGIN_FRACTION = 0.25
VIEW_MARGIN_MIN_PX = 32
# The view's edges snap outward to this grid, so consecutive frames mostly share one view
# and the exemplar images drawn for one frame are reused for the next ones.
VIEW_GRID_PX = 32
# Drawn images kept: about three frames' worth (an exemplar serves three target frames).
IMAGES_CACHED = 512
FRAMES_CACHED_PER_STREAM = 6  # the target, three exemplars and some slack


class FrameCache:
    """Recently decoded frames of a recording, keyed by (camera, kind, frame), and drawn images; thread-safe.

    Frames are read through streams opened here, not the recording's: the
    pipeline's centroid detection reads the fluorescence streams one frame
    ahead, and sharing a capture with it would make every read here a
    backward seek (a decode from the last keyframe). Reading frame ``t`` of a
    stream starts decoding ``t + 1`` and ``t - 1`` (tracking backward) in the
    background, unless they are cached. Call :meth:`close`
    when done (the captures are released on garbage collection otherwise).
    """

    def __init__(self, recording: Recording, frames_per_stream: int = FRAMES_CACHED_PER_STREAM) -> None:
        self.recording = recording
        self.capacity = frames_per_stream * 2 * len(recording.cameras)
        self._frames: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
        self._decoding: dict[tuple[str, str, int], Future[np.ndarray]] = {}
        self._pictures: OrderedDict[tuple, bytes] = OrderedDict()
        self._streams: dict[tuple[str, str], FrameStream] = {}
        self._lock = threading.Lock()
        self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames-ahead")
        self.n_decoded = 0

    def picture(self, key: tuple, draw: Callable[[], bytes]) -> bytes:
        """The PNG ``draw()`` makes, cached under ``key`` (which must say everything it depends on)."""
        with self._lock:
            if key in self._pictures:
                self._pictures.move_to_end(key)
                return self._pictures[key]
        png = draw()
        with self._lock:
            self._pictures[key] = png
            while len(self._pictures) > IMAGES_CACHED:
                self._pictures.popitem(last=False)
        return png

    def read(self, camera: str, kind: str, frame: int) -> np.ndarray:
        """Frame ``(H, W)`` uint8 of the ``kind`` stream (``reflectance``/``fluorescence``)."""
        image = self._decoded((camera, kind, frame))
        # The next target is t + 1 forward and t - 1 backward; the other neighbour, the
        # previous target, is cached already and costs nothing.
        self._read_ahead((camera, kind, frame + 1))
        self._read_ahead((camera, kind, frame - 1))
        return image

    def _decoded(self, key: tuple[str, str, int]) -> np.ndarray:
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
            pending = self._decoding.get(key)
            if pending is None:
                pending = self._decoding[key] = Future()
                pending.set_running_or_notify_cancel()
                owner = True
            else:
                owner = False
        if owner:
            self._decode_into(key, pending)
        return pending.result()

    def _decode_into(self, key: tuple[str, str, int], pending: Future[np.ndarray]) -> None:
        """Decode ``key`` and settle ``pending`` (its waiters get the frame or the error)."""
        try:
            image = _as_uint8(self._stream(*key[:2]).read(key[2]))
        except BaseException as exc:
            with self._lock:
                del self._decoding[key]
            pending.set_exception(exc)
            return
        with self._lock:
            self.n_decoded += 1
            del self._decoding[key]
            self._frames[key] = image
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)
        pending.set_result(image)

    def _read_ahead(self, key: tuple[str, str, int]) -> None:
        """Decode ``key`` in the background unless it is cached, being decoded or outside the stream."""
        if not 0 <= key[2] < self.recording.n_frames:
            return
        with self._lock:
            if key in self._frames or key in self._decoding:
                return
            pending = self._decoding[key] = Future()
            pending.set_running_or_notify_cancel()
        # A failure stays in the future and is dropped with it; a later read decodes again and raises.
        self._ahead.submit(self._decode_into, key, pending)

    def _stream(self, camera: str, kind: str) -> FrameStream:
        with self._lock:
            stream = self._streams.get((camera, kind))
        if stream is None:
            opened = open_stream(self.recording.stream_path(camera, kind))
            with self._lock:
                stream = self._streams.setdefault((camera, kind), opened)
            if stream is not opened:
                opened.close()
        return stream

    def close(self) -> None:
        """Stop reading ahead and release the streams (idempotent)."""
        self._ahead.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for stream in self._streams.values():
                stream.close()
            self._streams.clear()

    def composite(self, camera: str, frame: int, box: Box) -> np.ndarray:
        """BGR crop ``(box.height, box.width, 3)``: reflectance in grey, fluorescence added in magenta."""
        reflectance = _crop(self.read(camera, "reflectance", frame), box)
        dots = np.maximum(reflectance, _crop(self.read(camera, "fluorescence", frame), box))
        return np.stack([dots, reflectance, dots], axis=2)


def animal_view(view: CameraView) -> Box:
    """The crop every image of ``view`` is cut from: known points, grown and snapped to a grid.

    The whole frame when nothing about the animal is known.
    """
    width, height = view.image_size
    points = [p for e in view.exemplars for p in e.points if p is not None]
    points += [p for p in view.prior if p is not None]
    tight = box_of_points(np.array(points, dtype=np.float64).reshape(-1, 2))
    if tight is None:
        return Box(0, 0, width, height)
    margin_x = max(VIEW_MARGIN_MIN_PX, VIEW_MARGIN_FRACTION * tight.width)
    margin_y = max(VIEW_MARGIN_MIN_PX, VIEW_MARGIN_FRACTION * tight.height)
    grid = VIEW_GRID_PX
    x0 = max(0, math.floor((tight.x0 - margin_x) / grid) * grid)
    y0 = max(0, math.floor((tight.y0 - margin_y) / grid) * grid)
    x1 = min(width, math.ceil((tight.x1 + margin_x) / grid) * grid)
    y1 = min(height, math.ceil((tight.y1 + margin_y) / grid) * grid)
    if x0 >= x1 or y0 >= y1:  # the animal is outside the image
        return Box(0, 0, width, height)
    return Box(x0, y0, x1, y1)


def region_box(points: Sequence[tuple[float, float] | None], image_size: tuple[int, int]) -> Box | None:
    """The method's padded crop around the known ``points``; None if none is known."""
    tight = box_of_points(np.array([p for p in points if p is not None], dtype=np.float64).reshape(-1, 2))
    return None if tight is None else pad_box(tight, image_size)


def exemplar_boxes(view: CameraView, regions: dict[str, list[str]]) -> list[dict[str, Box]]:
    """Per exemplar (oldest first): region -> padded box of its labelled keypoints."""
    boxes = []
    for exemplar in view.exemplars:
        by_name = dict(zip(view.keypoints, exemplar.points, strict=True))
        found = {region: region_box([by_name[k] for k in members], view.image_size)
                 for region, members in regions.items()}
        boxes.append({region: box for region, box in found.items() if box is not None})
    return boxes


def region_colors(regions: Sequence[str]) -> dict[str, tuple[str, tuple[int, int, int]]]:
    """Region -> (colour name, BGR), in the order given."""
    return {region: NAMED_COLORS[i % len(NAMED_COLORS)] for i, region in enumerate(regions)}


def shift_box(box: Box, view_box: Box) -> Box:
    """``box`` in the pixels of the crop ``view_box`` (may reach outside it)."""
    return Box(box.x0 - view_box.x0, box.y0 - view_box.y0, box.x1 - view_box.x0, box.y1 - view_box.y0)


def locate_images(cache: FrameCache, view: CameraView, view_box: Box,
                  boxes: list[dict[str, Box]], colors: dict[str, tuple[str, tuple[int, int, int]]]
                  ) -> list[bytes]:
    """Stage 1: each exemplar's view with its region boxes, then the target frame's view (PNGs)."""
    images = []
    for exemplar, exemplar_boxes_ in zip(view.exemplars, boxes, strict=True):
        shifted = {region: shift_box(box, view_box) for region, box in exemplar_boxes_.items()}
        palette = {r: colors[r][1] for r in shifted}

        def draw(frame: int = exemplar.frame, shifted: dict = shifted, palette: dict = palette) -> bytes:
            return draw_region_boxes(_crop(cache.read(view.camera, "reflectance", frame), view_box),
                                     shifted, palette)

        key = ("locate", view.camera, exemplar.frame, view_box, tuple(shifted.items()), tuple(palette.items()))
        images.append(cache.picture(key, draw))
    # Kept too: a quality-control retry of the camera usually asks about the same view.
    images.append(cache.picture(("locate", view.camera, view.frame, view_box), lambda: draw_region_boxes(
        _crop(cache.read(view.camera, "reflectance", view.frame), view_box), {})))
    return images


def assign_images(cache: FrameCache, request: AssignWithinRegionRequest, box: Box,
                  shown: list[Centroid]) -> tuple[list[bytes], list[dict[str, int]]]:
    """Stage 2: exemplar crops with named dots, then the target crop of ``box`` with ``shown`` numbered.

    Returns the PNGs and, per exemplar shown, keypoint -> the number beside its dot.
    """
    images, numbering = [], []
    for exemplar in request.exemplars:
        labelled = [(k, p) for k, p in zip(request.keypoints, exemplar.points, strict=True) if p is not None]
        crop_box = region_box([p for _, p in labelled], request.image_size)
        if crop_box is None:
            continue
        numbers = list(range(1, len(labelled) + 1))

        def draw(frame: int = exemplar.frame, crop_box: Box = crop_box, labelled: list = labelled,
                 numbers: list[int] = numbers) -> bytes:
            return draw_numbered_spots(cache.composite(request.camera, frame, crop_box),
                                       crop_box.to_crop(np.array([p for _, p in labelled])), numbers,
                                       labels=[k for k, _ in labelled])

        # The same exemplar labels come back for the next target frames and retries: drawn once.
        images.append(cache.picture(("assign", request.camera, exemplar.frame, crop_box, tuple(labelled)), draw))
        numbering.append({k: n for (k, _), n in zip(labelled, numbers, strict=True)})
    images.append(draw_numbered_spots(cache.composite(request.camera, request.frame, box),
                                      box.to_crop(centroid_xy(shown)), [c.index for c in shown]))
    return images, numbering


def reconcile_image(cache: FrameCache, view: CameraView, view_box: Box, centroids: list[Centroid],
                    proposed: dict[int, str]) -> bytes:
    """Stage 3: the target's composite view, every centroid numbered, proposed labels beside theirs."""
    return draw_numbered_spots(cache.composite(view.camera, view.frame, view_box),
                               view_box.to_crop(centroid_xy(centroids)), [c.index for c in centroids],
                               labels=[proposed.get(c.index, "") for c in centroids])


def _crop(image: np.ndarray, box: Box) -> np.ndarray:
    return image[box.y0:box.y1, box.x0:box.x1]


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """A uint8 copy of a uint8/uint16 frame (16-bit frames scaled so their maximum is 255)."""
    if image.dtype == np.uint8:
        return image
    peak = max(float(image.max()), 1.0)
    return np.clip(np.rint(image.astype(np.float64) * (255.0 / peak)), 0, 255).astype(np.uint8)
