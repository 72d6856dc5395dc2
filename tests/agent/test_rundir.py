"""Tests of agent.rundir: what a run directory accepts before anything is written or emptied."""

from __future__ import annotations

import os

import pytest

from agent.errors import InputError
from agent.rundir import input_fingerprint, prepare_run_dir


def test_the_input_fingerprint_changes_with_the_files_but_not_with_a_run_inside(tmp_path):
    recording = tmp_path / "rec"
    (recording / "videos").mkdir(parents=True)
    (recording / "seeds.csv").write_text("frame,camera,keypoint,x,y\n")
    (recording / "videos" / "cam0.mp4").write_bytes(b"0" * 10)
    out = recording / "results"
    before = input_fingerprint(recording, out)
    out.mkdir()
    (out / "qc.csv").write_text("frame\n")
    assert input_fingerprint(recording, out) == before
    (recording / "seeds.csv").write_text("frame,camera,keypoint,x,y\n0,cam0,ear_L,1,2\n")
    assert input_fingerprint(recording, out) != before


def test_a_resume_refuses_an_input_edited_since_the_run_started(tmp_path):
    recording = tmp_path / "rec"
    recording.mkdir()
    (recording / "seeds.csv").write_text("a\n")
    out = tmp_path / "out"
    meta = {"recording": str(recording), "context": {},
            "input_fingerprint": input_fingerprint(recording, out)}
    prepare_run_dir(out, "pose", meta, resume=False, overwrite=False, input_key="recording")
    again = {**meta, "input_fingerprint": input_fingerprint(recording, out)}
    assert prepare_run_dir(out, "pose", again, resume=True, overwrite=False, input_key="recording")
    (recording / "seeds.csv").write_text("a\nb\n")
    os.utime(recording / "seeds.csv", ns=(1, 1))
    edited = {**meta, "input_fingerprint": input_fingerprint(recording, out)}
    with pytest.raises(InputError, match="changed since the run started"):
        prepare_run_dir(out, "pose", edited, resume=True, overwrite=False, input_key="recording")


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a run of this tool"):
        prepare_run_dir(folder, "pose", {}, resume=False, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("content", ["[1, 2]", '{"kind": "pose"}', '{"kind": "pose", "context": 3}'])
def test_run_metadata_that_is_not_ours_is_one_error(tmp_path, content):
    from agent.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.meta_file.parent.mkdir(parents=True)
    run.meta_file.write_text(content)
    with pytest.raises(InputError, match="corrupt run metadata"):
        run.read_meta()


def test_another_run_kept_in_the_input_does_not_change_its_fingerprint(tmp_path):
    recording = tmp_path / "rec"
    recording.mkdir()
    (recording / "seeds.csv").write_text("a\n")
    before = input_fingerprint(recording, recording / "r1")
    other = prepare_run_dir(recording / "r2", "pose", {"recording": str(recording)}, resume=False,
                            overwrite=False)
    (other.path / "qc.csv").write_text("frame\n")
    assert input_fingerprint(recording, recording / "r1") == before


def test_an_output_that_cannot_be_created_is_one_input_error(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="cannot create the output directory"):
        prepare_run_dir(tmp_path / "a-file" / "sub", "pose", {}, resume=False, overwrite=False)


def test_a_folder_of_other_files_is_named_as_such(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a run of this tool"):
        prepare_run_dir(tmp_path, "pose", {}, resume=False, overwrite=False)

