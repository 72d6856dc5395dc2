"""Build the behavior backend a run asks for: ``classical``, ``openai`` or ``hybrid``.

``hybrid`` for behavior means classical labels and merging with model-written
descriptions (:class:`~agent.backends.openai_behavior.OpenAIBehaviorBackend`
with ``mode="hybrid"``): the labels stay the measured, reproducible ones and
a model that answers fluent nonsense cannot make them worse; clips whose
model label disagrees are flagged for review.

A model backend is built once per (context, run directory) and then reused:
the graph's parallel caption tasks must share one client (its concurrency
bound), one call log (its lock and sequence numbers) and the features the
merge tool serves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage

from agent.backends.behavior_base import BehaviorBackend
from agent.backends.classical_behavior import ClassicalBehaviorBackend
from agent.backends.openai_behavior import OpenAIBehaviorBackend
from agent.errors import InputError
from agent.llm import CallLog, ModelClient, ReplayedError, load_chat_model
from agent.prompts import load_prompt
from agent.rundir import RunDir

if TYPE_CHECKING:  # the context module imports torch (DEC settings); the factory only reads fields
    from agent.behavior_context import BehaviorContext

AnswerSource = Callable[[str], AIMessage | ReplayedError | None]

_BUILT: dict[tuple[BehaviorContext, str], OpenAIBehaviorBackend] = {}
_BUILT_LOCK = threading.Lock()


def make_behavior_backend(
    ctx: BehaviorContext, run_dir: str | Path | None, *, answer_source: AnswerSource | None = None
) -> BehaviorBackend:
    """The backend named by ``ctx.backend``; model calls are logged to ``<run_dir>/calls.jsonl``.

    Parameters
    ----------
    ctx : BehaviorContext
        The run's settings (backend, server, models, prompts, retries, concurrency).
    run_dir : str or Path or None
        Run directory receiving the call log; None logs nothing (tests).
    answer_source : callable, optional
        Replay: serves logged answers by request hash (:class:`agent.replay_log.ReplayLog`).
        Given, the backend is built anew and replaces the one kept for ``(ctx, run_dir)``,
        so that the graph's nodes, which ask without it, get this one.

    Raises
    ------
    InputError
        A model backend without a server URL or model name, or a prompt missing.
    """
    if ctx.backend == "classical":
        return ClassicalBehaviorBackend(min_segment_s=ctx.min_segment_s)
    key = (ctx, "" if run_dir is None else str(Path(run_dir).resolve()))
    with _BUILT_LOCK:
        backend = _BUILT.get(key)
        if backend is None or answer_source is not None:  # a replay always gets its own answers
            backend = _build_model_backend(ctx, run_dir, answer_source)
            _BUILT[key] = backend
    return backend


def _build_model_backend(
    ctx: BehaviorContext, run_dir: str | Path | None, answer_source: AnswerSource | None
) -> OpenAIBehaviorBackend:
    if not ctx.base_url:
        raise InputError("--base-url", f"the {ctx.backend} behavior backend needs an OpenAI-compatible "
                                       "server URL, e.g. http://localhost:8000/v1")
    if not ctx.vlm_model:
        raise InputError("--model", f"the {ctx.backend} behavior backend needs the served vision model's name")
    base_url, vlm_model = ctx.base_url, ctx.vlm_model
    caption_prompt = load_prompt("behavior/caption_clips", ctx.prompts_dir)
    merge_prompt = load_prompt("behavior/merge_segments", ctx.prompts_dir)
    log = CallLog(None if run_dir is None else RunDir(Path(run_dir)).calls_log)

    def client(model_name: str) -> ModelClient:
        chat_model = load_chat_model(base_url=base_url, model=model_name, timeout_s=ctx.request_timeout_s,
                                     disable_thinking=ctx.disable_thinking)
        return ModelClient(chat_model, model_name=model_name, structured=ctx.structured,
                           max_retries=ctx.max_model_retries, max_concurrency=ctx.max_concurrency, log=log,
                           answer_source=answer_source, server=base_url)

    vlm = client(vlm_model)
    merge_model = ctx.llm_model or vlm_model
    merge_llm = vlm if merge_model == vlm_model else client(merge_model)
    return OpenAIBehaviorBackend(
        vlm, merge_llm, caption_prompt, merge_prompt,
        mode="hybrid" if ctx.backend == "hybrid" else "openai",
        max_concurrency=ctx.max_concurrency, min_segment_s=ctx.min_segment_s,
    )
