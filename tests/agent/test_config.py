"""Tests of agent.config: where settings come from, and what a resumed run continues with."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import given_settings, resolve_context, resumed_context
from agent.errors import InputError
from agent.pose_context import PoseContext

FLAGS = {"max_frames": "--max-frames", "max_concurrency": "--max-concurrency"}


def test_given_settings_are_those_of_the_command_line_and_the_environment():
    cli = {"max_frames": 20, "max_concurrency": None}
    environ = {"BVLM_MAX_RETRIES": "1"}
    ctx = resolve_context(PoseContext, cli, environ)
    given = given_settings(ctx, cli, FLAGS, environ)
    assert given == {"max_frames": ("--max-frames", 20), "max_retries": ("BVLM_MAX_RETRIES", 1)}


def test_a_resumed_run_keeps_its_settings_and_takes_only_runtime_ones():
    stored = {"max_frames": 5, "max_retries": 1, "max_concurrency": 8, "from_a_newer_version": 1}
    ctx = resumed_context(PoseContext, stored, {"max_concurrency": ("--max-concurrency", 2),
                                                "max_frames": ("--max-frames", 5)}, Path("out"))
    assert (ctx.max_frames, ctx.max_retries, ctx.max_concurrency) == (5, 1, 2)


@pytest.mark.parametrize(("given", "shown"), [
    ({"max_frames": ("--max-frames", 20)}, "--max-frames 20: this run started with max_frames = 5"),
    ({"max_retries": ("BVLM_MAX_RETRIES", 2)}, "BVLM_MAX_RETRIES 2: this run started with max_retries = 1"),
])
def test_a_resume_that_would_change_the_results_is_refused(given, shown):
    with pytest.raises(InputError) as error:
        resumed_context(PoseContext, {"max_frames": 5, "max_retries": 1}, given, Path("out"))
    assert str(error.value).startswith(f"out: {shown}")
    assert "--overwrite" in str(error.value)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("BVLM_MAX_BODY_DEVIATION", "nan", "must be a number, got nan"),
    ("BVLM_SEED", "-1", "must be 0..4294967295"),
    ("BVLM_SEED", str(2**64), "must be 0..4294967295"),
    ("BVLM_REVIEW_MIN_CAMERAS", "-4", "must be at least 2"),
    ("BVLM_MAX_ERROR_PX", "0", "must be more than 0"),
    ("BVLM_PROMPTS_DIR", "/no/such/folder", "prompts folder not found"),
])
def test_a_setting_no_run_can_use_is_refused(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(InputError, match=message):
        resolve_context(PoseContext, {})

