"""Node-by-node trace of a graph run, recorded from LangGraph's ``tasks`` stream.

Runners stream with ``stream_mode=[..., "tasks"]`` and hand each ``tasks``
chunk to :meth:`TraceRecorder.on_task_event`; one JSON line per finished task
goes to ``trace.jsonl`` in the run directory: node, the item it worked on
(frame, camera, region, clip, animal when its input names them), inputs and
outputs in brief, duration and error. ``python -m agent.run trace`` prints it
together with the model calls of ``calls.jsonl``. Timings make this file a
debugging record, not a result: it is not part of byte-identical outputs.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

ITEM_KEYS = ("frame", "camera", "region", "animal", "clip_id")
BRIEF_CHARS = 160


def brief(value: Any, limit: int = BRIEF_CHARS) -> str:
    """A one-line, length-bounded rendering of a node's input or output."""
    text = _fields(value, limit) if isinstance(value, dict) else _short(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields(value: dict, limit: int) -> str:
    """``key=value, ...`` of ``value``'s items, rendered only until the text passes ``limit``.

    A pose task's input is the whole graph state (~25 channels) and its
    brief keeps the first ~160 characters; the fields past them would be cut
    anyway, and rendering them cost a trace line ~10 us.
    """
    parts, length = [], -2  # no separator before the first field
    for key, val in value.items():
        part = f"{key}={_short(val)}"
        parts.append(part)
        length += len(part) + 2
        if length > limit:
            break
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} items]" if len(value) > 4 else repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(list(value)[:6]) + ("..." if len(value) > 6 else "") + "}"
    return repr(value)


def item_of(task_input: Any) -> dict[str, Any]:
    """The frame/camera/region/clip/animal a task's input names, if any."""
    if not isinstance(task_input, dict):
        return {}
    return {key: task_input[key] for key in ITEM_KEYS if isinstance(task_input.get(key), (int, str))}


class TraceRecorder:
    """Collects ``tasks`` stream events and appends finished tasks to ``trace.jsonl``.

    Parameters
    ----------
    path : str or Path or None
        The trace file (None: record nothing).
    flush_after : tuple of str
        Nodes whose finish writes the lines collected so far, in order; the
        lines of other tasks wait in memory until then (or :meth:`close`).
        Empty (the default): every line is written when its task finishes.
    """

    def __init__(self, path: str | Path | None, flush_after: tuple[str, ...] = ()) -> None:
        self.path = None if path is None else Path(path)
        self.flush_after = frozenset(flush_after)
        self._started: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._handle: Any = None  # opened on the first write

    def on_task_event(self, event: dict[str, Any]) -> None:
        if self.path is None:
            return
        task_id = event.get("id")
        if "input" in event:
            self._started[task_id] = (time.perf_counter(), brief(event["input"]), item_of(event["input"]))
            return
        started, inputs, item = self._started.pop(task_id, (time.perf_counter(), "", {}))
        record = {
            "node": event.get("name"),
            **item,
            "input": inputs,
            "output": brief(event.get("result")),
            "error": None if event.get("error") is None else str(event["error"])[:BRIEF_CHARS],
            "duration_s": round(time.perf_counter() - started, 5),
        }
        if isinstance(event.get("result"), dict):
            record.update({k: v for k, v in item_of(event["result"]).items() if k not in record})
        with self._lock:
            self._pending.append(json.dumps(record, sort_keys=True, default=str) + "\n")
            if not self.flush_after or record["node"] in self.flush_after:
                self._write_pending()

    def _write_pending(self) -> None:
        """Write the collected lines with one call (the caller holds the lock)."""
        if not self._pending:
            return
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write("".join(self._pending))
        self._handle.flush()
        self._pending = []

    def close(self) -> None:
        """Write the lines still collected and close the file (a later record reopens it)."""
        with self._lock:
            if self.path is not None:
                self._write_pending()
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self._handle.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a corrupt line is reported by number."""
    from agent.errors import InputError

    rows = []
    if not path.is_file():
        return rows
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(path, f"line {number} is not valid JSON") from None
    return rows
