"""Benchmark the model path of the pose pipeline: calls per frame, our overhead, concurrency.

Usage::

    .venv/bin/python bench/bench_model_path.py [--frames 100] [--latency-ms 200]
        [--concurrency 8] [--backends openai hybrid] [--guard-frames 30]
        [--work /tmp/bench-model-path] [--report bench/results/model-path.md]

No model runs here. The real client (``ChatOpenAI`` through
:class:`agent.llm.ModelClient`, built by
:func:`agent.backends.factory_pose.make_pose_backend`) talks to the scripted
local OpenAI-compatible server (``tests/fixtures/openai_server.py``), which
answers every request after a fixed latency as a model that trusts the
motion prediction would (``tests/fixtures/scripted_pose_model.py``, oracle).
For each backend it reports:

* model calls per tracked frame, per stage (the paper's design makes
  6 cameras x (4 + 4 + 1) = 54 for a first try);
* the orchestrator's own share of wall time: the time with no request in
  flight at the server, i.e. the model sat idle waiting for us (images,
  graph, Stage 4, centroids, checkpoints, and stages run one after another);
* achieved concurrency: the most requests in flight, and the mean number in
  flight while any is, against what the frame-to-frame dependency allows.

The guard section runs a *nonsense* model (schema-valid random boxes and
centroid numbers) with no latency through ``hybrid`` and ``openai`` on the
first ``--guard-frames`` frames and scores them against ``classical`` with
``eval`` (tools.pose_metrics).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.backends import factory_pose  # noqa: E402
from agent.commands.eval_pose import score_results  # noqa: E402
from agent.pose_context import PoseContext  # noqa: E402
from agent.pose_pipeline import run_pose  # noqa: E402
from agent.recording import load_recording  # noqa: E402
from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording  # noqa: E402
from tests.fixtures.fake_chat import ScriptedChatModel  # noqa: E402
from tests.fixtures.openai_server import Reply, ScriptedOpenAIServer  # noqa: E402
from tests.fixtures.scripted_pose_model import pose_chat_script, pose_responder  # noqa: E402

PAPER_CALLS_PER_FRAME = 6 * (4 + 4 + 1)


class TimedResponder:
    """Oracle answers after ``latency_s``; records each request's [start, end) on the server."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.answer = pose_responder("oracle")
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> Reply:
        start = time.perf_counter()
        reply = self.answer(body)
        with self._lock:
            self.intervals.append((start, start + self.latency_s))
        return Reply(content=reply.content, tool_calls=reply.tool_calls, delay_s=self.latency_s)

    def busy_seconds(self) -> float:
        """Length of the union of the request intervals (time with at least one in flight)."""
        busy, end = 0.0, float("-inf")
        for start, stop in sorted(self.intervals):
            busy += max(0.0, stop - max(start, end))
            end = max(end, stop)
        return busy


def recording_dir(work: Path, frames: int) -> Path:
    path = work / f"rec-{frames}f-6cam"
    if not (path / "recording.toml").is_file():
        synthesize_pose_recording(path, SynthPoseOptions(frames=frames, cameras=6, seed=0, overwrite=True))
    return path


def run_backend(rec: Path, out: Path, ctx: PoseContext, chat_model=None) -> tuple[object, object, float]:
    """Run the pipeline with the factory's backend; returns (summary, backend, wall seconds)."""
    recording = load_recording(rec)
    if chat_model is not None:
        factory_pose.load_chat_model = lambda **kwargs: chat_model
    out.mkdir(parents=True, exist_ok=True)
    backend = factory_pose.make_pose_backend(ctx, recording, out)
    started = time.perf_counter()
    summary = run_pose(rec, out, ctx, overwrite=True, quiet=True, backend=backend)
    return summary, backend, time.perf_counter() - started


def timed_rows(rec: Path, work: Path, args: argparse.Namespace, n_seeds: int) -> list[str]:
    rows = []
    for name in args.backends:
        responder = TimedResponder(args.latency_ms / 1000)
        with ScriptedOpenAIServer(responder) as server:
            ctx = PoseContext(backend=name, base_url=server.base_url, vlm_model="scripted",
                              max_concurrency=args.concurrency, max_frames=args.frames)
            summary, backend, wall = run_backend(rec, work / f"out-{name}", ctx)
        stats = backend.stats() if hasattr(backend, "stats") else {"model_calls": {}, "model_calls_total": 0}
        tracked = summary.n_frames - n_seeds
        per_stage = ", ".join(f"{node.split('_')[0]} {count / tracked:.1f}"
                              for node, count in stats["model_calls"].items())
        busy = responder.busy_seconds()
        mean_in_flight = len(responder.intervals) * responder.latency_s / busy if busy else 0.0
        rows.append(f"| {name} | {tracked} | {wall:.1f} | {stats['model_calls_total'] / tracked:.1f} "
                    f"({per_stage}) | {len(server.requests) / tracked:.1f} | {100 * (1 - busy / wall):.1f} % "
                    f"| {server.max_in_flight} | {mean_in_flight:.1f} |".replace(" ()", ""))
        print(rows[-1], flush=True)
    return rows


def guard_rows(rec: Path, work: Path, frames: int) -> list[str]:
    recording = load_recording(rec)
    rows = []
    for name, mode in (("classical", None), ("hybrid", "nonsense"), ("openai", "nonsense")):
        ctx = PoseContext(backend=name, base_url="http://unused/v1", vlm_model="scripted", max_frames=frames)
        chat = None if mode is None else ScriptedChatModel(script=pose_chat_script(mode, seed=0))
        out = work / f"guard-{name}"
        run_backend(rec, out, ctx, chat)
        metrics = score_results(recording, out)
        rows.append(f"| {name}{' + nonsense model' if mode else ''} | {metrics.mean_error_mm:.3f} | "
                    f"{100 * metrics.share_within_5mm:.1f} % | {100 * metrics.assignment_accuracy:.1f} % | "
                    f"{metrics.n_really_wrong} | {metrics.n_flagged} | {metrics.qc_precision:.2f} | "
                    f"{metrics.qc_recall:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", nargs="*", default=["openai", "hybrid"])
    parser.add_argument("--guard-frames", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-model-path"))
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    rec = recording_dir(args.work, args.frames)
    n_seeds = len(load_recording(rec).seeds.frames)
    header = ["| backend | tracked frames | wall s | model calls / frame (per stage) | HTTP requests / frame "
              "| orchestrator share (no call in flight) | max in flight | mean in flight while busy |",
              "|---|---|---|---|---|---|---|---|"]
    rows = timed_rows(rec, args.work, args, n_seeds)
    guard = ["| backend | mean 3D error mm | within 5 mm | 2D accuracy | really wrong | flagged "
             "| QC precision | QC recall |", "|---|---|---|---|---|---|---|---|"]
    guard += guard_rows(rec, args.work, args.guard_frames) if args.guard_frames else []
    table = "\n".join([*header, *rows, "", *guard]) + "\n"
    print(table)
    if args.report is not None:
        args.report.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
