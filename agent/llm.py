"""One client for every model call: structured answers, bounded retries, a call log.

Everything a pipeline asks a model goes through :class:`ModelClient`:

* structured answers requested with ``response_format`` json_schema (what vLLM
  enforces) or, with ``structured="function_calling"``, a forced tool call
  (llama.cpp's server rejects json_schema); the answer is validated with the
  pydantic model and then by a caller-supplied check of what is *possible*
  (a centroid that exists, a box inside the image, ...);
* retries live here and only here: transport errors (timeouts, connection
  errors, HTTP 429 and 5xx) and invalid answers are retried up to
  ``max_retries`` times (an invalid answer is retried with the problem stated);
  after that the item comes back ``flagged`` with its reason, never raised and
  never silently accepted. The openai client's own retries are off
  (``max_retries=0``) so that the bound is ours;
* every request and answer is appended to ``calls.jsonl`` in the run
  directory (prompt file and hash, image digests, token counts, latency,
  request hash), which is also what :mod:`replay <agent.replay_log>` serves
  answers from, keyed by the request hash.

The API key comes from ``OPENAI_API_KEY`` (as the openai client does) and is
never logged.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from agent.errors import InputError
from agent.prompts import Prompt

AnswerT = TypeVar("AnswerT", bound=BaseModel)
# Calls in a row a server that never answered may leave unanswered before the run stops.
UNREACHABLE_CALLS = 3
Validator = Callable[[Any], "str | None"]

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
    httpx.TimeoutException,
    httpx.TransportError,
    openai.APIResponseValidationError,
    json.JSONDecodeError,  # a malformed HTTP body, not a malformed answer
)


class ReplayedError(Exception):
    """An error that the call log says the original run met; replayed as such."""

    def __init__(self, reason: str, transport: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transport = transport


def load_chat_model(
    *, base_url: str, model: str, timeout_s: float, disable_thinking: bool = True
) -> BaseChatModel:
    """The only place a ``ChatOpenAI`` is built (vLLM, Ollama, llama.cpp server, OpenAI)."""
    from langchain_openai import ChatOpenAI

    extra_body = {"chat_template_kwargs": {"enable_thinking": False}} if disable_thinking else None
    return ChatOpenAI(
        base_url=base_url,
        model=model,
        api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
        temperature=0,
        use_responses_api=False,
        max_retries=0,
        timeout=timeout_s,
        extra_body=extra_body,
    )


def image_block(png: bytes) -> dict[str, Any]:
    """An OpenAI ``image_url`` content block holding PNG bytes as a data URL."""
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}


def user_message(text: str, images: Sequence[bytes] = ()) -> HumanMessage:
    """A user turn with text first and then the images, in order."""
    if not images:
        return HumanMessage(content=text)
    return HumanMessage(content=[{"type": "text", "text": text}, *(image_block(png) for png in images)])


@dataclass(frozen=True)
class CallOutcome(Generic[AnswerT]):
    """What a model call settled: an accepted answer, or a flag with its reason."""

    answer: AnswerT | None
    flagged: bool
    reason: str | None
    attempts: int


@dataclass(frozen=True)
class CallRequest:
    """One logical question to a model.

    Attributes
    ----------
    node : str
        Graph node asking (``locate_regions``, ``caption_clips``...).
    item : str
        What the question is about (``frame=12 camera=cam3 region=paws``).
    prompt : Prompt
        The template the text came from (name and hash are logged).
    messages : list[BaseMessage]
        System and user turns, images included.
    """

    node: str
    item: str
    prompt: Prompt
    messages: list[BaseMessage]


class CallLog:
    """Append-only, thread-safe JSONL log of every model request and answer."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._seq = 0
        if self.path is not None and self.path.exists():
            self._seq = sum(1 for _ in self.path.open(encoding="utf-8"))

    def append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self._lock:
            self._seq += 1
            line = json.dumps({"seq": self._seq, **entry}, sort_keys=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")


# Images recur across requests (a camera's regions, retries, exemplars reused by later
# frames): their digests are kept, so a request is hashed without re-reading its images.
IMAGE_DIGESTS_CACHED = 256


@functools.lru_cache(maxsize=IMAGE_DIGESTS_CACHED)
def image_digest(url: str) -> str:
    """SHA-256 (hex) of an image block's data URL."""
    return hashlib.sha256(url.encode()).hexdigest()


def _content_for_hash(content: Any) -> Any:
    """Message content with each image's data URL replaced by its digest."""
    if not isinstance(content, list):
        return content
    return [{"type": "image_url", "image_sha256": image_digest(block["image_url"]["url"])}
            if isinstance(block, dict) and block.get("type") == "image_url" else block
            for block in content]


def _message_to_dict(message: BaseMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"type": message.type, "content": _content_for_hash(message.content)}
    if isinstance(message, AIMessage) and message.tool_calls:
        data["tool_calls"] = [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        data["tool_call_id"] = message.tool_call_id
    return data


def request_hash(model: str, messages: Sequence[BaseMessage], schema_name: str, tools: Sequence[str]) -> str:
    """SHA-256 of everything that determines a model's answer (images by their SHA-256)."""
    payload = {
        "model": model,
        "messages": [_message_to_dict(m) for m in messages],
        "schema": schema_name,
        "tools": list(tools),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _image_digests(messages: Sequence[BaseMessage]) -> list[str]:
    return [image_digest(block["image_url"]["url"])[:16]
            for message in messages if isinstance(message.content, list)
            for block in message.content if isinstance(block, dict) and block.get("type") == "image_url"]


def _schema_format(schema: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": _json_schema(schema), "strict": False},
    }


@functools.cache
def _json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, generated once per class (nothing downstream modifies it)."""
    return schema.model_json_schema()


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


class ModelClient:
    """Structured model calls with bounded retries, concurrency limit and a call log.

    Parameters
    ----------
    chat_model
        A langchain chat model (``ChatOpenAI`` or a fake one in tests).
    model_name
        Served model name (logged and hashed).
    structured
        ``json_schema`` (response_format) or ``function_calling`` (forced tool call).
    max_retries
        Retries after the first attempt, for transport errors and invalid answers alike.
    max_concurrency
        Calls in flight at once (a bounded semaphore shared by all threads).
    log
        Where requests and answers go.
    answer_source
        Replay: a function from request hash to the logged answer message; when
        set, no model is called for hashes it knows.
    retry_backoff_s
        Sleep before retry *n* is ``retry_backoff_s * n`` (transport errors only).
    server
        The server's URL, named by the error raised when it never answers.

    A server that has not answered once and leaves ``UNREACHABLE_CALLS``
    calls in a row without an answer (connection refused, timeouts, HTTP
    errors, a body that is no chat completion such as a proxy's login page)
    stops the run with an :class:`InputError` naming it, instead of flagging
    every frame or clip; a killed-off run continues with ``--resume``. Once
    it has answered, failures are flagged call by call as before.
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model_name: str,
        structured: Literal["json_schema", "function_calling"] = "json_schema",
        max_retries: int = 2,
        max_concurrency: int = 8,
        log: CallLog | None = None,
        answer_source: Callable[[str], AIMessage | ReplayedError | None] | None = None,
        retry_backoff_s: float = 0.5,
        server: str | None = None,
    ) -> None:
        self.chat_model = chat_model
        self.model_name = model_name
        self.structured = structured
        self.max_retries = max_retries
        self.log = log or CallLog(None)
        self.answer_source = answer_source
        self.retry_backoff_s = retry_backoff_s
        self._slots = threading.BoundedSemaphore(max(1, max_concurrency))
        self._count_lock = threading.Lock()
        self.calls_by_node: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.server = server
        self._answered = False
        self._unanswered_calls = 0

    # -- one HTTP round trip --------------------------------------------------
    def _invoke(self, messages: list[BaseMessage], bound: Any, digest: str) -> AIMessage:
        if self.answer_source is not None:
            replayed = self.answer_source(digest)
            if isinstance(replayed, ReplayedError):
                raise replayed
            if replayed is not None:
                return replayed
        with self._slots:
            with self._count_lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return bound.invoke(messages)
            finally:
                with self._count_lock:
                    self.in_flight -= 1

    def _bind(self, schema: type[BaseModel], tools: Sequence[BaseTool]) -> Any:
        if tools:
            return self.chat_model.bind_tools([*tools, schema], tool_choice="required")
        if self.structured == "function_calling":
            return self.chat_model.bind_tools([schema], tool_choice=schema.__name__)
        return self.chat_model.bind(response_format=_schema_format(schema))

    def _parse(self, message: AIMessage, schema: type[AnswerT]) -> tuple[AnswerT | None, str | None]:
        try:
            calls = [c for c in message.tool_calls if c["name"] == schema.__name__]
            if calls:
                return schema.model_validate(calls[0]["args"]), None
            if self.structured == "function_calling" or message.tool_calls:
                return None, "no_answer_tool_call"
            content = message.content if isinstance(message.content, str) else json.dumps(message.content)
            return schema.model_validate_json(_strip_fences(content)), None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "answer"
            kind = "invalid_json" if first.get("type") == "json_invalid" else "schema"
            return None, f"{kind}: {where}: {first.get('msg')}"

    # -- public API -----------------------------------------------------------
    def call(
        self,
        request: CallRequest,
        schema: type[AnswerT],
        *,
        validate: Validator | None = None,
        tools: Sequence[BaseTool] = (),
        max_tool_rounds: int = 4,
    ) -> CallOutcome[AnswerT]:
        """Ask for an answer of type ``schema``; never raises for model misbehaviour.

        With ``tools``, the model may call them (their results go back as tool
        messages, up to ``max_tool_rounds``) before it calls ``schema`` as its
        final answer. ``validate(answer)`` returns ``None`` when the answer is
        possible, else a short reason; impossible answers are retried like
        unparseable ones.
        """
        with self._count_lock:
            self.calls_by_node[request.node] = self.calls_by_node.get(request.node, 0) + 1
        bound = self._bind(schema, tools)
        tool_names = [t.name for t in tools]
        tools_by_name = {t.name: t for t in tools}
        messages = list(request.messages)
        reason: str | None = None
        attempts = 0
        tool_rounds = 0
        while attempts <= self.max_retries:
            attempts += 1
            digest = request_hash(self.model_name, messages, schema.__name__, tool_names)
            started = time.perf_counter()
            entry: dict[str, Any] = {
                "node": request.node,
                "item": request.item,
                "prompt": request.prompt.name,
                "prompt_file": str(request.prompt.path.name),
                "prompt_sha256": request.prompt.sha256,
                "request_sha256": digest,
                "model": self.model_name,
                "schema": schema.__name__,
                "attempt": attempts,
                "image_sha256": _image_digests(messages),
            }
            try:
                message = self._invoke(messages, bound, digest)
            except ReplayedError as exc:
                reason = exc.reason
                self.log.append({**entry, "latency_s": 0.0, "outcome": "transport_error" if exc.transport else "http_error", "error": reason})
                if exc.transport:
                    continue
                break
            except TRANSPORT_ERRORS as exc:
                reason = f"transport: {type(exc).__name__}"
                self.log.append({**entry, "latency_s": round(time.perf_counter() - started, 4), "outcome": "transport_error", "error": reason})
                time.sleep(self.retry_backoff_s * attempts)
                continue
            except openai.APIStatusError as exc:
                reason = f"http_{exc.status_code}"
                self.log.append({**entry, "latency_s": round(time.perf_counter() - started, 4), "outcome": "http_error", "error": reason})
                break
            except (AttributeError, TypeError, ValueError) as exc:
                # The SDK hands a body that is not JSON (a proxy or login page) on as text, which
                # langchain then fails to read as a chat completion.
                reason = f"malformed_response: {type(exc).__name__}"
                self.log.append({**entry, "latency_s": round(time.perf_counter() - started, 4), "outcome": "transport_error", "error": reason})
                continue
            with self._count_lock:
                self._answered, self._unanswered_calls = True, 0
            usage = message.usage_metadata or {}
            entry.update(
                latency_s=round(time.perf_counter() - started, 4),
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens"),
                answer={"content": message.content, "tool_calls": [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in message.tool_calls]},
            )
            tool_calls = [c for c in message.tool_calls if c["name"] in tools_by_name]
            if tool_calls and tool_rounds < max_tool_rounds:
                tool_rounds += 1
                attempts -= 1  # a tool round is a step of one attempt, not a retry
                self.log.append({**entry, "outcome": "tool_call"})
                messages.append(message)
                for call in tool_calls:
                    try:
                        result = tools_by_name[call["name"]].invoke(call["args"])
                    except (ValidationError, ValueError, KeyError) as exc:
                        result = f"error: {exc}"
                    messages.append(ToolMessage(content=str(result), tool_call_id=call.get("id") or call["name"]))
                continue
            answer, reason = self._parse(message, schema)
            if answer is not None and validate is not None:
                reason = validate(answer)
            self.log.append({**entry, "outcome": "accepted" if reason is None else "invalid", "error": reason})
            if reason is None:
                return CallOutcome(answer, False, None, attempts)
            messages = [*messages, message, HumanMessage(content=f"That answer is not usable ({reason}). Answer again, following the schema and the facts given.")]
            if message.tool_calls:
                messages[-2:-1] = [AIMessage(content=json.dumps([c["args"] for c in message.tool_calls]))]
        self._count_unanswered(reason)
        return CallOutcome(None, True, reason or "no_answer", attempts)

    def _count_unanswered(self, reason: str | None) -> None:
        """Stop the run where a server that never answered leaves ``UNREACHABLE_CALLS`` calls unanswered."""
        if self.answer_source is not None:
            return  # a replay re-reads the logged outcomes; it never reaches a server
        with self._count_lock:
            if self._answered:
                return
            self._unanswered_calls += 1
            if self._unanswered_calls < UNREACHABLE_CALLS:
                return
        raise InputError(self.server or "--base-url",
                         f"the model server gave no answer to {UNREACHABLE_CALLS} requests in a row "
                         f"(last: {reason}): is it running, and is --base-url its OpenAI-compatible "
                         "address (ending in /v1)?")
