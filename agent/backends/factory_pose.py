"""Build the pose backend a run asks for: ``classical``, ``openai`` or ``hybrid``.

Build it once per run and keep it (the graph's runtime context holds it): the
parallel Stage 1-3 tasks must share one model client (its concurrency bound
and counters), one call log and one frame cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from langchain_core.messages import AIMessage

from agent.backends.classical_pose import ClassicalPoseBackend
from agent.backends.hybrid_pose import HybridPoseBackend
from agent.backends.openai_pose import OpenAIPoseBackend, load_pose_prompts
from agent.backends.pose_base import PoseBackend
from agent.backends.pose_tools import LabelSource, PoseGeometry
from agent.errors import InputError
from agent.llm import CallLog, ModelClient, ReplayedError, load_chat_model
from agent.pose_context import PoseContext, tracker_gate_px
from agent.recording import Recording
from agent.rundir import RunDir

AnswerSource = Callable[[str], AIMessage | ReplayedError | None]
MODEL_GATE_FACTOR = 1.0  # a model may pick a centroid as far from the prediction as the tracker


def make_pose_backend(ctx: PoseContext, recording: Recording, run_dir: str | Path | None, *,
                      current_labels: LabelSource | None = None,
                      answer_source: AnswerSource | None = None) -> PoseBackend:
    """The backend named by ``ctx.backend``; model calls are logged to ``<run_dir>/calls.jsonl``.

    Parameters
    ----------
    ctx : PoseContext
        The run's settings (backend, server, model, prompts, retries, concurrency, gate).
    recording : Recording
        Frames for the model's images and the rig for its geometry tools.
    run_dir : str or Path or None
        Run directory receiving the call log; None logs nothing (tests).
    current_labels : LabelSource, optional
        The graph's current labels of a frame, for the ``reprojection_error`` tool
        (e.g. a :class:`~agent.backends.pose_tools.LatestLabels` the graph publishes to).
    answer_source : callable, optional
        Replay: serves logged answers by request hash (:class:`agent.replay_log.ReplayLog`).

    Raises
    ------
    InputError
        A model backend without a server URL or model name, or a prompt missing.
    """
    gate_px = tracker_gate_px(ctx, recording)
    classical = ClassicalPoseBackend(gate_px=gate_px)
    if ctx.backend == "classical":
        return classical
    if not ctx.base_url:
        raise InputError("--base-url", f"the {ctx.backend} pose backend needs an OpenAI-compatible "
                                       "server URL, e.g. http://localhost:8000/v1")
    if not ctx.vlm_model:
        raise InputError("--model", f"the {ctx.backend} pose backend needs the served vision model's name")
    prompts = load_pose_prompts(ctx.prompts_dir)
    chat_model = load_chat_model(base_url=ctx.base_url, model=ctx.vlm_model, timeout_s=ctx.request_timeout_s,
                                 disable_thinking=ctx.disable_thinking)
    log = CallLog(None if run_dir is None else RunDir(Path(run_dir)).calls_log)
    client = ModelClient(chat_model, model_name=ctx.vlm_model, structured=ctx.structured,
                         max_retries=ctx.max_model_retries, max_concurrency=ctx.max_concurrency,
                         log=log, answer_source=answer_source, server=ctx.base_url)
    geometry = PoseGeometry(recording.group, list(recording.keypoints), current_labels)
    model = OpenAIPoseBackend(client, recording, prompts, geometry=geometry,
                              gate_px=MODEL_GATE_FACTOR * gate_px, tracker=classical)
    return model if ctx.backend == "openai" else HybridPoseBackend(classical, model)
