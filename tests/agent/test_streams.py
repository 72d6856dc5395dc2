"""Tests for agent/streams.py: random access to video files and image folders."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import InputError
from agent.streams import ImageFolderStream, VideoStream, open_stream, resolve_stream
from tests.fixtures.tiny_recording import write_stream

N_FRAMES = 12
LEVEL_STEP = 20  # frame t is filled with 20 t (+ a pattern), far apart even after lossy coding


def _frames(n_frames: int = N_FRAMES, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """``(n_frames, H, W)`` uint8: frame ``t`` at level ``20 t`` with a small bright square."""
    frames = np.repeat(
        (LEVEL_STEP * np.arange(n_frames, dtype=np.uint8))[:, None, None], size[1], 1
    )
    frames = np.repeat(frames, size[0], 2)
    frames[:, 10:18, 20:28] = 250
    return frames


def _frame_index(frame: np.ndarray) -> int:
    return int(round(float(np.median(frame)) / LEVEL_STEP))


@pytest.fixture(params=["png", "avi", "mp4"])
def stream_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return write_stream(tmp_path / "cam0-reflectance", _frames(), request.param)


def test_random_access_returns_the_requested_frame(
    stream_path: Path, rng: np.random.Generator
) -> None:
    order = np.concatenate([rng.permutation(N_FRAMES), [0, 1, 2, 5, 4, 11, 3]])
    with open_stream(stream_path) as stream:
        assert stream.n_frames == N_FRAMES
        assert stream.size == (64, 48)
        for t in order:
            frame = stream.read(t)
            assert frame.shape == (48, 64) and frame.dtype == np.uint8
            assert _frame_index(frame) == t


def test_random_reads_equal_sequential_reads(stream_path: Path, rng: np.random.Generator) -> None:
    with open_stream(stream_path) as stream:
        sequential = [stream.read(t) for t in range(N_FRAMES)]
        for t in rng.permutation(N_FRAMES):
            np.testing.assert_array_equal(stream.read(t), sequential[t])


def test_open_without_suffix_finds_the_video(tmp_path: Path) -> None:
    path = write_stream(tmp_path / "cam0-fluorescence", _frames(), "avi")
    with open_stream(tmp_path / "cam0-fluorescence") as stream:
        assert isinstance(stream, VideoStream) and stream.path == path


def test_colour_video_becomes_gray(tmp_path: Path) -> None:
    path = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (32, 24))
    for level in (0, 100, 200):
        writer.write(np.full((24, 32, 3), level, np.uint8))
    writer.release()
    with open_stream(path) as stream:
        frame = stream.read(2)
    assert frame.ndim == 2 and abs(float(frame.mean()) - 200) < 3


def test_image_folder_is_ordered_by_file_name_and_keeps_16_bit(tmp_path: Path) -> None:
    folder = tmp_path / "cam0-fluorescence"
    folder.mkdir()
    names = ["b_001.tif", "a_002.tif", "c_000.tif"]
    for value, name in zip((1000, 60000, 5), names, strict=True):
        cv2.imwrite(str(folder / name), np.full((8, 10), value, np.uint16))
    (folder / "notes.txt").write_text("not a frame")
    with open_stream(folder) as stream:
        assert isinstance(stream, ImageFolderStream)
        assert stream.n_frames == 3 and stream.size == (10, 8)
        frames = [stream.read(t) for t in range(3)]
    assert all(frame.dtype == np.uint16 for frame in frames)
    assert [int(frame[0, 0]) for frame in frames] == [60000, 1000, 5]


def test_numbers_in_image_names_are_ordered_as_numbers(tmp_path: Path) -> None:
    # Unpadded names (frame_2 before frame_10, as a person reads them); hidden files are skipped.
    folder = tmp_path / "cam0-fluorescence"
    folder.mkdir()
    for number in (1, 2, 10, 11):
        cv2.imwrite(str(folder / f"frame_{number}.png"), np.full((4, 4), number, np.uint8))
    cv2.imwrite(str(folder / "._frame_3.png"), np.full((4, 4), 99, np.uint8))
    with open_stream(folder) as stream:
        assert [int(stream.read(t)[0, 0]) for t in range(stream.n_frames)] == [1, 2, 10, 11]


def test_colour_images_become_gray(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.full((6, 7, 3), 90, np.uint8))
    with open_stream(folder) as stream:
        frame = stream.read(0)
    assert frame.shape == (6, 7) and int(frame[0, 0]) == 90


def test_frame_index_out_of_range_raises(stream_path: Path) -> None:
    with open_stream(stream_path) as stream, pytest.raises(IndexError):
        stream.read(N_FRAMES)


def test_resolve_stream_finds_file_or_folder(tmp_path: Path) -> None:
    video = write_stream(tmp_path / "cam0-reflectance", _frames(3), "mp4")
    folder = write_stream(tmp_path / "cam0-fluorescence", _frames(3), "png")
    assert resolve_stream(tmp_path, "cam0", "reflectance") == video
    assert resolve_stream(tmp_path, "cam0", "fluorescence") == folder


def test_video_suffixes_are_found_in_any_case(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = rng.integers(0, 255, (3, 16, 24), dtype=np.uint8)
    write_stream(tmp_path / "cam0-fluorescence", frames, "avi").rename(
        tmp_path / "cam0-fluorescence.AVI")
    assert resolve_stream(tmp_path, "cam0", "fluorescence") == tmp_path / "cam0-fluorescence.AVI"
    with open_stream(tmp_path / "cam0-fluorescence") as stream:
        assert stream.n_frames == 3


def test_resolve_stream_refuses_ambiguous_names(tmp_path: Path) -> None:
    write_stream(tmp_path / "cam0-reflectance", _frames(3), "mp4")
    write_stream(tmp_path / "cam0-reflectance", _frames(3), "avi")
    with pytest.raises(InputError, match="ambiguous"):
        resolve_stream(tmp_path, "cam0", "reflectance")


def test_missing_stream_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="stream not found") as info:
        resolve_stream(tmp_path, "cam3", "fluorescence")
    assert "cam3-fluorescence" in str(info.value.path)
    with pytest.raises(InputError, match="stream not found"):
        open_stream(tmp_path / "cam3-fluorescence")


def test_unreadable_video_raises(tmp_path: Path) -> None:
    path = tmp_path / "cam0-reflectance.mp4"
    path.write_bytes(b"this is not a video" * 50)
    with pytest.raises(InputError, match="cannot open video") as info:
        open_stream(path)
    assert info.value.path == str(path)


def test_truncated_video_raises_on_open(tmp_path: Path) -> None:
    path = write_stream(tmp_path / "cam0-reflectance", _frames(40), "avi")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated video: declares 40 frames") as info:
        open_stream(path)
    assert info.value.path == str(path)


def test_empty_image_folder_raises(tmp_path: Path) -> None:
    (tmp_path / "cam0-reflectance").mkdir()
    with pytest.raises(InputError, match="no .png"):
        open_stream(tmp_path / "cam0-reflectance")


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    folder = write_stream(tmp_path / "cam0-reflectance", _frames(3), "png")
    broken = sorted(folder.iterdir())[1]
    broken.write_bytes(b"not a png")
    with open_stream(folder) as stream:
        stream.read(0)
        with pytest.raises(InputError, match="cannot read image") as info:
            stream.read(1)
    assert info.value.path == str(broken)


def test_image_of_another_size_raises(tmp_path: Path) -> None:
    folder = write_stream(tmp_path / "cam0-reflectance", _frames(2), "png")
    cv2.imwrite(str(folder / "000001.png"), np.zeros((5, 5), np.uint8))
    with open_stream(folder) as stream, pytest.raises(InputError, match="frame 1 has size 5x5"):
        stream.read(1)


def test_threads_may_share_a_stream(tmp_path: Path, rng: np.random.Generator) -> None:
    path = write_stream(tmp_path / "cam0-reflectance", _frames(), "avi")
    order = rng.permutation(np.tile(np.arange(N_FRAMES), 3))
    with open_stream(path) as stream, ThreadPoolExecutor(max_workers=4) as pool:
        indices = list(pool.map(lambda t: _frame_index(stream.read(t)), order))
    assert indices == order.tolist()


def test_seeks_in_a_real_h264_video_land_on_the_right_frame(shared_data: Path) -> None:
    path = shared_data / "openfield-single-mouse" / "video.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with open_stream(path) as stream:
        assert stream.n_frames == 2330 and stream.size == (640, 480)
        start = 1190  # not a keyframe boundary in general: the seek must decode forward
        sequential = [stream.read(t) for t in range(start, start + 12)]
        for offset in (7, 0, 11, 3, 10):
            np.testing.assert_array_equal(stream.read(start + offset), sequential[offset])
