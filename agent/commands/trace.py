"""``python -m agent.run trace RUN_DIR [--frame N] [--clip ID] [--node NAME]``.

Prints the node-by-node trace (node, item, inputs and outputs in brief, time)
and each model call (prompt file, token counts, latency, outcome, answer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.errors import InputError
from agent.rundir import RunDir
from agent.trace_log import read_jsonl


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by pose or behavior")
    parser.add_argument("--frame", type=int, help="only this frame (pose runs)")
    parser.add_argument("--clip", help="only this clip id (behavior runs)")
    parser.add_argument("--node", help="only this node")
    parser.add_argument("--limit", type=int, default=200, help="at most this many rows (default 200)")


def _matches(row: dict, args: argparse.Namespace) -> bool:
    if args.frame is not None and row.get("frame") != args.frame:
        return False
    if args.clip is not None and str(row.get("clip_id")) != args.clip:
        return False
    return args.node is None or row.get("node") == args.node


def _call_matches(call: dict, args: argparse.Namespace) -> bool:
    item = f" {call.get('item', '')} "
    if args.frame is not None and f" frame={args.frame} " not in item:
        return False
    if args.clip is not None and f" clip={args.clip} " not in item:
        return False
    return args.node is None or call.get("node") == args.node


def _check_filters(args: argparse.Namespace, kind: str | None, rows: list[dict], calls: list[dict]
                   ) -> None:
    """InputError for a filter this run cannot match: it would print an empty table."""
    if kind == "pose" and args.clip is not None:
        raise InputError("--clip", "this is a pose run: its trace has frames, not clips (use --frame N)")
    if kind == "behavior" and args.frame is not None:
        raise InputError("--frame", "this is a behavior run: its trace has clips, not frames "
                                    "(use --clip ID)")
    nodes = dict.fromkeys(row.get("node") for row in [*rows, *calls])
    if args.node is not None and nodes and args.node not in nodes:
        raise InputError("--node", f"{args.node!r} is not a node of this run's trace "
                                   f"({', '.join(str(node) for node in nodes)})")


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(Path(args.run_dir))
    meta = run_dir.read_meta()
    rows, calls = read_jsonl(run_dir.path / "trace.jsonl"), read_jsonl(run_dir.calls_log)
    _check_filters(args, meta.get("kind"), rows, calls)
    trace = [row for row in rows if _matches(row, args)]
    calls = [call for call in calls if _call_matches(call, args)]
    shown = min(len(trace), args.limit), min(len(calls), args.limit)
    print(f"{meta.get('kind')} run {run_dir.path}: {shown[0]} of {len(trace)} node executions and "
          f"{shown[1]} of {len(calls)} model calls shown (--limit {args.limit})")
    for row in trace[: args.limit]:
        where = " ".join(f"{k}={row[k]}" for k in ("frame", "camera", "region", "animal", "clip_id") if k in row)
        status = f" ERROR {row['error']}" if row.get("error") else ""
        print(f"{row.get('node', '?'):<22} {where:<34} {1000 * row.get('duration_s', 0):8.2f} ms{status}")
        print(f"    in : {row.get('input', '')}")
        print(f"    out: {row.get('output', '')}")
    for call in calls[: args.limit]:
        answer = json.dumps(call.get("answer"), sort_keys=True)
        print(f"call {call.get('seq')}: {call.get('node')} [{call.get('item')}] prompt {call.get('prompt_file')} "
              f"({str(call.get('prompt_sha256', ''))[:12]}) attempt {call.get('attempt')} {call.get('outcome')} "
              f"tokens {call.get('input_tokens')}/{call.get('output_tokens')} {call.get('latency_s')} s")
        print(f"    answer: {answer[:300]}" + (f"\n    error: {call['error']}" if call.get("error") else ""))
    return 0
