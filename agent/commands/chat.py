"""``python -m agent.run chat RESULTS_DIR [--ask "..."]``: questions about finished results.

With a model (``--base-url`` and ``--model``, OpenAI-compatible) a LangGraph
tool-calling agent answers through read-only tools. Without one, the same tools
are slash commands that print tables, so the chat is useful offline.
"""

from __future__ import annotations

import argparse
import re
import sys

from agent.chat_tools import ResultsView
from agent.config import CommonContext, resolve_context
from agent.errors import InputError
from agent.prompts import load_prompt

HELP = {
    "behavior": [
        ("/segments [ANIMAL] [LABEL] [START-END]", "list segments, e.g. /segments mouse2 chase 10-60"),
        ("/stats [ANIMAL]", "time budget, bout counts and bout durations per label"),
        ("/transitions [ANIMAL]", "label-to-label transition counts"),
        ("/cooccur", "social behaviors of two animals at the same time"),
        ("/segment ID", "one segment's description, source clips and clip file"),
    ],
    "pose": [
        ("/flagged [KEYPOINT] [REASON]", "labels flagged for review"),
        ("/errors", "per-keypoint reprojection error statistics"),
    ],
}
_RANGE = re.compile(r"^(\d+(?:\.\d*)?)?-(\d+(?:\.\d*)?)?$")


class Refusal(Exception):
    """A command or question chat cannot answer; the message says why and what it can answer.

    The interactive chat prints it and goes on; ``--ask`` exits with code 2,
    so a script never takes a refusal for an answer.
    """


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="a finished behavior or pose results directory")
    parser.add_argument("--ask", help="answer one question (or /command) and exit")
    parser.add_argument("--base-url", dest="base_url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", dest="llm_model", help="served model name")
    parser.add_argument("--prompts", dest="prompts_dir", help="folder replacing prompts/")


def help_text(kind: str) -> str:
    lines = [f"  {usage:<42} {text}" for usage, text in HELP[kind]]
    lines += ["  /help                                      this list", "  /quit                                      leave"]
    return "commands:\n" + "\n".join(lines)


def run_command(view: ResultsView, line: str) -> str:
    """Run one slash command and return its printed table; :class:`Refusal` where it cannot answer."""
    name, *words = line.strip().split()
    if name == "/help":
        return help_text(view.kind)
    try:
        if view.kind == "behavior":
            animals = set(view.segments["animal"].astype(str))
            labels = set(view.segments["label"].astype(str))
            if name == "/segments":
                animal, label, span = _segment_words(words, animals, labels)
                start, end = (None, None) if span is None else (float(span[1]) if span[1] else None, float(span[2]) if span[2] else None)
                return view.list_segments(animal, label, start, end)
            if name in ("/stats", "/transitions"):
                if len(words) > 1:
                    raise ValueError(f"{name} takes one animal at most, got {' '.join(words)!r}")
                animal = words[0] if words else None
                return view.time_budget(animal) if name == "/stats" else view.transitions(animal)
            if name == "/cooccur":
                if words:
                    raise ValueError(f"/cooccur takes no words, got {' '.join(words)!r}")
                return view.co_occurrence()
            if name == "/segment" and words:
                return view.segment_detail(words[0])
        else:
            if name == "/flagged":
                keypoints = set(view.qc["keypoint"].astype(str))
                keypoint = next((w for w in words if w in keypoints), None)
                others = [w for w in words if w not in keypoints]
                if len(others) > 1:
                    raise ValueError(f"one reason at most, got {' '.join(others)!r}")
                reasons = set(view.qc["reason"].astype(str))
                if others and others[0] not in reasons:
                    # A word that is neither: it may be a mistyped keypoint as well as a reason.
                    raise ValueError(f"{others[0]!r} is neither a keypoint nor a reason of this run; "
                                     f"its keypoints: {', '.join(sorted(keypoints))}; "
                                     f"its reasons: {', '.join(sorted(reasons - {''})) or 'none'}")
                return view.flagged_labels(keypoint, others[0] if others else None)
            if name == "/errors":
                return view.keypoint_errors()
    except ValueError as exc:
        raise Refusal(f"cannot answer: {exc}") from None
    raise Refusal(f"unknown or incomplete command {line.strip()!r}\n" + help_text(view.kind))


def _segment_words(words: list[str], animals: set[str],
                   labels: set[str]) -> tuple[str | None, str | None, re.Match | None]:
    """The animal, label and START-END range of ``/segments``; a word that is none of them is refused
    (dropping it would answer for every animal or label)."""
    found: dict[str, str | re.Match | None] = {"animal": None, "label": None, "range": None}
    for word in words:
        span = _RANGE.match(word)
        kind = ("animal" if word in animals and found["animal"] is None else
                "label" if word in labels else "range" if span and word != "-" else None)
        if kind is None:
            raise ValueError(f"{word!r} is not an animal, a label or a START-END range of this run; "
                             f"animals: {', '.join(sorted(animals))}; labels: {', '.join(sorted(labels))}")
        if found[kind] is not None:
            raise ValueError(f"/segments takes one {kind} at most; {word!r} is a second")
        found[kind] = span if kind == "range" else word
    return found["animal"], found["label"], found["range"]


def _summary(view: ResultsView) -> str:
    if view.kind == "behavior":
        seg = view.segments
        return (f"{len(seg)} segments of animals {', '.join(sorted(set(seg['animal'].astype(str))))}; "
                f"labels {', '.join(sorted(set(seg['label'].astype(str))))}; {seg['end_s'].max():.1f} s in all")
    qc = view.qc
    return f"{qc['frame'].nunique()} frames, keypoints {', '.join(dict.fromkeys(qc['keypoint'].astype(str)))}"


class _ModelChat:
    def __init__(self, view: ResultsView, ctx: CommonContext) -> None:
        from agent.llm import load_chat_model
        from graphs.chat import ChatContext, build_chat_graph

        model = load_chat_model(base_url=ctx.base_url, model=ctx.llm_model, timeout_s=ctx.request_timeout_s, disable_thinking=ctx.disable_thinking)
        prompt = load_prompt("chat/answer_question", ctx.prompts_dir)
        self.context = ChatContext(system_prompt=prompt.render(kind=view.kind, summary=_summary(view)))
        self.graph = build_chat_graph(model, view.tools())
        self.history: list = []

    def ask(self, question: str) -> str:
        from langchain_core.messages import HumanMessage

        from graphs.chat import final_answer

        state = self.graph.invoke({"messages": [*self.history, HumanMessage(content=question)], "tool_rounds": 0}, context=self.context)
        self.history = state["messages"]
        return final_answer(state)


def answer(view: ResultsView, chat: _ModelChat | None, line: str) -> str:
    if line.strip().startswith("/"):
        return run_command(view, line)
    if chat is None:
        raise Refusal("no model configured (pass --base-url and --model); offline you can use the commands:\n"
                      + help_text(view.kind))
    return chat.ask(line)


def run(args: argparse.Namespace) -> int:
    view = ResultsView.open(args.results)
    ctx = resolve_context(CommonContext, {"base_url": args.base_url, "llm_model": args.llm_model, "prompts_dir": args.prompts_dir})
    chat = _ModelChat(view, ctx) if ctx.base_url and ctx.llm_model else None
    if args.ask is not None:
        try:
            print(answer(view, chat, args.ask))
        except Refusal as refusal:
            raise InputError("--ask", str(refusal)) from None
        return 0
    print(f"{view.kind} results in {view.root}: {_summary(view)}\n" + help_text(view.kind))
    while True:
        try:
            line = input("> ")
        except EOFError:
            return 0
        if line.strip() in {"/quit", "/exit"}:
            return 0
        if line.strip():
            try:
                text = answer(view, chat, line)
            except Refusal as refusal:
                text = str(refusal)
            print(text, flush=True)
            sys.stdout.flush()
