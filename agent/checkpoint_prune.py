"""Keep a pose run's checkpoint database to a few rows per frame.

LangGraph's SQLite saver keeps every superstep's checkpoint, and a tracked
frame takes a dozen supersteps (more with retries, and a subgraph per camera
with a model backend): ~150 KB per frame, gigabytes for a long recording.
A finished frame needs only two of them: the one its tracking starts from
(``next`` = ``detect_centroids``; a fork starts there, ``replay --from``)
and the one its ``accept_frame`` step ran from (the fork's parent); the
newest checkpoint, which a resume continues from, is never touched.

Frames are told apart without reading a checkpoint: ``accept_frame`` is the
only step that writes the ``frame`` channel (besides the run's input), so
the checkpoints holding a ``frame`` write are the accept checkpoints. From
each new one the pruner walks its parents back to the frame's start (the
child of the previous accept checkpoint, or a checkpoint the loop did not
write, such as a fork's update) and deletes what lies between, with its
pending writes and the checkpoints of the subgraph tasks it ran; the accept
checkpoint's parent becomes the frame's start, so the history stays one
chain (``agent.replay.lineage`` walks it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

FRAME_CHANNEL = "frame"


class CheckpointPruner:
    """Prunes the finished frames of one thread; call :meth:`prune` after each accepted frame.

    ``cursor`` is the saver's cursor factory (``SqliteSaver.cursor``): it
    holds the saver's lock and commits, so pruning never interleaves with a
    checkpoint being written.
    """

    def __init__(self, cursor: Callable[[], AbstractContextManager[sqlite3.Cursor]],
                 thread_id: str) -> None:
        self.cursor = cursor
        self.thread_id = thread_id
        self._accepts: set[str] = set()
        self._newest = ""  # newest accept checkpoint handled

    def prune(self) -> int:
        """Delete the intermediate checkpoints of frames accepted since the last call; how many went."""
        removed = 0
        with self.cursor() as cur:
            new = [row[0] for row in cur.execute(
                "SELECT DISTINCT checkpoint_id FROM writes WHERE thread_id = ? AND checkpoint_ns = '' "
                "AND channel = ? AND checkpoint_id > ? ORDER BY checkpoint_id",
                (self.thread_id, FRAME_CHANNEL, self._newest))]
            self._accepts.update(new)
            for accept in new:
                removed += self._prune_frame(cur, accept)
            if new:
                self._newest = new[-1]
        return removed

    def _parent_and_source(self, cur: sqlite3.Cursor, checkpoint: str) -> tuple[str | None, str]:
        row = cur.execute("SELECT parent_checkpoint_id, metadata FROM checkpoints WHERE thread_id = ? "
                          "AND checkpoint_ns = '' AND checkpoint_id = ?",
                          (self.thread_id, checkpoint)).fetchone()
        if row is None:
            return None, ""
        metadata = json.loads(row[1]) if row[1] else {}
        return row[0], str(metadata.get("source", ""))

    def _prune_frame(self, cur: sqlite3.Cursor, accept: str) -> int:
        """Delete the checkpoints between ``accept`` and its frame's start; how many went."""
        doomed: list[str] = []
        start, _ = self._parent_and_source(cur, accept)
        while start is not None and start not in self._accepts:
            parent, source = self._parent_and_source(cur, start)
            if source != "loop" or parent is None or parent in self._accepts:
                break  # the frame's start (or a checkpoint the loop did not write): kept
            doomed.append(start)
            start = parent
        if start is None or start in self._accepts or not doomed:
            return 0
        marks = ",".join("?" * len(doomed))
        tasks = {row[0] for row in cur.execute(
            f"SELECT DISTINCT task_id FROM writes WHERE thread_id = ? AND checkpoint_ns = '' "
            f"AND checkpoint_id IN ({marks})", (self.thread_id, *doomed))}
        # A subgraph task's checkpoints live in the namespace "NODE:TASK_ID".
        namespaces = [ns for (ns,) in cur.execute(
            "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = ? AND checkpoint_ns > ''",
            (self.thread_id,)) if ns.rpartition(":")[2] in tasks]
        for table in ("writes", "checkpoints"):
            cur.execute(f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = '' "
                        f"AND checkpoint_id IN ({marks})", (self.thread_id, *doomed))
            for namespace in namespaces:
                cur.execute(f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ?",
                            (self.thread_id, namespace))
        cur.execute("UPDATE checkpoints SET parent_checkpoint_id = ? WHERE thread_id = ? "
                    "AND checkpoint_ns = '' AND checkpoint_id = ?", (start, self.thread_id, accept))
        return len(doomed)
