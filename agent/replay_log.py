"""Serve model answers from a run's ``calls.jsonl``, keyed by request hash.

Replaying a LangGraph run re-executes every node, model calls included; this
is what makes that deterministic without a server: each request's hash is
looked up in the original log and the logged answer (or error) is returned,
in the order the original run met them.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path

from langchain_core.messages import AIMessage

from agent.errors import InputError
from agent.llm import ReplayedError


class ReplayLog:
    """Answers of a finished run, by request hash, in original order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, list[dict]] = defaultdict(list)
        self._served: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        if not self.path.is_file():
            return
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(self.path, f"line {number} is not JSON: the call log is corrupt") from None
            if "request_sha256" in entry:
                self._entries[entry["request_sha256"]].append(entry)
        for entries in self._entries.values():
            entries.sort(key=lambda e: e.get("seq", 0))

    def __call__(self, digest: str) -> AIMessage | ReplayedError | None:
        """The next logged answer for ``digest``, or ``None`` if the log has none left."""
        with self._lock:
            entries = self._entries.get(digest, [])
            index = self._served[digest]
            if index >= len(entries):
                return None
            self._served[digest] += 1
        entry = entries[index]
        if entry.get("outcome") in ("transport_error", "http_error"):
            return ReplayedError(entry.get("error") or "transport", entry["outcome"] == "transport_error")
        answer = entry.get("answer") or {}
        tool_calls = [
            {"name": c["name"], "args": c["args"], "id": c.get("id") or f"call_{i}", "type": "tool_call"}
            for i, c in enumerate(answer.get("tool_calls") or [])
        ]
        return AIMessage(content=answer.get("content") or "", tool_calls=tool_calls)
