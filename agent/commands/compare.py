"""``python -m agent.run compare RUN_A RUN_B [--json] [--limit N]``: two runs side by side.

Shows, for two runs of one kind (pose or behavior):

* their configurations (the ``config`` of ``run.json``; only what differs)
  and the SHA-256 of each prompt file they sent (``run.json`` ``prompts``,
  else the call log);
* their metrics against ground truth, where their input has it (behavior:
  ``eval-behavior``'s scores; pose: ``eval``'s);
* where their results differ: behavior, per animal, the frame ranges whose
  label differs (from ``segments.csv``); pose, the frame and keypoint whose
  2D assignment (``keypoints_2d.csv`` centroid per camera) or QC flag
  (``qc.csv``) differs.

This is the loop for prompt experiments: run with ``--prompts DIR`` (or
replay a run ``--from`` a node with it), then compare. Nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agent.behavior_results import SEGMENTS_FILE, read_segments_csv
from agent.errors import InputError
from agent.replay import read_run_json
from agent.rundir import RunDir
from agent.trace_log import read_jsonl

POSE_METRICS = ("mean_error_mm", "median_error_mm", "share_within_5mm", "assignment_accuracy", "n_really_wrong",
                "n_flagged", "qc_precision", "qc_recall")
BEHAVIOR_METRICS = ("frame_accuracy", "macro_f1", "clip_boundary_recall", "segment_boundary_f1",
                    "segment_count_ratio", "coverage", "n_predicted_segments")
PROVENANCE = ("replay_of", "fork")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", type=Path, help="a finished run directory")
    parser.add_argument("run_b", type=Path, help="another run directory of the same kind")
    parser.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    parser.add_argument("--limit", type=int, default=20, help="differences shown as text (default 20)")


def run(args: argparse.Namespace) -> int:
    comparison = compare_runs(args.run_a, args.run_b)
    if not comparison["same_input"]:
        a, b = comparison["runs"]
        print(f"warning: the runs were made from different inputs ({a['input']} and {b['input']}): "
              "their frames and labels do not correspond", file=sys.stderr)
    if args.json:
        print(json.dumps(comparison, indent=2, sort_keys=True))
    else:
        print("\n".join(format_comparison(comparison, args.limit)))
    return 0


def compare_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """The comparison of two finished runs, JSON-ready.

    Raises
    ------
    InputError
        Either is not a finished run directory, or they are of different kinds.
    """
    runs = [_load(Path(run_a)), _load(Path(run_b))]
    kinds = [run["kind"] for run in runs]
    if kinds[0] != kinds[1]:
        raise InputError(run_b, f"is a {kinds[1]} run and {run_a} a {kinds[0]} run: compare runs of one kind")
    configs = [run["run_json"].get("config") or run["meta"].get("context") or {} for run in runs]
    prompts = [_prompt_hashes(run) for run in runs]
    score = _behavior_scores if kinds[0] == "behavior" else _pose_scores
    differ = _behavior_differences if kinds[0] == "behavior" else _pose_differences
    return {
        "kind": kinds[0],
        "runs": [{"path": str(run["path"]), "input": run["input"],
                  **{key: run["run_json"][key] for key in PROVENANCE if key in run["run_json"]}} for run in runs],
        "same_input": _same_input(*runs),
        "config": _side_by_side(configs[0], configs[1], only_differences=True),
        "prompts": _side_by_side(prompts[0], prompts[1], only_differences=False),
        "metrics": _side_by_side(*[score(run) for run in runs], only_differences=False),
        "differences": differ(runs[0]["path"], runs[1]["path"]),
    }


def _load(path: Path) -> dict[str, Any]:
    run_dir = RunDir(path)
    if not path.is_dir():
        raise InputError(path, "run directory not found")
    meta = run_dir.read_meta()
    if meta.get("kind") not in ("pose", "behavior"):
        raise InputError(run_dir.meta_file, "names no pose or behavior run (foreign or corrupt metadata)")
    run_json = read_run_json(run_dir)
    source = meta.get("session") if meta["kind"] == "behavior" else meta.get("recording")
    return {"path": path, "kind": meta["kind"], "meta": meta, "run_json": run_json, "input": source}


def _same_input(run_a: dict[str, Any], run_b: dict[str, Any]) -> bool:
    """Whether both runs were made from the same files: their input fingerprints where both keep
    one (a copy of the input with other modification times differs), else their input paths."""
    fingerprints = [run["meta"].get("input_fingerprint") for run in (run_a, run_b)]
    if None not in fingerprints:
        return fingerprints[0] == fingerprints[1]
    return Path(str(run_a["input"])).resolve() == Path(str(run_b["input"])).resolve()


def _side_by_side(a: dict[str, Any], b: dict[str, Any], *, only_differences: bool) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys([*a, *b]))
    return {key: [a.get(key), b.get(key)] for key in keys if not only_differences or a.get(key) != b.get(key)}


def _prompt_hashes(run: dict[str, Any]) -> dict[str, str]:
    """Prompt name -> SHA-256, from run.json, else from the calls the run logged."""
    recorded = run["run_json"].get("prompts")
    if isinstance(recorded, dict):
        return dict(recorded)
    calls = read_jsonl(RunDir(run["path"]).calls_log)
    return {call["prompt"]: call["prompt_sha256"] for call in calls if "prompt" in call and "prompt_sha256" in call}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _behavior_scores(run: dict[str, Any]) -> dict[str, Any]:
    from agent.commands.eval_behavior import score_results

    if run["input"] is None or not (Path(run["input"]) / "ground_truth.csv").is_file():
        return {}
    metrics = dataclasses.asdict(score_results(Path(run["input"]), run["path"]))
    return {key: _finite(metrics[key]) for key in BEHAVIOR_METRICS}


def _pose_scores(run: dict[str, Any]) -> dict[str, Any]:
    from agent.commands.eval_pose import score_results
    from agent.recording import load_recording

    if run["input"] is None or not (Path(run["input"]) / "ground_truth.csv").is_file():
        return {}
    recording = load_recording(run["input"])
    try:
        metrics = dataclasses.asdict(score_results(recording, run["path"]))
    finally:
        recording.close()
    return {key: _finite(metrics[key]) for key in POSE_METRICS}


# -- where the results differ ------------------------------------------------------


def _frame_labels(segments: list[tuple[int, int, str]], n_frames: int) -> np.ndarray:
    """Label of every frame ``(n_frames,)``; ``""`` where no segment covers it."""
    labels = np.full(n_frames, "", dtype=object)
    for start, end, label in segments:
        labels[start:end] = label
    return labels


def _behavior_differences(dir_a: Path, dir_b: Path) -> dict[str, Any]:
    """Per animal: frames whose label differs, as ranges ``[start, end, label_a, label_b]``."""
    tables = [read_segments_csv(directory / SEGMENTS_FILE) for directory in (dir_a, dir_b)]
    animals = list(dict.fromkeys(s.animal for table in tables for s in table))
    result = {}
    for animal in animals:
        spans = [[(s.start_frame, s.end_frame, s.label) for s in table if s.animal == animal] for table in tables]
        n_frames = max(end for span in spans for _start, end, _label in span)
        a, b = (_frame_labels(span, n_frames) for span in spans)
        differs = a != b
        # a new range starts where the (label_a, label_b) pair changes
        change = np.flatnonzero((a[1:] != a[:-1]) | (b[1:] != b[:-1])) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [n_frames]])
        ranges = [[int(s), int(e), a[s], b[s]] for s, e in zip(starts, ends, strict=True) if differs[s]]
        result[animal] = {"n_frames": n_frames, "frames_differing": int(differs.sum()), "ranges": ranges}
    return {"animals": result}


def _pose_differences(dir_a: Path, dir_b: Path) -> dict[str, Any]:
    """Frame and keypoint pairs whose 2D assignment (any camera) or QC flag differs."""
    from agent.pose_results import read_csv_table

    key_2d, key_qc = ["frame", "camera", "keypoint"], ["frame", "keypoint"]
    assigned = [read_csv_table(d / "keypoints_2d.csv", [*key_2d, "centroid"])[[*key_2d, "centroid"]]
                for d in (dir_a, dir_b)]
    qc = [read_csv_table(d / "qc.csv", [*key_qc, "flagged", "reason"])[[*key_qc, "flagged", "reason"]]
          for d in (dir_a, dir_b)]
    views = assigned[0].merge(assigned[1], on=key_2d, how="outer", suffixes=("_a", "_b")).fillna("")
    views = views[views["centroid_a"] != views["centroid_b"]]
    flags = qc[0].merge(qc[1], on=key_qc, how="outer", suffixes=("_a", "_b")).fillna("")
    flags = flags[flags["flagged_a"] != flags["flagged_b"]]
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for view in views.itertuples(index=False):
        row = rows.setdefault((int(view.frame), view.keypoint), {"assignment": {}})
        row["assignment"][view.camera] = [_centroid(view.centroid_a), _centroid(view.centroid_b)]
    for flag in flags.itertuples(index=False):
        row = rows.setdefault((int(flag.frame), flag.keypoint), {"assignment": {}})
        row["flagged"] = [_centroid(flag.flagged_a), _centroid(flag.flagged_b)]
        row["reason"] = [flag.reason_a, flag.reason_b]
    ordered = sorted(rows.items(), key=lambda item: (item[0][0], item[0][1]))
    keypoint_frames = [{"frame": frame, "keypoint": keypoint, **row} for (frame, keypoint), row in ordered]
    return {"n_frames_differing": len({frame for frame, _keypoint in rows}),
            "n_keypoint_frames_differing": len(rows), "keypoint_frames": keypoint_frames}


def _centroid(cell: str) -> int | None:
    return None if cell == "" else int(float(cell))


# -- text --------------------------------------------------------------------------


def format_comparison(comparison: dict[str, Any], limit: int) -> list[str]:
    """The comparison as aligned text, at most ``limit`` difference rows."""
    a, b = comparison["runs"]
    lines = [f"{comparison['kind']} runs", f"  A: {a['path']}  (input {a['input']})",
             f"  B: {b['path']}  (input {b['input']})", "", "configuration (what differs):"]
    lines += [f"  {key:24s} {_show(pair[0])}  ->  {_show(pair[1])}" for key, pair in comparison["config"].items()]
    lines += ["  (identical)"] if not comparison["config"] else []
    lines += ["", "prompts (sha256):"]
    lines += [f"  {name:32s} {_short(pair[0])}  {_short(pair[1])}  {_verdict(*pair)}"
              for name, pair in comparison["prompts"].items()] or ["  (no model prompts)"]
    lines += ["", "metrics against ground truth:" + ("" if comparison["metrics"] else " n/a (no ground truth)")]
    lines += [f"  {key:24s} {_show(pair[0]):>10}  {_show(pair[1]):>10}" for key, pair in comparison["metrics"].items()]
    lines += ["", *_format_differences(comparison, limit)]
    return lines


def _format_differences(comparison: dict[str, Any], limit: int) -> list[str]:
    differences = comparison["differences"]
    if comparison["kind"] == "behavior":
        lines = ["segments: frames whose label differs (A -> B)"]
        for animal, diff in differences["animals"].items():
            lines.append(f"  {animal}: {diff['frames_differing']} of {diff['n_frames']} frames")
            lines += [f"    frames {start}-{end}: {label_a or '-'} -> {label_b or '-'}"
                      for start, end, label_a, label_b in diff["ranges"][:limit]]
            lines += [f"    ... {len(diff['ranges']) - limit} more"] if len(diff["ranges"]) > limit else []
        return lines
    rows = differences["keypoint_frames"]
    lines = [f"frames: {differences['n_frames_differing']} frames, {differences['n_keypoint_frames_differing']} "
             "keypoint-frames whose 2D assignment or QC flag differ (A -> B)"]
    for row in rows[:limit]:
        views = ", ".join(f"{camera} centroid {_or_none(pair[0])} -> {_or_none(pair[1])}"
                          for camera, pair in row["assignment"].items())
        flag = "" if "flagged" not in row else \
            f"; flagged {row['flagged'][0]} -> {row['flagged'][1]} ({row['reason'][0] or 'ok'} -> {row['reason'][1] or 'ok'})"
        lines.append(f"  frame {row['frame']} {row['keypoint']}: {views or 'same assignment'}{flag}")
    lines += [f"  ... {len(rows) - limit} more"] if len(rows) > limit else []
    return lines


def _show(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _or_none(centroid: int | None) -> str:
    return "none" if centroid is None else str(centroid)


def _verdict(a: str | None, b: str | None) -> str:
    if a is None or b is None:
        return "only A" if b is None else "only B"
    return "same" if a == b else "DIFFERENT"


def _short(digest: str | None) -> str:
    return "-" * 12 if digest is None else digest[:12]
