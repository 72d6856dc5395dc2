"""Tests for agent/pose_frames.CentroidPrefetch: detection ahead of the graph, in a thread or a child process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.pose_frames import CentroidPrefetch, FrameStore
from agent.recording import load_recording
from tests.fixtures.tiny_recording import make_tiny_recording
from tools.centroids import detect_centroids


@pytest.fixture(scope="module")
def recording_dir(tmp_path_factory) -> Path:
    return make_tiny_recording(tmp_path_factory.mktemp("prefetch") / "rec", n_frames=10,
                               stream_format="avi")


@pytest.mark.parametrize("processes", [False, True])
def test_prefetched_centroids_are_those_of_the_frame_asked_for(recording_dir, processes):
    recording = load_recording(recording_dir)
    expected = {frame: [detect_centroids(recording.fluorescence(camera).read(frame)).xy
                        for camera in recording.cameras] for frame in range(recording.n_frames)}
    prefetch = CentroidPrefetch(recording, processes=processes, read_ahead=3)
    try:
        # In order, then back to an earlier frame (a resume), then the last frame.
        for frame in [*range(4, 10), 2, 3, 9]:
            got = prefetch.get(frame)
            assert len(got) == len(recording.cameras)
            for centroids, reference in zip(got, expected[frame], strict=True):
                assert np.array_equal(centroids, reference), (processes, frame)
    finally:
        prefetch.close()
        recording.close()


@pytest.mark.parametrize("processes", [False, True])
def test_each_frame_is_saved_before_its_centroids_are_given(recording_dir, tmp_path, processes):
    recording = load_recording(recording_dir)
    store = FrameStore(tmp_path, len(recording.cameras), n_keypoints=1)
    prefetch = CentroidPrefetch(recording, processes=processes, read_ahead=3,
                                centroids_dir=store.centroids_dir)
    try:
        for frame, step in [(5, 1), (6, 1), (2, -1)]:
            got = prefetch.get(frame, step)
            for saved, given in zip(store.centroids_of(frame), got, strict=True):
                assert np.array_equal(saved, given), (processes, frame)
    finally:
        prefetch.close()
        recording.close()
    # Only the frames' files: no temporary file is left behind.
    assert all(path.name[:6].isdigit() and path.suffix == ".npz"
               for path in store.centroids_dir.iterdir())


def _write_often(path: str, value: float) -> None:
    from agent.centroid_child import save_centroids

    for _ in range(400):
        save_centroids(Path(path), [np.full((3, 2), value), np.full((1, 2), value)])


def test_two_processes_saving_one_frame_leave_a_whole_file(tmp_path):
    # The child of a killed run may still finish a job while --resume detects the same frames.
    import multiprocessing

    path = tmp_path / "000007.npz"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_often, args=(str(path), value)) for value in (1.0, 2.0)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0]
    store = FrameStore(tmp_path.parent / "store", n_cameras=2, n_keypoints=1)
    store.centroids_dir.rmdir()
    store.centroids_dir.symlink_to(tmp_path)
    xy = store.centroids_of(7)
    assert [c.shape for c in xy] == [(3, 2), (1, 2)] and len(np.unique(np.concatenate(xy))) == 1


def test_a_frame_detection_did_not_save_is_an_error_not_a_silent_gap(tmp_path):
    store = FrameStore(tmp_path, n_cameras=1, n_keypoints=1)
    with pytest.raises(RuntimeError, match="did not save frame 3"):
        store.saved_centroids(3, [np.zeros((0, 2))])


@pytest.mark.parametrize("processes", [False, True])
def test_backward_prefetch_detects_blocks_and_gives_each_frame_its_centroids(
        recording_dir, processes, monkeypatch):
    import agent.pose_frames as frames_module

    monkeypatch.setattr(frames_module, "BACKWARD_BLOCK_FRAMES", 4)
    recording = load_recording(recording_dir)
    expected = {frame: [detect_centroids(recording.fluorescence(camera).read(frame)).xy
                        for camera in recording.cameras] for frame in range(recording.n_frames)}
    prefetch = CentroidPrefetch(recording, processes=processes, read_ahead=3)
    try:
        # Forward, then backward from the middle to frame 0 (blocks of 4 read in order).
        for frame, step in [(5, 1), (6, 1), *[(t, -1) for t in range(4, -1, -1)], (9, -1)]:
            got = prefetch.get(frame, step)
            for centroids, reference in zip(got, expected[frame], strict=True):
                assert np.array_equal(centroids, reference), (processes, frame)
    finally:
        prefetch.close()
        recording.close()


def test_a_long_run_uses_a_child_process_and_gives_the_same_results(recording_dir, tmp_path,
                                                                      monkeypatch):
    import agent.pose_pipeline as pipeline
    from agent.pose_context import PoseContext

    outputs = {}
    for name, threshold in (("thread", 10**6), ("process", 1)):
        monkeypatch.setattr(pipeline, "PROCESS_PREFETCH_FRAMES", threshold)
        pipeline.run_pose(recording_dir, tmp_path / name, PoseContext(), quiet=True)
        outputs[name] = [(tmp_path / name / f).read_bytes()
                         for f in ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv")]
    assert outputs["thread"] == outputs["process"]


@pytest.mark.parametrize("processes", [False, True])
def test_a_frame_that_cannot_be_read_is_the_same_clear_error_in_a_thread_or_the_child(
        tmp_path, processes):
    from agent.errors import InputError

    root = make_tiny_recording(tmp_path / "rec", n_frames=8, stream_format="png")
    recording = load_recording(root)
    broken = sorted(recording.stream_path(recording.cameras[0], "fluorescence").iterdir())[3]
    broken.write_bytes(b"not an image")
    prefetch = CentroidPrefetch(recording, processes=processes, read_ahead=2)
    try:
        assert len(prefetch.get(0)) == len(recording.cameras)
        with pytest.raises(InputError, match="000003|cannot"):
            for frame in range(1, 8):
                prefetch.get(frame)
    finally:
        prefetch.close()
        recording.close()


def test_a_stream_the_child_cannot_open_is_a_clear_error(tmp_path, monkeypatch):
    from agent.errors import InputError

    root = make_tiny_recording(tmp_path / "rec", n_frames=8, stream_format="avi")
    recording = load_recording(root)
    stream = recording.stream_path(recording.cameras[1], "fluorescence")
    stream.write_bytes(b"")  # emptied after the recording was loaded
    prefetch = CentroidPrefetch(recording, processes=True, read_ahead=2)
    try:
        with pytest.raises(InputError, match=stream.name):
            prefetch.get(0)
    finally:
        prefetch.close()
        recording.close()


def test_the_child_does_not_run_an_unguarded_callers_script_again(recording_dir, tmp_path):
    import subprocess
    import sys
    import textwrap

    marker = tmp_path / "top_level_runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        with open({str(marker)!r}, "a") as marker:
            marker.write("ran\\n")
        from agent.pose_frames import CentroidPrefetch
        from agent.recording import load_recording
        recording = load_recording({str(recording_dir)!r})
        prefetch = CentroidPrefetch(recording, processes=True)
        print(len(prefetch.get(0)))
        prefetch.close()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(load_recording(recording_dir).cameras))]
    assert marker.read_text().splitlines() == ["ran"]  # the child did not import the script


def test_the_child_ends_when_its_parent_is_killed(recording_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from agent.pose_frames import CentroidPrefetch
        from agent.recording import load_recording
        prefetch = CentroidPrefetch(load_recording({str(recording_dir)!r}), processes=True)
        prefetch.get(0)  # the child is up and has frames 1-4 in hand
        print(prefetch._pool._process.pid, flush=True)
        time.sleep(120)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), f"the detection child {child} outlived its killed parent"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting for a reaper."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state
